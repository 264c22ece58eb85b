package azurekv_test

import (
	"context"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// fakeVault is an HTTPS server that speaks the part of the Key Vault REST
// API (2025-07-01) the azurekv provider uses: GET /keys/{name}[/{version}],
// POST /keys/{name}[/{version}]/wrapkey and /unwrapkey, with base64url
// (no padding) values, Key Vault's error bodies, and its bearer challenge:
// a request without a token gets 401 with
//
//	WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"
//
// (resource https://managedhsm.azure.net for *.managedhsm.azure.net hosts),
// and a request with any other token than fakeToken gets 401 as well.
//
// Vault keys are RSA-2048 with RSA-OAEP-256 (crypto/rsa, SHA-256); Managed
// HSM keys are oct-HSM AES-256 with A256KW (RFC 3394, hand-written below).
// As the real service, wrapkey with a disabled RSA key succeeds (it is a
// public-key operation) and unwrapkey answers 403 Forbidden/KeyDisabled;
// both answer 403 for a disabled oct-HSM key.
//
// The real azkeys client reaches it with the real vault host name in its
// URLs: the test transport dials the fake whatever the host, and trusts
// the fake's self-signed certificate for *.vault.azure.net and
// *.managedhsm.azure.net.
type fakeVault struct {
	srv    *httptest.Server
	tr     *http.Transport
	cred   *tokenCred
	tenant string

	mu         sync.Mutex // guards the fields below
	keys       map[string]*fakeKey
	seq        int
	challenges int // 401s sent for a request without a token
	requests   map[string]int
}

type fakeKey struct {
	kty       string // "RSA" or "oct-HSM"
	versions  []*fakeVersion
	deleted   bool
	failing   bool // 503
	throttled bool // 429 with Retry-After
	forbidden bool // 403 ForbiddenByRbac: the role assignment removed
}

type fakeVersion struct {
	id      string
	rsa     *rsa.PrivateKey
	aes     []byte
	enabled bool
}

const (
	fakeToken  = "fake-bearer-token-7d1f0c2b9e"
	fakeTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

// rsaPool holds a few RSA keys made once: generating RSA-2048 for each of
// the suite's keys would make the tests slow under -race. Keys take them
// in turn, so a rotated key gets other key material.
var rsaPool = sync.OnceValue(func() []*rsa.PrivateKey {
	var keys []*rsa.PrivateKey
	for range 3 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys = append(keys, k)
	}
	return keys
})

func newFakeVault(t testing.TB) *fakeVault {
	t.Helper()
	f := &fakeVault{keys: map[string]*fakeKey{}, requests: map[string]int{}, tenant: fakeTenant}
	f.cred = &tokenCred{token: fakeToken, tenant: fakeTenant}
	cert, pool := selfSigned(t)
	f.srv = httptest.NewUnstartedServer(f)
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	f.srv.StartTLS()
	addr := f.srv.Listener.Addr().String()
	f.tr = &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}
	t.Cleanup(func() {
		f.tr.CloseIdleConnections()
		f.srv.Close()
	})
	return f
}

// clientOptions returns azcore options that reach the fake, with few and
// short retries.
func (f *fakeVault) clientOptions() azcore.ClientOptions {
	return azcore.ClientOptions{
		Transport: &http.Client{Transport: f.tr},
		Retry:     policy.RetryOptions{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond},
	}
}

func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake key vault"},
		DNSNames:              []string{"*.vault.azure.net", "*.managedhsm.azure.net"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool
}

func newVersionID() string {
	var b [16]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}

// create makes a new key of type kty ("RSA" or "oct-HSM") and returns its name.
func (f *fakeVault) create(kty string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	name := fmt.Sprintf("krypton-root-%d", f.seq)
	k := &fakeKey{kty: kty}
	f.keys[name] = k
	f.rotateLocked(k)
	return name
}

// rotate adds a new current version to the key.
func (f *fakeVault) rotate(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rotateLocked(f.keys[name])
}

func (f *fakeVault) rotateLocked(k *fakeKey) string {
	f.seq++
	v := &fakeVersion{id: newVersionID(), enabled: true}
	if k.kty == "RSA" {
		pool := rsaPool()
		v.rsa = pool[f.seq%len(pool)]
	} else {
		v.aes = make([]byte, 32)
		rand.Read(v.aes)
	}
	k.versions = append(k.versions, v)
	return v.id
}

// set changes a key's switches under the lock.
func (f *fakeVault) set(name string, change func(k *fakeKey)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f.keys[name])
}

func (f *fakeVault) setEnabled(name string, on bool) {
	f.set(name, func(k *fakeKey) {
		for _, v := range k.versions {
			v.enabled = on
		}
	})
}

func (f *fakeVault) count(what string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[what]
}

type kvError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror,omitempty"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, inner, msg string) {
	var e kvError
	e.Error.Code, e.Error.Message = code, msg
	if inner != "" {
		e.Error.InnerError = &struct {
			Code string `json:"code"`
		}{inner}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(e)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(v)
}

var b64 = base64.RawURLEncoding

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	resource := "https://vault.azure.net"
	if strings.HasSuffix(host, ".managedhsm.azure.net") {
		resource = "https://managedhsm.azure.net"
	}
	challenge := fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, f.tenant, resource)
	switch auth := r.Header.Get("Authorization"); {
	case auth == "":
		f.mu.Lock()
		f.challenges++
		f.mu.Unlock()
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, "Unauthorized", "", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	case subtle.ConstantTimeCompare([]byte(auth), []byte("Bearer "+fakeToken)) != 1:
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, "Unauthorized", "", "AKV10032: Invalid issuer.")
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "The api-version query parameter is required.")
		return
	}
	var segs []string
	for _, s := range strings.Split(r.URL.Path, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) < 2 || len(segs) > 4 || segs[0] != "keys" {
		writeError(w, http.StatusNotFound, "NotFound", "", "Not found")
		return
	}
	name, version, op := segs[1], "", "get"
	rest := segs[2:]
	if n := len(rest); n > 0 && (rest[n-1] == "wrapkey" || rest[n-1] == "unwrapkey") {
		op, rest = rest[n-1], rest[:n-1]
	}
	if len(rest) > 1 {
		writeError(w, http.StatusNotFound, "NotFound", "", "Not found")
		return
	}
	if len(rest) == 1 {
		version = rest[0]
	}
	if (op == "get") != (r.Method == http.MethodGet) || (op != "get" && r.Method != http.MethodPost) {
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "", "method not allowed")
		return
	}

	f.mu.Lock()
	f.requests[op]++
	k := f.keys[name]
	var kty string
	var v fakeVersion
	found := false
	var failing, throttled, forbidden bool
	if k != nil && !k.deleted {
		kty, failing, throttled, forbidden = k.kty, k.failing, k.throttled, k.forbidden
		for i, kv := range k.versions {
			if kv.id == version || version == "" && i == len(k.versions)-1 {
				v, found = *kv, true
			}
		}
	} else if k != nil {
		failing, throttled = k.failing, k.throttled
	}
	f.mu.Unlock()

	switch {
	case failing:
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "", "The service is temporarily unavailable.")
		return
	case throttled:
		// A minute: far above the client's MaxRetryDelay, so that a client honouring it would
		// take a minute, which no busy machine turns a quick Check into.
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusTooManyRequests, "Throttled", "", "Request was not allowed because the number of requests exceeded the vault's throttling limits.")
		return
	case !found:
		id := name
		if version != "" {
			id += "/" + version
		}
		writeError(w, http.StatusNotFound, "KeyNotFound", "", "A key with (name/id) "+id+" was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.")
		return
	case forbidden:
		writeError(w, http.StatusForbidden, "Forbidden", "ForbiddenByRbac", "Caller is not authorized to perform action on resource.")
		return
	}
	kid := "https://" + host + "/keys/" + name + "/" + v.id
	if op == "get" {
		jwk := map[string]any{"kid": kid, "kty": kty, "key_ops": []string{"wrapKey", "unwrapKey", "encrypt", "decrypt"}}
		if v.rsa != nil {
			jwk["n"] = b64.EncodeToString(v.rsa.N.Bytes())
			jwk["e"] = b64.EncodeToString(big.NewInt(int64(v.rsa.E)).Bytes())
		}
		writeJSON(w, map[string]any{"key": jwk, "attributes": map[string]any{
			"enabled": v.enabled, "created": 1764000000, "updated": 1764000000, "recoveryLevel": "Recoverable", "recoverableDays": 90,
		}})
		return
	}
	if !v.enabled && (op == "unwrapkey" || kty != "RSA") {
		op := map[string]string{"wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}[op]
		writeError(w, http.StatusForbidden, "Forbidden", "KeyDisabled", "Operation "+op+" is not allowed on a disabled key.")
		return
	}
	var params struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := json.NewDecoder(r.Body).Decode(&params); err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "The request body is not valid JSON.")
		return
	}
	in, err := b64.DecodeString(params.Value)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "Property value has invalid value.")
		return
	}
	var out []byte
	switch {
	case kty == "RSA" && params.Alg == "RSA-OAEP-256" && op == "wrapkey":
		out, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, &v.rsa.PublicKey, in, nil)
	case kty == "RSA" && params.Alg == "RSA-OAEP-256":
		out, err = rsa.DecryptOAEP(sha256.New(), nil, v.rsa, in, nil)
	case kty == "oct-HSM" && params.Alg == "A256KW" && op == "wrapkey":
		out, err = kwWrap(v.aes, in)
	case kty == "oct-HSM" && params.Alg == "A256KW":
		out, err = kwUnwrap(v.aes, in)
	default:
		writeError(w, http.StatusBadRequest, "BadParameter", "", "Algorithm "+params.Alg+" is not supported for key type "+kty+".")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "Error occurred while processing the key operation.")
		return
	}
	writeJSON(w, map[string]string{"kid": kid, "value": b64.EncodeToString(out)})
}

// kwWrap is AES key wrap, RFC 3394 section 2.2.1, with the default IV.
func kwWrap(kek, p []byte) ([]byte, error) {
	if len(p) < 16 || len(p)%8 != 0 {
		return nil, errors.New("kw: bad input length")
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(p) / 8
	out := make([]byte, 8+len(p))
	copy(out[8:], p)
	a := []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}
	buf := make([]byte, 16)
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(buf, a)
			copy(buf[8:], out[8*i:8*i+8])
			b.Encrypt(buf, buf)
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(buf[:8])^t)
			copy(out[8*i:], buf[8:])
		}
	}
	copy(out, a)
	return out, nil
}

// kwUnwrap is AES key unwrap, RFC 3394 section 2.2.2, checking the IV.
func kwUnwrap(kek, c []byte) ([]byte, error) {
	if len(c) < 24 || len(c)%8 != 0 {
		return nil, errors.New("kw: bad input length")
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(c)/8 - 1
	r := make([]byte, len(c))
	copy(r, c)
	a := make([]byte, 8)
	copy(a, c[:8])
	buf := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf, binary.BigEndian.Uint64(a)^t)
			copy(buf[8:], r[8*i:8*i+8])
			b.Decrypt(buf, buf)
			copy(a, buf[:8])
			copy(r[8*i:], buf[8:])
		}
	}
	if subtle.ConstantTimeCompare(a, []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}) != 1 {
		return nil, errors.New("kw: integrity check failed")
	}
	return r[8:], nil
}

// tokenCred is the test azcore.TokenCredential: it hands out fakeToken for
// Key Vault's scopes in the fake's tenant, and counts its calls.
type tokenCred struct {
	token, tenant string
	calls         atomic.Int64
	scopes        sync.Map // scope → true
}

func (c *tokenCred) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	if len(o.Scopes) != 1 || (o.Scopes[0] != "https://vault.azure.net/.default" && o.Scopes[0] != "https://managedhsm.azure.net/.default") {
		return azcore.AccessToken{}, fmt.Errorf("tokenCred: unexpected scopes %v", o.Scopes)
	}
	if o.TenantID != c.tenant {
		return azcore.AccessToken{}, fmt.Errorf("tokenCred: unexpected tenant %q", o.TenantID)
	}
	c.scopes.Store(o.Scopes[0], true)
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}
