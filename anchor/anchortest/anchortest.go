// Package anchortest is the conformance suite every anchor.Provider runs:
// the file:// development anchor here, and AWS KMS (against local-kms),
// PKCS#11 (against SoftHSM2), GCP KMS and Azure Key Vault (against fakes
// that speak their wire protocols) in their own packages.
//
//	func TestConformance(t *testing.T) {
//		anchortest.Run(t, anchortest.Harness{
//			Open:    func(t *testing.T) anchor.Provider { ... a provider on a fresh key ... },
//			Disable: func(t *testing.T, p anchor.Provider) { ... disable p's key ... },
//			Enable:  func(t *testing.T, p anchor.Provider) { ... },
//		})
//	}
//
// Core checks always run; each hook that is set adds its own sub-test.
package anchortest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/internal/logtest"
)

// A Harness tells Run how to drive one provider implementation.
type Harness struct {
	// Open returns a provider on a fresh key, not shared with any other
	// call (each sub-test disables or destroys its own). The suite closes
	// it. Required.
	Open func(t *testing.T) anchor.Provider

	// Reopen returns a second provider on the same key as p, as a
	// restarted or newly elected region leader would open it. Optional.
	Reopen func(t *testing.T, p anchor.Provider) anchor.Provider

	// Disable disables p's key; Enable enables it again. Optional; Enable
	// is only used if Disable is set.
	Disable func(t *testing.T, p anchor.Provider)
	Enable  func(t *testing.T, p anchor.Provider)

	// Destroy destroys p's key, or schedules its deletion. Optional.
	Destroy func(t *testing.T, p anchor.Provider)

	// FailTransiently makes every call on p fail transiently (an
	// unreachable endpoint, a 503, a broken session) until restore is
	// called. Optional.
	FailTransiently func(t *testing.T, p anchor.Provider) (restore func())

	// ExactReasons is set when the provider reports precisely why it
	// refuses: ErrDisabled after Disable, ErrDestroyed or
	// ErrPendingDeletion after Destroy. Emulators that answer "access
	// denied" to everything (local-kms) leave it false, and the suite then
	// asks only for a definite denial.
	ExactReasons bool

	// Development is the Describe().Development the provider must report.
	Development bool

	// Secrets are strings (a PIN, a credential) that must never appear in
	// Describe or in an error.
	Secrets []string

	// Timeout bounds each sub-test's calls; 0 means 30 s.
	Timeout time.Duration
}

// Logger returns a logger that writes to t.Log, for providers under test.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logtest.New(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	if h.Open == nil {
		t.Fatal("anchortest: Harness.Open is required")
	}
	s := &suite{h: h}
	t.Run("RoundTrip", s.roundTrip)
	t.Run("DistinctCiphertexts", s.distinct)
	t.Run("WrongContext", s.wrongContext)
	t.Run("Tampered", s.tampered)
	t.Run("Truncated", s.truncated)
	t.Run("Garbage", s.garbage)
	t.Run("BadArguments", s.badArguments)
	t.Run("Check", s.check)
	t.Run("CanceledContext", s.canceled)
	t.Run("Describe", s.describe)
	t.Run("Concurrent", s.concurrent)
	t.Run("Close", s.close)
	if h.Reopen != nil {
		t.Run("Reopen", s.reopen)
	}
	if h.Disable != nil {
		t.Run("Disable", s.disable)
	}
	if h.Destroy != nil {
		t.Run("Destroy", s.destroy)
	}
	if h.FailTransiently != nil {
		t.Run("Transient", s.transient)
	}
}

type suite struct {
	h Harness
}

// open returns a provider on a fresh key, closed at the end of the test,
// and a context bounded by the harness timeout.
func (s *suite) open(t *testing.T) (anchor.Provider, context.Context) {
	t.Helper()
	p := s.h.Open(t)
	if p == nil {
		t.Fatal("anchortest: Harness.Open returned nil")
	}
	t.Cleanup(func() { p.Close() })
	timeout := s.h.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return p, ctx
}

var testCtx = anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, k); err != nil {
		t.Fatal(err)
	}
	return k
}

// noLeak fails if err's message shows any of the secrets, raw, hex or
// base64, or a harness secret.
func (s *suite) noLeak(t *testing.T, err error, secrets ...[]byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error() + fmt.Sprintf(" %+v %#v", err, err)
	for _, sec := range secrets {
		for _, form := range []string{string(sec), hex.EncodeToString(sec), strings.ToUpper(hex.EncodeToString(sec)),
			base64.StdEncoding.EncodeToString(sec), base64.RawURLEncoding.EncodeToString(sec)} {
			if len(form) >= 8 && strings.Contains(msg, form) {
				t.Errorf("error shows secret bytes: %v", err)
			}
		}
	}
	for _, sec := range s.h.Secrets {
		if sec != "" && strings.Contains(msg, sec) {
			t.Errorf("error shows a harness secret")
		}
	}
}

// wantDenied fails unless err is a definite denial (and not transient),
// matching one of reasons if any are given.
func (s *suite) wantDenied(t *testing.T, what string, err error, reasons ...error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error, want a denial", what)
		return
	case !anchor.IsDenied(err):
		t.Errorf("%s: %v: want a *anchor.DeniedError", what, err)
		return
	case anchor.IsTransient(err):
		t.Errorf("%s: %v: a denial must not also be transient", what, err)
	}
	if len(reasons) > 0 && !slices.ContainsFunc(reasons, func(r error) bool { return errors.Is(err, r) }) {
		t.Errorf("%s: %v: want one of %v", what, err, reasons)
	}
	s.noLeak(t, err)
}

func (s *suite) seal(t *testing.T, ctx context.Context, p anchor.Provider, pt []byte, ac anchor.Context) []byte {
	t.Helper()
	sealed, err := p.Seal(ctx, pt, ac)
	if err != nil {
		s.noLeak(t, err, pt)
		t.Fatalf("Seal: %v", err)
	}
	if len(sealed) == 0 || len(sealed) > anchor.MaxSealedSize {
		t.Fatalf("Seal returned %d bytes, want 1 to %d", len(sealed), anchor.MaxSealedSize)
	}
	// Short plaintexts occur in random bytes by chance; 8 bytes do not.
	if len(pt) >= 8 && bytes.Contains(sealed, pt) {
		t.Fatal("Seal output contains the plaintext")
	}
	return sealed
}

func (s *suite) unsealOK(t *testing.T, ctx context.Context, p anchor.Provider, sealed, want []byte, ac anchor.Context) {
	t.Helper()
	got, err := p.Unseal(ctx, sealed, ac)
	if err != nil {
		s.noLeak(t, err, want)
		t.Fatalf("Unseal: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Unseal returned other bytes than were sealed")
	}
	clear(got)
}

func (s *suite) roundTrip(t *testing.T) {
	p, ctx := s.open(t)
	for i := range 4 {
		ac := anchor.Context{Region: "eu-west-1", Tenant: fmt.Sprintf("tenant-%d", i), Version: uint32(i + 1)}
		k := newKey(t)
		in := bytes.Clone(k)
		sealed := s.seal(t, ctx, p, k, ac)
		if !bytes.Equal(k, in) {
			t.Fatal("Seal modified its plaintext argument")
		}
		s.unsealOK(t, ctx, p, sealed, k, ac)
	}
	// The size limits are inclusive.
	for _, n := range []int{1, anchor.MaxPlaintextSize} {
		pt := bytes.Repeat([]byte{0xa5}, n)
		s.unsealOK(t, ctx, p, s.seal(t, ctx, p, pt, testCtx), pt, testCtx)
	}
	// A long name and the largest version still bind.
	ac := anchor.Context{Region: strings.Repeat("r", 64), Tenant: strings.Repeat("t", 64), Version: ^uint32(0)}
	k := newKey(t)
	s.unsealOK(t, ctx, p, s.seal(t, ctx, p, k, ac), k, ac)
}

func (s *suite) distinct(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	a := s.seal(t, ctx, p, k, testCtx)
	b := s.seal(t, ctx, p, k, testCtx)
	if bytes.Equal(a, b) {
		t.Fatal("two Seals of the same key and Context returned the same blob")
	}
	s.unsealOK(t, ctx, p, a, k, testCtx)
	s.unsealOK(t, ctx, p, b, k, testCtx)
}

func (s *suite) wrongContext(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)
	others := map[string]anchor.Context{
		"region":  {Region: "eu-west-2", Tenant: testCtx.Tenant, Version: testCtx.Version},
		"tenant":  {Region: testCtx.Region, Tenant: "acme2", Version: testCtx.Version},
		"version": {Region: testCtx.Region, Tenant: testCtx.Tenant, Version: testCtx.Version + 1},
		// Moving bytes between fields must not help: the encoding is
		// unambiguous.
		"shifted": {Region: "eu-west-1a", Tenant: "cme", Version: testCtx.Version},
	}
	for name, ac := range others {
		pt, err := p.Unseal(ctx, sealed, ac)
		if pt != nil {
			t.Errorf("%s: Unseal returned plaintext under the wrong Context", name)
		}
		s.wantDenied(t, "wrong "+name, err, anchor.ErrInvalidCiphertext)
		s.noLeak(t, err, k)
	}
	s.unsealOK(t, ctx, p, sealed, k, testCtx)
}

// positions returns up to max indexes in [0, n), all of them if n is
// small, else an even spread that includes the first and last bytes.
func positions(n, max int) []int {
	var out []int
	if n <= max {
		for i := range n {
			out = append(out, i)
		}
		return out
	}
	for i := range max {
		out = append(out, i*(n-1)/(max-1))
	}
	return out
}

func (s *suite) tampered(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)
	for _, i := range positions(len(sealed), 256) {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(sealed)
			bad[i] ^= bit
			pt, err := p.Unseal(ctx, bad, testCtx)
			if pt != nil {
				t.Fatalf("byte %d bit %#x flipped: Unseal returned plaintext", i, bit)
			}
			s.wantDenied(t, fmt.Sprintf("byte %d bit %#x flipped", i, bit), err)
			s.noLeak(t, err, k)
		}
	}
	pt, err := p.Unseal(ctx, append(bytes.Clone(sealed), 0), testCtx)
	if pt != nil {
		t.Fatal("a byte appended: Unseal returned plaintext")
	}
	s.wantDenied(t, "a byte appended", err)
	s.unsealOK(t, ctx, p, sealed, k, testCtx)
}

func (s *suite) truncated(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)
	for _, n := range positions(len(sealed), 128) {
		pt, err := p.Unseal(ctx, sealed[:n], testCtx)
		if pt != nil {
			t.Fatalf("truncated to %d bytes: Unseal returned plaintext", n)
		}
		s.wantDenied(t, fmt.Sprintf("truncated to %d bytes", n), err)
	}
	_, err := p.Unseal(ctx, nil, testCtx)
	s.wantDenied(t, "nil blob", err, anchor.ErrInvalidCiphertext)
	_, err = p.Unseal(ctx, make([]byte, anchor.MaxSealedSize+1), testCtx)
	s.wantDenied(t, "oversized blob", err, anchor.ErrInvalidCiphertext)
}

func (s *suite) garbage(t *testing.T) {
	p, ctx := s.open(t)
	for _, n := range []int{1, 16, 60, 100, 200, 512, anchor.MaxSealedSize} {
		b := make([]byte, n)
		rand.Read(b)
		pt, err := p.Unseal(ctx, b, testCtx)
		if pt != nil {
			t.Fatalf("%d random bytes: Unseal returned plaintext", n)
		}
		s.wantDenied(t, fmt.Sprintf("%d random bytes", n), err)
	}
}

func (s *suite) badArguments(t *testing.T) {
	p, ctx := s.open(t)
	notDeniedOrTransient := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
		if anchor.IsDenied(err) || anchor.IsTransient(err) {
			t.Errorf("%s: %v: a bad argument is neither denied nor transient", what, err)
		}
	}
	for _, n := range []int{0, anchor.MaxPlaintextSize + 1, 4096} {
		_, err := p.Seal(ctx, make([]byte, n), testCtx)
		notDeniedOrTransient(fmt.Sprintf("Seal of %d bytes", n), err, anchor.ErrPlaintextSize)
	}
	_, err := p.Seal(ctx, nil, testCtx)
	notDeniedOrTransient("Seal of nil", err, anchor.ErrPlaintextSize)

	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)
	for name, ac := range map[string]anchor.Context{
		"zero":       {},
		"no region":  {Tenant: "acme", Version: 1},
		"no tenant":  {Region: "eu-west-1", Version: 1},
		"version 0":  {Region: "eu-west-1", Tenant: "acme"},
		"bad tenant": {Region: "eu-west-1", Tenant: "Acme/../x", Version: 1},
	} {
		_, err := p.Seal(ctx, k, ac)
		notDeniedOrTransient("Seal, context "+name, err, anchor.ErrInvalidContext)
		_, err = p.Unseal(ctx, sealed, ac)
		notDeniedOrTransient("Unseal, context "+name, err, anchor.ErrInvalidContext)
	}
}

func (s *suite) check(t *testing.T) {
	p, ctx := s.open(t)
	for range 3 {
		if err := p.Check(ctx); err != nil {
			t.Fatalf("Check on a usable key: %v", err)
		}
	}
}

// A caller that gives up is not the customer saying no: a done context
// must never read as a denial, or a slow network would pull the kill
// switch.
func (s *suite) canceled(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	notDenied := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s with a canceled context succeeded", what)
		} else if anchor.IsDenied(err) || !anchor.IsTransient(err) {
			t.Errorf("%s with a canceled context: %v: want transient, not denied", what, err)
		}
	}
	_, err := p.Seal(cctx, k, testCtx)
	notDenied("Seal", err)
	pt, err := p.Unseal(cctx, sealed, testCtx)
	if pt != nil {
		t.Error("Unseal with a canceled context returned plaintext")
	}
	notDenied("Unseal", err)
	notDenied("Check", p.Check(cctx))
	s.unsealOK(t, ctx, p, sealed, k, testCtx)
}

func (s *suite) describe(t *testing.T) {
	p, _ := s.open(t)
	d := p.Describe()
	if !slices.Contains(anchor.Schemes, d.Scheme) {
		t.Errorf("Describe().Scheme = %q, not one of %v", d.Scheme, anchor.Schemes)
	}
	if d.Key == "" {
		t.Error("Describe().Key is empty")
	}
	if d.Development != s.h.Development {
		t.Errorf("Describe().Development = %v, want %v", d.Development, s.h.Development)
	}
	u, err := anchor.Parse(d.URI)
	if err != nil {
		t.Errorf("Describe().URI does not parse: %v", err)
	} else if u.Scheme() != d.Scheme {
		t.Errorf("Describe().URI has scheme %q, Scheme is %q", u.Scheme(), d.Scheme)
	}
	all := fmt.Sprintf("%v %+v %#v", d, d, d)
	for _, sec := range s.h.Secrets {
		if sec != "" && strings.Contains(all, sec) {
			t.Error("Describe shows a harness secret")
		}
	}
}

func (s *suite) concurrent(t *testing.T) {
	p, ctx := s.open(t)
	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			ac := anchor.Context{Region: "eu-west-1", Tenant: fmt.Sprintf("t%d", w), Version: 1}
			for range rounds {
				k := make([]byte, 32)
				rand.Read(k)
				sealed, err := p.Seal(ctx, k, ac)
				if err != nil {
					errs <- fmt.Errorf("Seal: %w", err)
					return
				}
				got, err := p.Unseal(ctx, sealed, ac)
				if err != nil {
					errs <- fmt.Errorf("Unseal: %w", err)
					return
				}
				if !bytes.Equal(got, k) {
					errs <- errors.New("Unseal returned other bytes")
					return
				}
				if err := p.Check(ctx); err != nil {
					errs <- fmt.Errorf("Check: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
