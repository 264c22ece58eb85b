// Package awskmstest serves local-kms, an AWS KMS emulator, inside a test process on 127.0.0.1,
// so that any package's tests can run real awskms anchors against it:
//
//	srv := awskmstest.Start(t)
//	arn := srv.CreateKey(t)
//	p, err := anchor.Open(ctx, srv.URI(arn), anchor.Options{
//		Provider: map[string]any{anchor.SchemeAWSKMS: srv.Options()},
//		Development: true}) // http:// on loopback is for development only (anchor.CheckTransport)
//	srv.Disable(t, arn) // the customer's kill switch
//
// local-kms is linked into the test binary (it is a Go module), so there is no peer binary to
// miss and nothing skips. Its requests go through local-kms's own handlers, with two checks of
// AWS KMS Decrypt that local-kms lacks added in front (see decryptGuard).
package awskmstest

import (
	"bytes"
	"context"
	"crypto/fips140"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/nsmithuk/local-kms/src/config"
	"github.com/nsmithuk/local-kms/src/data"
	"github.com/nsmithuk/local-kms/src/handler"
	"github.com/nsmithuk/local-kms/src/service"
	"github.com/sirupsen/logrus"

	"github.com/kryptonkms/krypton/anchor/awskms"
)

// The local-kms account and region: keys it makes have them in their ARNs.
const (
	Region  = "eu-west-1"
	Account = "111122223333"
)

// Static test credentials. local-kms does not check signatures, but they must never show in a
// Describe, a log or an error: tests scan for SecretKey and SessionToken.
const (
	AccessKey    = "AKIAKRYPTONTESTKEY01"
	SecretKey    = "krypton-test-secret-Zq8vX2mN4pL7"
	SessionToken = "krypton-test-session-token-Hf3kT9"
)

// Credentials returns a provider of the static test credentials.
func Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, SessionToken)
}

// Mode is how the server answers.
type Mode int32

const (
	// Up serves every request.
	Up Mode = iota
	// Unavailable answers every request 503 Service Unavailable, as a load balancer in front of
	// a failing service would.
	Unavailable
	// Unreachable closes every connection without answering, as a network that drops the
	// traffic would look to a client that got through the TCP handshake.
	Unreachable
)

// configOnce sets local-kms's account and region, package variables of its config package that
// its main sets from KMS_REGION and KMS_ACCOUNT_ID, once per process (before any server runs).
var configOnce sync.Once

// Server is local-kms served on 127.0.0.1 with a leveldb in a temporary directory.
type Server struct {
	// URL is the endpoint (http://127.0.0.1:port), the anchor URI's endpoint parameter: plain
	// http on loopback, which a node accepts only with development anchors allowed
	// (anchor.CheckTransport; regiontest allows them).
	URL string
	// Admin is a KMS client for the key owner's side: CreateKey, DisableKey, ScheduleKeyDeletion.
	Admin *kms.Client

	mode  atomic.Int32
	calls atomic.Int64
}

// Start serves local-kms for the duration of t.
func Start(t testing.TB) *Server {
	t.Helper()
	configOnce.Do(func() {
		config.AWSRegion = Region
		config.AWSAccountId = Account
	})
	db := data.NewDatabase(filepath.Join(t.TempDir(), "local-kms"))
	// local-kms logs every request; its logger is unexported in src, so serve repeats
	// src.HandleRequest's dispatch with a silent one.
	log := logrus.New()
	log.SetOutput(io.Discard)
	s := &Server{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		switch Mode(s.mode.Load()) {
		case Unavailable:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "<html>Service Unavailable</html>")
			return
		case Unreachable:
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		// local-kms plays AWS's HSMs, outside Krypton's FIPS boundary: its cryptography (GCM
		// with caller-chosen nonces) runs outside GODEBUG=fips140=only's enforcement.
		fips140.WithoutEnforcement(func() { serve(w, r, log, db) })
	}))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
		srv.Close()
		db.Close()
	})
	s.URL = srv.URL
	s.Admin = kms.New(kms.Options{
		Region:       Region,
		Credentials:  Credentials(),
		BaseEndpoint: aws.String(srv.URL),
		HTTPClient:   &http.Client{Transport: tr},
	})
	return s
}

// SetMode switches how the server answers from now on (Up, Unavailable, Unreachable).
func (s *Server) SetMode(m Mode) { s.mode.Store(int32(m)) }

// Calls returns how many requests reached the server, in any mode.
func (s *Server) Calls() int64 { return s.calls.Load() }

// URI returns the anchor URI of key (an ARN) on this server.
func (s *Server) URI(key string) string { return "awskms://" + key + "?endpoint=" + s.URL }

// Options returns the awskms.Options a provider needs for this server: the endpoint and the
// static test credentials. Pass them as anchor.Options.Provider[anchor.SchemeAWSKMS].
func (s *Server) Options() awskms.Options {
	return awskms.Options{Endpoint: s.URL, Region: Region, Credentials: Credentials()}
}

// CreateKey makes a symmetric ENCRYPT_DECRYPT key and returns its ARN.
func (s *Server) CreateKey(t testing.TB) string {
	t.Helper()
	out, err := s.Admin.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String("krypton test L1")})
	if err != nil {
		t.Fatalf("awskmstest: CreateKey: %v", err)
	}
	return aws.ToString(out.KeyMetadata.Arn)
}

// Disable disables key (DisableKey): the customer's kill switch.
func (s *Server) Disable(t testing.TB, key string) {
	t.Helper()
	if _, err := s.Admin.DisableKey(context.Background(), &kms.DisableKeyInput{KeyId: aws.String(key)}); err != nil {
		t.Fatalf("awskmstest: DisableKey: %v", err)
	}
}

// Enable enables key again (EnableKey).
func (s *Server) Enable(t testing.TB, key string) {
	t.Helper()
	if _, err := s.Admin.EnableKey(context.Background(), &kms.EnableKeyInput{KeyId: aws.String(key)}); err != nil {
		t.Fatalf("awskmstest: EnableKey: %v", err)
	}
}

// ScheduleDeletion schedules key for deletion after the shortest window AWS allows (7 days).
func (s *Server) ScheduleDeletion(t testing.TB, key string) {
	t.Helper()
	if _, err := s.Admin.ScheduleKeyDeletion(context.Background(), &kms.ScheduleKeyDeletionInput{
		KeyId: aws.String(key), PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatalf("awskmstest: ScheduleKeyDeletion: %v", err)
	}
}

// CancelDeletion cancels a scheduled deletion. As in AWS, the key is then disabled: Enable it.
func (s *Server) CancelDeletion(t testing.TB, key string) {
	t.Helper()
	if _, err := s.Admin.CancelKeyDeletion(context.Background(), &kms.CancelKeyDeletionInput{KeyId: aws.String(key)}); err != nil {
		t.Fatalf("awskmstest: CancelKeyDeletion: %v", err)
	}
}

// serve is src.HandleRequest of local-kms with logger l, behind decryptGuard.
func serve(w http.ResponseWriter, r *http.Request, l *logrus.Logger, db *data.Database) {
	switch {
	case r.URL.Path != "/":
		http.NotFound(w, r)
		return
	case r.Method != http.MethodPost:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	case !strings.Contains(r.Header.Get("Content-Type"), "json"):
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if r.Header.Get("X-Amz-Target") == "TrentService.Decrypt" && !decryptGuard(w, r, db) {
		return
	}
	h := handler.NewRequestHandler(r, l, db)
	target := strings.Split(r.Header.Get("X-Amz-Target"), ".")
	if len(target) >= 2 {
		if m := reflect.ValueOf(h).MethodByName(target[1]); m.IsValid() {
			resp := m.Call(nil)[0].Interface().(handler.Response)
			w.WriteHeader(resp.Code)
			io.WriteString(w, resp.Body)
			return
		}
	}
	w.WriteHeader(http.StatusNotImplemented)
}

// decryptGuard does two checks of AWS KMS Decrypt that local-kms lacks, and answers as AWS does
// if one fails (returning false):
//   - with a KeyId, local-kms ignores the key named inside the blob and decrypts with the KeyId's
//     key, so a blob whose key ARN bytes were changed still opens; AWS answers
//     IncorrectKeyException;
//   - a blob cut inside local-kms's GCM nonce makes its handler panic (slice bounds), and so does
//     a first byte (its key ARN length) near 255, whose length check overflows a uint8; AWS
//     answers InvalidCiphertextException.
func decryptGuard(w http.ResponseWriter, r *http.Request, db *data.Database) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var in struct {
		KeyId          *string
		CiphertextBlob []byte
	}
	if json.Unmarshal(body, &in) != nil {
		return true // local-kms answers the bad request itself
	}
	// local-kms computes its offsets in uint8: a key ARN length above 250 wraps them.
	if b := in.CiphertextBlob; len(b) > 0 && (len(b) < 1+int(b[0])+4+1 || int(b[0])+5 > 255) {
		kmsError(w, "InvalidCiphertextException")
		return false
	}
	ident, _, ct, ok := service.UnpackCiphertextBlob(in.CiphertextBlob)
	if !ok {
		return true
	}
	if len(ct) < 12+16 {
		kmsError(w, "InvalidCiphertextException")
		return false
	}
	if in.KeyId == nil {
		return true
	}
	want := *in.KeyId
	if strings.Contains(want, "alias/") {
		a, err := db.LoadAlias(config.EnsureArn("", want))
		if err != nil {
			return true // local-kms answers NotFound
		}
		want = a.TargetKeyId
	}
	if config.EnsureArn("key/", want) != ident {
		kmsError(w, "IncorrectKeyException")
		return false
	}
	return true
}

func kmsError(w http.ResponseWriter, code string) {
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"__type": code})
}
