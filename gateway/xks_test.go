package gateway_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/gateway/xks"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

const (
	xksRegion = "eu-west-1"
	xksPrefix = "/keystores/acme"
	xksKey    = "payments-key-1"
	akidOld   = "AKIAOLDOLDOLDOLDOLD2"
	akidNew   = "AKIANEWNEWNEWNEWNEW3"
)

// xksCA is a small CA for the tests' HTTPS server and mutual-TLS client certificates (AWS KMS's
// side of XKS uses public CAs, not Krypton's).
type xksCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newXKSCA(t testing.TB) *xksCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xks test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &xksCA{cert: cert, key: key}
}

func (ca *xksCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

func (ca *xksCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue makes a leaf: a server certificate for 127.0.0.1, or a client certificate with cn.
func (ca *xksCA) issue(t testing.TB, cn string, client bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func secretOf(t testing.TB) string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// xksEnv is a gateway with the XKS front end on a real region, and an AWS-KMS-like client.
type xksEnv struct {
	r       *regiontest.Region
	g       *gateway.Gateway
	ca      *xksCA
	base    string
	creds   string
	keys    string // the keys file
	secrets map[string]string
	client  *http.Client
}

func writeCreds(t testing.TB, path string, secrets map[string]string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# access key ID, secret access key\n")
	for id, s := range secrets {
		b.WriteString(id + " " + s + "\n")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startXKS(t testing.TB, r *regiontest.Region, tenant, service string, tune func(*gateway.Config)) *xksEnv {
	t.Helper()
	e := &xksEnv{r: r, ca: newXKSCA(t), secrets: map[string]string{akidOld: secretOf(t)}}
	dir := t.TempDir()
	e.creds, e.keys = filepath.Join(dir, "xks-credentials"), filepath.Join(dir, "xks-keys.json")
	writeCreds(t, e.creds, e.secrets)
	e.g = startGateway(t, r, tenant, service, func(c *gateway.Config) {
		c.XKSAddr = "127.0.0.1:0"
		c.XKS.Certificate = e.ca.issue(t, "xks.example.com", false)
		c.XKS.PathPrefix = xksPrefix
		c.XKS.Region = xksRegion
		c.XKS.CredentialsFile = e.creds
		c.XKS.KeysPath = e.keys
		c.XKS.Timeout = 20 * time.Second // a busy test machine; the default is 200 ms
		if tune != nil {
			tune(c)
		}
	})
	e.base = "https://" + e.g.XKSAddr().String() + xksPrefix + "/kms/xks/v1"
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.pool()}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
	e.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	// A region on a busy machine may be between serving leases: retry until the key exists.
	clustertest.Eventually(t, 30*time.Second, "CreateKey", func() bool {
		_, err := e.g.XKS().CreateKey(ctxT(t), xksKey)
		if err != nil && status.Code(errors.Unwrap(err)) != codes.Unavailable {
			t.Fatalf("CreateKey: %v", err)
		}
		return err == nil
	})
	return e
}

// signer describes how a test request is signed.
type signer struct {
	akid, secret, service, region string
	at                            time.Time
	tamper                        bool // change the body after signing
	none                          bool // no Authorization
}

func (e *xksEnv) good() signer {
	return signer{akid: akidOld, secret: e.secrets[akidOld], service: xks.SigningService, region: xksRegion, at: time.Now()}
}

// post sends body to path (after base) signed as s; it returns the HTTP status and the decoded body.
func (e *xksEnv) post(t testing.TB, method, path string, body []byte, s signer) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, e.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if !s.none {
		sum := sha256.Sum256(body)
		if err := v4.NewSigner().SignHTTP(ctxT(t), aws.Credentials{AccessKeyID: s.akid, SecretAccessKey: s.secret}, req,
			hex.EncodeToString(sum[:]), s.service, s.region, s.at); err != nil {
			t.Fatal(err)
		}
	}
	if s.tamper {
		b := bytes.Replace(body, []byte("Alice"), []byte("Mallory"), 1)
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return resp.StatusCode, out
}

var xksMetadata = map[string]any{
	"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
	"kmsKeyArn":       "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
	"kmsOperation":    "Encrypt",
	"kmsRequestId":    "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
	"kmsViaService":   "ebs",
}

func jsonBody(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	m := map[string]any{"requestMetadata": xksMetadata}
	for k, v := range fields {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(t testing.TB, v any) []byte {
	t.Helper()
	s, _ := v.(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%v is not base64", v)
	}
	return b
}

// encrypt returns the encrypt answer's fields.
func (e *xksEnv) encrypt(t testing.TB, pt, aad []byte) map[string]any {
	t.Helper()
	fields := map[string]any{"plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM", "ciphertextDataIntegrityValueAlgorithm": "SHA_256"}
	if aad != nil {
		fields["additionalAuthenticatedData"] = b64(aad)
	}
	code, out := e.post(t, http.MethodPost, "/keys/"+xksKey+"/encrypt", jsonBody(t, fields), e.good())
	if code != http.StatusOK {
		t.Fatalf("Encrypt: %d %v", code, out)
	}
	return out
}

func decryptBody(t testing.TB, enc map[string]any, aad []byte) map[string]any {
	f := map[string]any{"encryptionAlgorithm": "AES_GCM", "ciphertext": enc["ciphertext"], "ciphertextMetadata": enc["ciphertextMetadata"],
		"initializationVector": enc["initializationVector"], "authenticationTag": enc["authenticationTag"]}
	if aad != nil {
		f["additionalAuthenticatedData"] = b64(aad)
	}
	return f
}

func wantError(t testing.TB, what string, code int, out map[string]any, wantCode int, wantName string) {
	t.Helper()
	if code != wantCode || out["errorName"] != wantName {
		t.Errorf("%s: got %d %v, want %d %s", what, code, out, wantCode, wantName)
	}
	if msg, _ := out["errorMessage"].(string); len(msg) >= 512 {
		t.Errorf("%s: errorMessage of %d characters", what, len(msg))
	}
}

// TestXKS drives every operation of the XKS Proxy API and each documented error case through a
// real gateway and region, with requests signed by aws-sdk-go-v2's SigV4 signer as AWS KMS signs
// them.
func TestXKS(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	e := startXKS(t, r, "acme", "payments", nil)

	t.Run("GetHealthStatus", func(t *testing.T) {
		code, out := e.post(t, http.MethodPost, "/health", []byte(`{"requestMetadata":{"kmsRequestId":"h1","kmsOperation":"KmsHealthCheck"}}`), e.good())
		if code != http.StatusOK {
			t.Fatalf("health: %d %v", code, out)
		}
		fleet, _ := out["ekmFleetDetails"].([]any)
		if len(fleet) != 1 || fleet[0].(map[string]any)["healthStatus"] != "ACTIVE" || out["xksProxyVendor"] == "" {
			t.Errorf("health answer %v", out)
		}
	})
	t.Run("GetKeyMetadata", func(t *testing.T) {
		code, out := e.post(t, http.MethodPost, "/keys/"+xksKey+"/metadata", jsonBody(t, nil), e.good())
		if code != http.StatusOK || out["keySpec"] != "AES_256" || out["keyStatus"] != "ENABLED" {
			t.Fatalf("metadata: %d %v", code, out)
		}
		if u, _ := out["keyUsage"].([]any); len(u) != 2 || u[0] != "ENCRYPT" || u[1] != "DECRYPT" {
			t.Errorf("keyUsage %v", out["keyUsage"])
		}
	})
	aad := []byte("project=nile,department=marketing")
	pt := []byte("a 32-byte AWS KMS data key......")
	enc := e.encrypt(t, pt, aad)
	t.Run("Encrypt", func(t *testing.T) {
		ct, iv, tag, md := unb64(t, enc["ciphertext"]), unb64(t, enc["initializationVector"]), unb64(t, enc["authenticationTag"]), unb64(t, enc["ciphertextMetadata"])
		if len(ct) != len(pt) || len(iv) != 12 || len(tag) != 16 || len(md) > 20 {
			t.Fatalf("encrypt answer sizes: ct %d iv %d tag %d md %d", len(ct), len(iv), len(tag), len(md))
		}
		h := sha256.New()
		for _, p := range [][]byte{aad, md, iv, ct, tag} {
			h.Write(p)
		}
		if got := unb64(t, enc["ciphertextDataIntegrityValue"]); !bytes.Equal(got, h.Sum(nil)) {
			t.Error("ciphertextDataIntegrityValue is not SHA-256 of AAD || xksMetadata || IV || ciphertext || tag (Appendix C)")
		}
		if bytes.Contains(ct, pt[:8]) {
			t.Error("plaintext in the ciphertext")
		}
	})
	t.Run("Decrypt", func(t *testing.T) {
		code, out := e.post(t, http.MethodPost, "/keys/"+xksKey+"/decrypt", jsonBody(t, decryptBody(t, enc, aad)), e.good())
		if code != http.StatusOK || !bytes.Equal(unb64(t, out["plaintext"]), pt) {
			t.Fatalf("decrypt: %d %v", code, out)
		}
		// No AAD on either side, no CDIV asked.
		code, out = e.post(t, http.MethodPost, "/keys/"+xksKey+"/encrypt", jsonBody(t, map[string]any{"plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"}), e.good())
		if code != http.StatusOK || out["ciphertextDataIntegrityValue"] != nil {
			t.Fatalf("encrypt without AAD: %d %v", code, out)
		}
		code, out = e.post(t, http.MethodPost, "/keys/"+xksKey+"/decrypt", jsonBody(t, decryptBody(t, out, nil)), e.good())
		if code != http.StatusOK || !bytes.Equal(unb64(t, out["plaintext"]), pt) {
			t.Fatalf("decrypt without AAD: %d %v", code, out)
		}
	})

	good := jsonBody(t, nil)
	encPath := "/keys/" + xksKey + "/encrypt"
	decPath := "/keys/" + xksKey + "/decrypt"
	encBody := jsonBody(t, map[string]any{"plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"})
	flip := func(field string) []byte {
		f := decryptBody(t, enc, aad)
		b := unb64(t, f[field])
		b[0] ^= 1
		f[field] = b64(b)
		return jsonBody(t, f)
	}
	s := e.good()
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		sign               func(*signer)
		code               int
		errName            string
	}{
		{"bad signature (body changed after signing)", "POST", encPath, encBody, func(s *signer) { s.tamper = true }, 401, xks.AuthenticationFailedException},
		{"wrong secret", "POST", encPath, encBody, func(s *signer) { s.secret = secretOf(t) }, 401, xks.AuthenticationFailedException},
		{"unknown access key", "POST", encPath, encBody, func(s *signer) { s.akid = "AKIAUNKNOWNUNKNOWN22" }, 401, xks.AuthenticationFailedException},
		{"wrong service in scope", "POST", encPath, encBody, func(s *signer) { s.service = "kms" }, 401, xks.AuthenticationFailedException},
		{"wrong region in scope", "POST", encPath, encBody, func(s *signer) { s.region = "us-east-1" }, 401, xks.AuthenticationFailedException},
		{"expired date", "POST", encPath, encBody, func(s *signer) { s.at = time.Now().Add(-6 * time.Minute) }, 401, xks.AuthenticationFailedException},
		{"date in the future", "POST", encPath, encBody, func(s *signer) { s.at = time.Now().Add(6 * time.Minute) }, 401, xks.AuthenticationFailedException},
		{"no signature", "POST", "/health", good, func(s *signer) { s.none = true }, 401, xks.AuthenticationFailedException},
		{"unknown key", "POST", "/keys/no-such-key/encrypt", encBody, nil, 404, xks.KeyNotFoundException},
		{"unknown key metadata", "POST", "/keys/no-such-key/metadata", good, nil, 404, xks.KeyNotFoundException},
		{"bad ciphertext", "POST", decPath, flip("ciphertext"), nil, 400, xks.InvalidCiphertextException},
		{"bad tag", "POST", decPath, flip("authenticationTag"), nil, 400, xks.InvalidCiphertextException},
		{"bad IV", "POST", decPath, flip("initializationVector"), nil, 400, xks.InvalidCiphertextException},
		{"bad ciphertext metadata", "POST", decPath, flip("ciphertextMetadata"), nil, 400, xks.InvalidCiphertextException},
		{"bad AAD", "POST", decPath, jsonBody(t, decryptBody(t, enc, []byte("project=nile,department=sales"))), nil, 400, xks.InvalidCiphertextException},
		{"AAD missing", "POST", decPath, jsonBody(t, decryptBody(t, enc, nil)), nil, 400, xks.InvalidCiphertextException},
		{"short tag", "POST", decPath, jsonBody(t, map[string]any{"encryptionAlgorithm": "AES_GCM", "ciphertext": enc["ciphertext"], "initializationVector": enc["initializationVector"], "authenticationTag": b64(make([]byte, 12))}), nil, 400, xks.InvalidCiphertextException},
		{"malformed JSON", "POST", encPath, []byte(`{"requestMetadata": {`), nil, 400, xks.ValidationException},
		{"JSON then garbage", "POST", encPath, append(append([]byte{}, encBody...), []byte(` {}`)...), nil, 400, xks.ValidationException},
		{"no requestMetadata", "POST", encPath, jsonBody(t, map[string]any{"requestMetadata": nil, "plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM"}), nil, 400, xks.ValidationException},
		{"plaintext not base64", "POST", encPath, jsonBody(t, map[string]any{"plaintext": "!!", "encryptionAlgorithm": "AES_GCM"}), nil, 400, xks.ValidationException},
		{"no plaintext", "POST", encPath, jsonBody(t, map[string]any{"encryptionAlgorithm": "AES_GCM"}), nil, 400, xks.ValidationException},
		{"unsupported algorithm", "POST", encPath, jsonBody(t, map[string]any{"plaintext": b64(pt), "encryptionAlgorithm": "RSAES_OAEP_SHA_256"}), nil, 501, xks.UnsupportedOperationException},
		{"unsupported CDIV algorithm", "POST", encPath, jsonBody(t, map[string]any{"plaintext": b64(pt), "encryptionAlgorithm": "AES_GCM", "ciphertextDataIntegrityValueAlgorithm": "MD5"}), nil, 501, xks.UnsupportedOperationException},
		{"plaintext too large", "POST", encPath, jsonBody(t, map[string]any{"plaintext": b64(make([]byte, xks.MaxPlaintextSize+1)), "encryptionAlgorithm": "AES_GCM"}), nil, 501, xks.UnsupportedOperationException},
		{"GET", "GET", encPath, nil, nil, 405, xks.ValidationException},
		{"unknown operation", "POST", "/keys/" + xksKey + "/sign", good, nil, 404, xks.InvalidURIPathException},
		{"bad key ID", "POST", "/keys/a%2Fb/encrypt", good, nil, 404, xks.InvalidURIPathException},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sg := s
			sg.at = time.Now()
			if tc.sign != nil {
				tc.sign(&sg)
			}
			code, out := e.post(t, tc.method, tc.path, tc.body, sg)
			wantError(t, tc.name, code, out, tc.code, tc.errName)
		})
	}
	t.Run("other path prefix", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctxT(t), "POST", strings.Replace(e.base, xksPrefix, "/keystores/other", 1)+"/health", strings.NewReader("{}"))
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("another prefix: %d, want 404", resp.StatusCode)
		}
	})
	if n := counterOf(t, e.g, "krypton_xks_requests_total", map[string]string{"error": xks.AuthenticationFailedException}); n < 8 {
		t.Errorf("krypton_xks_requests_total{error=AuthenticationFailedException} = %v", n)
	}
}

func counterOf(t testing.TB, g *gateway.Gateway, name string, labels map[string]string) float64 {
	return counter(t, g.Registry(), name, labels)
}

// TestXKSCredentialRotation: several access keys are accepted at once; the file is read again when
// it changes and on Reload; a file that fails to load (here: readable by others) leaves the
// credentials in force and never shows a secret in the error.
func TestXKSCredentialRotation(t *testing.T) {
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "payments")
	e := startXKS(t, r, "acme", "payments", nil)
	health := []byte(`{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}`)
	as := func(akid string) signer {
		s := e.good()
		s.akid, s.secret = akid, e.secrets[akid]
		return s
	}
	ok := func(akid string) bool {
		code, _ := e.post(t, "POST", "/health", health, as(akid))
		return code == http.StatusOK
	}
	if !ok(akidOld) {
		t.Fatal("old credentials refused")
	}
	// Step 1 of the specification's rotation: add the new credentials.
	e.secrets[akidNew] = secretOf(t)
	writeCreds(t, e.creds, e.secrets)
	clustertest.Eventually(t, 20*time.Second, "the new access key accepted", func() bool { return ok(akidNew) })
	if !ok(akidOld) {
		t.Fatal("old credentials refused during the rotation")
	}
	// Step 4: remove the old ones; Reload takes it at once.
	old := e.secrets[akidOld]
	delete(e.secrets, akidOld)
	writeCreds(t, e.creds, e.secrets)
	if err := e.g.XKS().Reload(); err != nil {
		t.Fatal(err)
	}
	e.secrets[akidOld] = old // still signed with, no longer accepted
	if ok(akidOld) {
		t.Error("removed credentials still accepted after Reload")
	}
	if !ok(akidNew) {
		t.Error("new credentials refused")
	}
	// A file readable by others is refused; the credentials in force stay; no secret leaks.
	if err := os.Chmod(e.creds, 0o644); err != nil {
		t.Fatal(err)
	}
	err := e.g.XKS().Reload()
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Reload of a 0644 file: %v", err)
	}
	os.Chmod(e.creds, 0o600)
	os.WriteFile(e.creds, []byte(akidNew+" "+e.secrets[akidNew]+" extra\n"), 0o600)
	err = e.g.XKS().Reload()
	if err == nil || strings.Contains(err.Error(), e.secrets[akidNew]) {
		t.Fatalf("Reload of a malformed file: %v (must fail without showing the secret)", err)
	}
	if !ok(akidNew) {
		t.Error("credentials in force dropped by a failed reload")
	}
}

// TestXKSMutualTLS: with ClientCAs and ClientSubject, only a client certificate of that CA and
// subject completes the handshake (AWS KMS presents CN=cks.kms.<region>.amazonaws.com).
func TestXKSMutualTLS(t *testing.T) {
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "payments")
	clientCA, otherCA := newXKSCA(t), newXKSCA(t)
	subject := "cks.kms." + xksRegion + ".amazonaws.com"
	e := startXKS(t, r, "acme", "payments", func(c *gateway.Config) {
		c.XKS.ClientCAs, c.XKS.ClientSubject = clientCA.pool(), subject
	})
	health := []byte(`{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}`)
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		ok   bool
	}{
		{"no client certificate", nil, false},
		{"right CA, other subject", ptr(clientCA.issue(t, "cks.kms.us-east-1.amazonaws.com", true)), false},
		{"other CA, right subject", ptr(otherCA.issue(t, subject, true)), false},
		{"right CA and subject", ptr(clientCA.issue(t, subject, true)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc2 := &tls.Config{RootCAs: e.ca.pool()}
			if tc.cert != nil {
				tc2.Certificates = []tls.Certificate{*tc.cert}
			}
			tr := &http.Transport{TLSClientConfig: tc2}
			defer tr.CloseIdleConnections()
			c := &xksEnv{base: e.base, secrets: e.secrets, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
			if !tc.ok {
				req, _ := http.NewRequestWithContext(ctxT(t), "POST", e.base+"/health", bytes.NewReader(health))
				resp, err := c.client.Do(req)
				if err == nil {
					resp.Body.Close()
					t.Fatalf("handshake accepted: %d", resp.StatusCode)
				}
				return
			}
			if code, out := c.post(t, "POST", "/health", health, e.good()); code != http.StatusOK {
				t.Fatalf("health over mutual TLS: %d %v", code, out)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestXKSKillSwitch: once Krypton revokes the service key (or locks the tenant), AWS KMS's
// Decrypt and Encrypt are refused with InvalidStateException, GetKeyMetadata says DISABLED and
// GetHealthStatus answers InvalidStateException, with the gateway's cache off and on.
func TestXKSKillSwitch(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments", "ledger")
	setupTenant(t, r, "locked", "app")
	admin := r.AdminClient(r.WaitLeader())
	for _, tc := range []struct {
		name, tenant, service string
		cache, lock           bool
	}{
		{"revoke, cache off", "acme", "payments", false, false},
		{"revoke, cache on", "acme", "ledger", true, false},
		{"tenant locked, cache on", "locked", "app", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startXKS(t, r, tc.tenant, tc.service, func(c *gateway.Config) {
				if tc.cache {
					c.CacheEntries = 100
				}
				c.XKS.HealthMaxAge = time.Millisecond // each GetHealthStatus checks anew
			})
			enc := e.encrypt(t, []byte("data key"), []byte("aad"))
			decrypt := func() (int, map[string]any) {
				return e.post(t, "POST", "/keys/"+xksKey+"/decrypt", jsonBody(t, decryptBody(t, enc, []byte("aad"))), e.good())
			}
			if code, out := decrypt(); code != http.StatusOK {
				t.Fatalf("decrypt before: %d %v", code, out)
			}
			if tc.cache {
				clustertest.Eventually(t, 20*time.Second, "a cache hit", func() bool {
					if code, out := decrypt(); code != http.StatusOK {
						t.Fatalf("decrypt: %d %v", code, out)
					}
					return counterOf(t, e.g, "krypton_gateway_cache_hits_total", nil) > 0
				})
			}
			if tc.lock {
				if _, err := admin.LockTenant(ctxT(t), &kv1.LockTenantRequest{RequestId: "lock-" + tc.tenant, Tenant: tc.tenant, Reason: "kill switch"}); err != nil {
					t.Fatalf("LockTenant: %v", err)
				}
			} else if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "revoke-" + tc.service, Reason: "kill switch",
				Scope: &kv1.KeyScope{Tenant: tc.tenant, Service: tc.service, Version: 1}}); err != nil {
				t.Fatalf("RevokeKey: %v", err)
			}
			start := time.Now()
			var code int
			var out map[string]any
			clustertest.Eventually(t, 10*time.Second, "Decrypt refused", func() bool {
				code, out = decrypt()
				return code != http.StatusOK
			})
			wantError(t, "decrypt after the kill switch", code, out, 400, xks.InvalidStateException)
			t.Logf("refused %v after the kill switch returned", time.Since(start))
			code, out = e.post(t, "POST", "/keys/"+xksKey+"/encrypt", jsonBody(t, map[string]any{"plaintext": b64([]byte("x")), "encryptionAlgorithm": "AES_GCM"}), e.good())
			wantError(t, "encrypt after the kill switch", code, out, 400, xks.InvalidStateException)
			code, out = e.post(t, "POST", "/keys/"+xksKey+"/metadata", jsonBody(t, nil), e.good())
			if code != http.StatusOK || out["keyStatus"] != "DISABLED" {
				t.Errorf("xksMetadata after the kill switch: %d %v", code, out)
			}
			// The deep health check wraps under the same service key: the key store shows unhealthy.
			code, out = e.post(t, "POST", "/health", []byte(`{"requestMetadata":{"kmsRequestId":"h","kmsOperation":"KmsHealthCheck"}}`), e.good())
			wantError(t, "GetHealthStatus after the kill switch", code, out, 400, xks.InvalidStateException)
		})
	}
}

// BenchmarkXKS measures Encrypt and Decrypt through the XKS front end (HTTPS, SigV4 verified,
// region unwrap of the external key each call, cache off) at 16 concurrent callers, and reports
// p50 and p99 latency: go test -run '^$' -bench BenchmarkXKS -benchtime 2000x ./gateway
func BenchmarkXKS(b *testing.B) {
	r := regiontest.Start(b, 3)
	setupTenant(b, r, "acme", "payments")
	e := startXKS(b, r, "acme", "payments", nil)
	enc := e.encrypt(b, make([]byte, 32), []byte("aad"))
	for _, op := range []string{"encrypt", "decrypt"} {
		b.Run(op, func(b *testing.B) {
			body := jsonBody(b, map[string]any{"plaintext": b64(make([]byte, 32)), "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": b64([]byte("aad"))})
			if op == "decrypt" {
				body = jsonBody(b, decryptBody(b, enc, []byte("aad")))
			}
			lat := make(chan time.Duration, b.N+64)
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					start := time.Now()
					if code, out := e.post(b, "POST", "/keys/"+xksKey+"/"+op, body, e.good()); code != http.StatusOK {
						b.Errorf("%s: %d %v", op, code, out)
						return
					}
					lat <- time.Since(start)
				}
			})
			b.StopTimer()
			close(lat)
			var all []time.Duration
			for d := range lat {
				all = append(all, d)
			}
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}
