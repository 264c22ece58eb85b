package awskms_test

import (
	"bytes"
	"context"
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
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/nsmithuk/local-kms/src/config"
	"github.com/nsmithuk/local-kms/src/data"
	"github.com/nsmithuk/local-kms/src/handler"
	"github.com/nsmithuk/local-kms/src/service"
	"github.com/sirupsen/logrus"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	"github.com/kryptonkms/krypton/anchor/awskms"
	"github.com/kryptonkms/krypton/internal/leaktest"
)

// The local-kms account and region. local-kms reads them from package
// variables of its config package (its main sets them from KMS_REGION and
// KMS_ACCOUNT_ID); keys it makes have ARNs in them.
const (
	testRegion  = "eu-west-1"
	testAccount = "111122223333"
)

// Static test credentials: local-kms does not check signatures, but they
// must never show in Describe or an error.
const (
	testAccessKey = "AKIAKRYPTONTESTKEY01"
	testSecretKey = "krypton-test-secret-Zq8vX2mN4pL7"
	testToken     = "krypton-test-session-token-Hf3kT9"
)

var testCreds = credentials.NewStaticCredentialsProvider(testAccessKey, testSecretKey, testToken)

func TestMain(m *testing.M) {
	config.AWSRegion = testRegion
	config.AWSAccountId = testAccount
	leaktest.VerifyTestMain(m, 5*time.Second)
}

// peer is local-kms served inside the test process on 127.0.0.1, with a
// leveldb in a temporary directory, and an admin client for the key
// owner's side (CreateKey, DisableKey, ScheduleKeyDeletion).
type peer struct {
	url   string
	admin *kms.Client
}

// startPeer serves local-kms for the duration of t. local-kms is linked
// into the test binary, so there is no peer binary to miss and nothing
// here skips, with or without KRYPTON_REQUIRE_PEERS. Requests go through
// local-kms's own handlers (package handler, the code behind
// src.HandleRequest); serveLocalKMS repeats src.HandleRequest's twenty
// lines of dispatch only to give them a silent logger, as src's is
// unexported and logs every request to stderr.
func startPeer(t testing.TB) *peer {
	t.Helper()
	db := data.NewDatabase(filepath.Join(t.TempDir(), "local-kms"))
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveLocalKMS(w, r, log, db)
	}))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		db.Close()
	})
	admin := kms.New(kms.Options{
		Region:       testRegion,
		Credentials:  testCreds,
		BaseEndpoint: aws.String(srv.URL),
		HTTPClient:   &http.Client{Transport: tr},
	})
	return &peer{url: srv.URL, admin: admin}
}

// serveLocalKMS is src.HandleRequest of local-kms with logger l.
func serveLocalKMS(w http.ResponseWriter, r *http.Request, l *logrus.Logger, db *data.Database) {
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

// decryptGuard does two checks of AWS KMS Decrypt that local-kms lacks,
// and answers as AWS does if one fails (returning false):
//   - with a KeyId, local-kms ignores the key named inside the blob and
//     decrypts with the KeyId's key, so a blob whose key ARN bytes were
//     changed still opens; AWS answers IncorrectKeyException;
//   - a blob cut inside local-kms's GCM nonce makes its handler panic
//     (slice bounds), and so does a first byte (its key ARN length) near
//     255, whose length check overflows a uint8; AWS answers
//     InvalidCiphertextException.
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
	if b := in.CiphertextBlob; len(b) > 0 && len(b) < 1+int(b[0])+4+1 {
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

// newKey makes a symmetric key and returns its ARN.
func (pr *peer) newKey(t testing.TB) string {
	t.Helper()
	out, err := pr.admin.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String("krypton test L1")})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.KeyMetadata.Arn)
}

// flaky is an http.RoundTripper that fails every request while its mode
// says so: with a 503 answer, or with a connection error. It counts the
// requests it sees.
type flaky struct {
	base  *http.Transport
	mode  atomic.Int32
	calls atomic.Int64
}

const (
	flakyOff = iota
	flaky503
	flakyConnRefused
)

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	f.calls.Add(1)
	switch f.mode.Load() {
	case flaky503:
		if r.Body != nil {
			r.Body.Close()
		}
		return &http.Response{
			StatusCode: http.StatusServiceUnavailable,
			Status:     "503 Service Unavailable",
			Header:     http.Header{"Content-Type": {"text/html"}},
			Body:       io.NopCloser(strings.NewReader("<html>Service Unavailable</html>")),
			Request:    r,
			Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}, nil
	case flakyConnRefused:
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, &netOpError{}
	}
	return f.base.RoundTrip(r)
}

// netOpError is what a refused connection looks like to a net.Error
// checker, without dialling a closed port.
type netOpError struct{}

func (*netOpError) Error() string   { return "dial tcp 127.0.0.1:1: connect: connection refused" }
func (*netOpError) Timeout() bool   { return false }
func (*netOpError) Temporary() bool { return false }

// opened is what the tests know about a provider they opened.
type opened struct {
	key   string
	flaky *flaky
}

// harness opens providers on fresh keys of one peer.
type harness struct {
	peer *peer
	mu   sync.Mutex
	ps   map[anchor.Provider]opened
}

func newHarness(t testing.TB) *harness {
	return &harness{peer: startPeer(t), ps: map[anchor.Provider]opened{}}
}

// open opens uri with a flaky transport of its own.
func (h *harness) open(t testing.TB, uri, key string, o awskms.Options) anchor.Provider {
	t.Helper()
	f := &flaky{base: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(f.base.CloseIdleConnections)
	o.Credentials = testCreds
	o.HTTPClient = &http.Client{Transport: f}
	p, err := anchor.Open(context.Background(), uri, anchor.Options{
		Logger:   anchortest.Logger(t),
		Provider: map[string]any{anchor.SchemeAWSKMS: o},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.ps[p] = opened{key: key, flaky: f}
	h.mu.Unlock()
	return p
}

func (h *harness) get(p anchor.Provider) opened {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ps[p]
}

// openNew opens a provider on a fresh key, by ARN with the peer as
// endpoint.
func (h *harness) openNew(t testing.TB) anchor.Provider {
	key := h.peer.newKey(t)
	return h.open(t, "awskms://"+key+"?endpoint="+h.peer.url, key, awskms.Options{})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	anchortest.Run(t, anchortest.Harness{
		Open: func(t *testing.T) anchor.Provider { return h.openNew(t) },
		Reopen: func(t *testing.T, p anchor.Provider) anchor.Provider {
			key := h.get(p).key
			return h.open(t, "awskms://"+key+"?endpoint="+h.peer.url, key, awskms.Options{})
		},
		Disable: func(t *testing.T, p anchor.Provider) {
			_, err := h.peer.admin.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(h.get(p).key)})
			must(t, err)
		},
		Enable: func(t *testing.T, p anchor.Provider) {
			_, err := h.peer.admin.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(h.get(p).key)})
			must(t, err)
		},
		Destroy: func(t *testing.T, p anchor.Provider) {
			_, err := h.peer.admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{
				KeyId: aws.String(h.get(p).key), PendingWindowInDays: aws.Int32(7)})
			must(t, err)
		},
		FailTransiently: func(t *testing.T, p anchor.Provider) func() {
			f := h.get(p).flaky
			f.mode.Store(flaky503)
			return func() { f.mode.Store(flakyOff) }
		},
		// With the KeyId pinned, local-kms answers DisabledException and
		// KMSInvalidStateException as AWS does (TestLocalKMSReasons).
		ExactReasons: true,
		Secrets:      []string{testSecretKey, testToken},
		Timeout:      20 * time.Second,
	})
}
