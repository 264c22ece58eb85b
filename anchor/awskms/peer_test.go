package awskms_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	"github.com/kryptonkms/krypton/anchor/awskms"
	"github.com/kryptonkms/krypton/anchor/awskms/awskmstest"
	"github.com/kryptonkms/krypton/internal/leaktest"
)

var testCreds = awskmstest.Credentials()

const (
	testAccessKey = awskmstest.AccessKey
	testSecretKey = awskmstest.SecretKey
	testToken     = awskmstest.SessionToken
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }

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
	peer *awskmstest.Server
	mu   sync.Mutex
	ps   map[anchor.Provider]opened
}

func newHarness(t testing.TB) *harness {
	return &harness{peer: awskmstest.Start(t), ps: map[anchor.Provider]opened{}}
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
		// The emulator speaks http:// on loopback, admitted only for development
		// (anchor.CheckTransport).
		Development: true,
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
	key := h.peer.CreateKey(t)
	return h.open(t, "awskms://"+key+"?endpoint="+h.peer.URL, key, awskms.Options{})
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
			return h.open(t, "awskms://"+key+"?endpoint="+h.peer.URL, key, awskms.Options{})
		},
		Disable: func(t *testing.T, p anchor.Provider) {
			_, err := h.peer.Admin.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(h.get(p).key)})
			must(t, err)
		},
		Enable: func(t *testing.T, p anchor.Provider) {
			_, err := h.peer.Admin.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(h.get(p).key)})
			must(t, err)
		},
		Destroy: func(t *testing.T, p anchor.Provider) {
			_, err := h.peer.Admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{
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
