package xks

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/internal/fipsmode"
)

// ErrShutdown is returned by Serve once Close has been called.
var ErrShutdown = errors.New("xks: server shut down")

// Config configures an XKS proxy Server.
type Config struct {
	// Certificate is the HTTPS server certificate, naming the proxy's DNS name; AWS KMS checks it
	// against public CAs. Required.
	Certificate tls.Certificate
	// PathPrefix is the optional path prefix before /kms/xks/v1 (the XksProxyUriPath of
	// CreateCustomKeyStore is PathPrefix + "/kms/xks/v1"): empty, or "/" followed by letters,
	// digits, '/', '-' and '_'.
	PathPrefix string
	// Region is the AWS region whose KMS calls the proxy: the region of the SigV4 credential
	// scope. Required.
	Region string
	// CredentialsFile holds the SigV4 credentials accepted, one "ACCESS_KEY_ID SECRET" pair a
	// line (several during a rotation), mode 0600. It is read again when it changes and on
	// Reload. Required.
	CredentialsFile string
	// KeysPath is the JSON file of the external keys (ID and Krypton blob). Required.
	KeysPath string
	// ClientCAs, if set, turns on mutual TLS: the client certificate must chain to them and,
	// if ClientSubject is set, carry it as its subject common name (AWS KMS presents
	// cks.kms.<region>.amazonaws.com, chained to Amazon Trust Services).
	ClientCAs     *x509.CertPool
	ClientSubject string
	// Timeout bounds the work on one request, Krypton calls included: AWS KMS gives up after
	// 250 ms, so an answer later than that is useless. Default 200 ms.
	Timeout time.Duration
	// MaxInFlight bounds concurrent requests; more are answered ThrottlingException. Default 512.
	MaxInFlight int
	// HealthMaxAge is how long a deep health check's result is reused. Default 5 s (the
	// specification allows up to a minute).
	HealthMaxAge time.Duration
	// EKMName names the Krypton region in GetHealthStatus answers.
	EKMName string
	// Logger receives one line per request (request metadata, never plaintext); nil discards.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// DefaultConfig returns a Config with the defaults set.
func DefaultConfig() Config {
	return Config{Timeout: 200 * time.Millisecond, MaxInFlight: 512, HealthMaxAge: 5 * time.Second}
}

var prefixRe = regexp.MustCompile(`^(/[A-Za-z0-9_-]+)*$`)

// Validate reports the first unusable field, by name.
func (c Config) Validate() error {
	switch {
	case len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil:
		return errors.New("xks: Config.Certificate (the HTTPS server certificate) is required")
	case !prefixRe.MatchString(c.PathPrefix) || len(c.PathPrefix)+len("/kms/xks/v1") > 128:
		return fmt.Errorf("xks: Config.PathPrefix %q must be empty or /segments of letters, digits, '-' and '_', at most 117 characters", c.PathPrefix)
	case c.Region == "":
		return errors.New("xks: Config.Region (the AWS region of the SigV4 scope, e.g. eu-west-1) is required")
	case c.CredentialsFile == "":
		return errors.New("xks: Config.CredentialsFile is required")
	case c.KeysPath == "":
		return errors.New("xks: Config.KeysPath is required")
	case c.ClientSubject != "" && c.ClientCAs == nil:
		return errors.New("xks: Config.ClientSubject needs Config.ClientCAs (mutual TLS)")
	case c.Timeout <= 0 || c.MaxInFlight <= 0 || c.HealthMaxAge <= 0:
		return errors.New("xks: Config.Timeout, MaxInFlight and HealthMaxAge must be positive (start from DefaultConfig)")
	}
	return nil
}

// Server is an XKS proxy front end over Keys.
type Server struct {
	cfg   Config
	keys  Keys
	log   *slog.Logger
	creds *credentialStore
	reg   *registry
	sem   chan struct{}
	m     *metrics
	now   func() time.Time

	healthMu   sync.Mutex
	healthAt   time.Time
	healthErr  *Error
	healthBusy bool

	mu     sync.Mutex
	srv    *http.Server
	closed bool
}

// New checks cfg, loads the credentials and the keys file.
func New(cfg Config, keys Keys) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("front", "xks")
	s := &Server{cfg: cfg, keys: keys, log: log, sem: make(chan struct{}, cfg.MaxInFlight), now: time.Now}
	var err error
	if s.creds, err = newCredentialStore(cfg.CredentialsFile, func(err error) {
		log.Error("XKS credentials file not reloaded; the previous credentials stay in force", "err", err)
	}); err != nil {
		return nil, err
	}
	if s.reg, err = openRegistry(cfg.KeysPath); err != nil {
		return nil, err
	}
	if s.m, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the credentials file again (SIGHUP); on error the previous credentials stay.
func (s *Server) Reload() error { return s.creds.reload() }

// KeyIDs lists the external keys.
func (s *Server) KeyIDs() []string { return s.reg.ids() }

// CreateKey makes the external key id if it does not exist: a fresh key wrapped by the region
// under the gateway's service key, recorded in the keys file. It reports whether it was created.
func (s *Server) CreateKey(ctx context.Context, id string) (bool, error) {
	if !ValidKeyID(id) {
		return false, fmt.Errorf("xks: key ID %q must be 1 to 128 letters, digits, '-', '.' or '_'", id)
	}
	if _, ok := s.reg.get(id); ok {
		return false, nil
	}
	blob, err := s.keys.NewKey(ctx, keyAAD(id))
	if err != nil {
		return false, fmt.Errorf("xks: creating key %s: %w", id, err)
	}
	return s.reg.add(id, blob)
}

// TLSConfig is the HTTPS configuration: TLS 1.2 or later with ECDHE and AEAD suites only (the
// specification's AES-256-GCM suites first; HTTP/2 requires an AES-128-GCM one to be offered),
// and mutual TLS when ClientCAs is set.
func (s *Server) TLSConfig() *tls.Config {
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{s.cfg.Certificate},
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		},
	}
	if s.cfg.ClientCAs != nil {
		tc.ClientAuth, tc.ClientCAs = tls.RequireAndVerifyClientCert, s.cfg.ClientCAs
		if want := s.cfg.ClientSubject; want != "" {
			tc.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != want {
					return fmt.Errorf("xks: the client certificate's subject is not CN=%s", want)
				}
				return nil
			}
		}
	}
	return tc
}

// Serve serves HTTPS on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrShutdown
	}
	s.srv = &http.Server{
		Handler: s, TLSConfig: s.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: s.cfg.Timeout + 10*time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	srv := s.srv
	s.mu.Unlock()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return ErrShutdown
	}
	return err
}

// Close stops serving; requests in flight finish for up to five seconds.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

// route splits a URI path into the operation and key ID.
func (s *Server) route(path string) (Operation, string, bool) {
	rest, ok := strings.CutPrefix(path, s.cfg.PathPrefix+"/kms/xks/v1/")
	if !ok {
		return "", "", false
	}
	if rest == "health" {
		return OpGetHealthStatus, "", true
	}
	f := strings.Split(rest, "/")
	if len(f) != 3 || f[0] != "keys" || !ValidKeyID(f[1]) {
		return "", "", false
	}
	switch op := Operation(f[2]); op {
	case OpGetKeyMetadata, OpEncrypt, OpDecrypt:
		return op, f[1], true
	}
	return "", "", false
}

// ServeHTTP answers one XKS API request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	op, keyID, ok := s.route(r.URL.Path)
	var md RequestMetadata
	var accessKey string
	resp, xe := func() (any, *Error) {
		if !ok {
			return nil, xerr(InvalidURIPathException, "the URI path is not an XKS API path of this proxy: check XksProxyUriPath")
		}
		if r.Method != http.MethodPost {
			return nil, &Error{Name: ValidationException, Message: "XKS API requests are POST"}
		}
		select {
		case s.sem <- struct{}{}:
			defer func() { <-s.sem }()
		default:
			return nil, xerr(ThrottlingException, "the proxy has too many requests in flight; retry")
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
		if err != nil {
			return nil, xerr(UnsupportedOperationException, "the request body is larger than this proxy accepts (128 KiB)")
		}
		if accessKey, err = verify(r, body, s.creds.get(start), s.cfg.Region, start); err != nil {
			return nil, err.(*Error)
		}
		req, err := ParseRequest(op, body)
		clear(body)
		if err != nil {
			return nil, err.(*Error)
		}
		md = req.Metadata
		defer clear(req.Plaintext)
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
		defer cancel()
		return s.do(ctx, op, keyID, req)
	}()
	status := http.StatusOK
	if xe != nil {
		status = xe.Status()
		if r.Method != http.MethodPost && ok {
			status = http.StatusMethodNotAllowed
			w.Header().Set("Allow", http.MethodPost)
		}
		resp = map[string]string{"errorName": xe.Name, "errorMessage": xe.Message}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	out, _ := json.Marshal(resp)
	w.Write(out)
	clear(out)
	errName := ""
	if xe != nil {
		errName = xe.Name
	}
	d := s.now().Sub(start)
	s.m.observe(string(op), errName, d)
	s.log.Info("xks request", "op", string(op), "key", keyID, "error", errName, "ms", float64(d.Microseconds())/1000,
		"kmsRequestId", md.KMSRequestID, "kmsOperation", md.KMSOperation, "awsPrincipalArn", md.AWSPrincipalARN,
		"kmsKeyArn", md.KMSKeyARN, "kmsViaService", md.KMSViaService, "accessKeyId", accessKey)
}

// ciphertextMetadata marks the ciphertext format (docs/format.md, "XKS ciphertexts"): version 1
// is AES-256-GCM under the external key's Krypton-wrapped key, with the specification's
// length-prefixed AAD.
var ciphertextMetadata = []byte{1}

// gcmAAD is the specification's AAD for the cipher: 2-byte big-endian length of the caller's AAD,
// the AAD, 1-byte length of the ciphertext metadata, the metadata.
func gcmAAD(aad, md []byte) []byte {
	out := make([]byte, 0, 3+len(aad)+len(md))
	out = append(out, byte(len(aad)>>8), byte(len(aad)))
	out = append(out, aad...)
	out = append(out, byte(len(md)))
	return append(out, md...)
}

// cdiv is the specification's ciphertextDataIntegrityValue with SHA_256 (Appendix C): the hash of
// additionalAuthenticatedData || ciphertextMetadata || initializationVector || ciphertext ||
// authenticationTag, absent fields contributing nothing and no lengths in between.
func cdiv(aad, md, iv, ct, tag []byte) []byte {
	h := sha256.New()
	for _, p := range [][]byte{aad, md, iv, ct, tag} {
		h.Write(p)
	}
	return h.Sum(nil)
}

type metadataResponse struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

type encryptResponse struct {
	Ciphertext         []byte `json:"ciphertext"`
	CiphertextMetadata []byte `json:"ciphertextMetadata,omitempty"`
	IV                 []byte `json:"initializationVector"`
	Tag                []byte `json:"authenticationTag"`
	CDIV               []byte `json:"ciphertextDataIntegrityValue,omitempty"`
}

type decryptResponse struct {
	Plaintext []byte `json:"plaintext"`
}

type healthResponse struct {
	FleetSize  int           `json:"xksProxyFleetSize"`
	Vendor     string        `json:"xksProxyVendor"`
	Model      string        `json:"xksProxyModel"`
	EKMVendor  string        `json:"ekmVendor"`
	EKMDetails []ekmInstance `json:"ekmFleetDetails"`
}

type ekmInstance struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

func (s *Server) do(ctx context.Context, op Operation, keyID string, req *Request) (any, *Error) {
	if op == OpGetHealthStatus {
		if xe := s.health(ctx); xe != nil {
			return nil, xe
		}
		name := s.cfg.EKMName
		if name == "" {
			name = "krypton-region"
		}
		return healthResponse{FleetSize: 1, Vendor: "Krypton", Model: "Krypton gateway XKS proxy v1", EKMVendor: "Krypton",
			EKMDetails: []ekmInstance{{ID: name, Model: "Krypton region", HealthStatus: "ACTIVE"}}}, nil
	}
	blob, ok := s.reg.get(keyID)
	if !ok {
		return nil, xerr(KeyNotFoundException, "no external key of this ID in this proxy (krypton gateway -xks-create-key creates one)")
	}
	kek, err := s.keys.Unwrap(ctx, blob, keyAAD(keyID))
	if err != nil {
		xe := keysError(err)
		if op == OpGetKeyMetadata && xe.Name == InvalidStateException {
			return metadataResponse{KeySpec: "AES_256", KeyUsage: []string{"ENCRYPT", "DECRYPT"}, KeyStatus: "DISABLED"}, nil
		}
		return nil, xe
	}
	defer clear(kek)
	if op == OpGetKeyMetadata {
		return metadataResponse{KeySpec: "AES_256", KeyUsage: []string{"ENCRYPT", "DECRYPT"}, KeyStatus: "ENABLED"}, nil
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, xerr(InternalException, "the external key's Krypton key is not an AES-256 key")
	}
	switch op {
	case OpEncrypt:
		// The Go Cryptographic Module draws the 12-byte IV (cipher.NewGCMWithRandomNonce), so
		// Encrypt works under GODEBUG=fips140=only, which refuses caller-chosen GCM nonces.
		gcm, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, xerr(InternalException, "AES-GCM is not available: "+err.Error())
		}
		aad := gcmAAD(req.AAD, ciphertextMetadata)
		out := gcm.Seal(nil, nil, req.Plaintext, aad)
		iv, sealed := out[:12], out[12:]
		n := len(req.Plaintext)
		resp := encryptResponse{Ciphertext: sealed[:n], Tag: sealed[n:], IV: iv, CiphertextMetadata: ciphertextMetadata}
		if req.HasCDIVAlgo {
			// Appendix C: hash first, then check that the answer decrypts.
			resp.CDIV = cdiv(req.AAD, ciphertextMetadata, iv, resp.Ciphertext, resp.Tag)
			pt, err := gcm.Open(nil, nil, out, aad)
			if err != nil {
				return nil, xerr(InternalException, "the ciphertext failed its own decryption check; retry")
			}
			clear(pt)
		}
		return resp, nil
	case OpDecrypt:
		if !req.HasMetadata || len(req.CiphertextMetadata) != 1 || req.CiphertextMetadata[0] != ciphertextMetadata[0] {
			return nil, xerr(InvalidCiphertextException, "the ciphertext metadata is missing or not of a Krypton XKS ciphertext")
		}
		ct := make([]byte, 0, len(req.Ciphertext)+len(req.Tag))
		ct = append(append(ct, req.Ciphertext...), req.Tag...)
		var pt []byte
		if len(req.IV) == 12 {
			// Every mode, fips140=only included (Krypton writes 12-byte IVs).
			pt, err = fipsmode.OpenGCM(kek, req.IV, ct, gcmAAD(req.AAD, req.CiphertextMetadata))
		} else {
			if fips140.Enforced() {
				return nil, xerr(InvalidCiphertextException, "a 16-byte initialization vector cannot be used in FIPS 140-only mode (GODEBUG=fips140=only); Krypton's own ciphertexts have 12-byte IVs")
			}
			gcm, gerr := cipher.NewGCMWithNonceSize(block, len(req.IV))
			if gerr != nil {
				return nil, xerr(InvalidCiphertextException, "the initialization vector is not usable")
			}
			pt, err = gcm.Open(nil, req.IV, ct, gcmAAD(req.AAD, req.CiphertextMetadata))
		}
		if err != nil {
			return nil, xerr(InvalidCiphertextException, "the ciphertext, initialization vector, authentication tag or additional authenticated data is corrupted or does not match")
		}
		if pt == nil {
			pt = []byte{}
		}
		return decryptResponse{Plaintext: pt}, nil
	}
	return nil, xerr(InvalidURIPathException, "unknown operation")
}

// health is the deep check the specification asks for: a fresh key wrapped and unwrapped by the
// region under the gateway's service key (no external key is touched, so no customer key shows
// activity). A result is reused for HealthMaxAge, and only one check runs at a time.
func (s *Server) health(ctx context.Context) *Error {
	s.healthMu.Lock()
	if !s.healthAt.IsZero() && s.now().Sub(s.healthAt) < s.cfg.HealthMaxAge || s.healthBusy && !s.healthAt.IsZero() {
		xe := s.healthErr
		s.healthMu.Unlock()
		return xe
	}
	s.healthBusy = true
	s.healthMu.Unlock()
	aad := []byte("krypton-xks/v1/health")
	xe := func() *Error {
		blob, err := s.keys.NewKey(ctx, aad)
		if err != nil {
			return keysError(err)
		}
		k, err := s.keys.Unwrap(ctx, blob, aad)
		if err != nil {
			return keysError(err)
		}
		clear(k)
		return nil
	}()
	s.healthMu.Lock()
	s.healthBusy = false
	s.healthAt, s.healthErr = s.now(), xe
	s.healthMu.Unlock()
	return xe
}
