package anchortest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor"
)

func (s *suite) close(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)
	for i := range 2 {
		if err := p.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := p.Seal(ctx, k, testCtx); !errors.Is(err, anchor.ErrClosed) {
		t.Errorf("Seal after Close: %v, want ErrClosed", err)
	}
	if _, err := p.Unseal(ctx, sealed, testCtx); !errors.Is(err, anchor.ErrClosed) {
		t.Errorf("Unseal after Close: %v, want ErrClosed", err)
	}
	if err := p.Check(ctx); !errors.Is(err, anchor.ErrClosed) {
		t.Errorf("Check after Close: %v, want ErrClosed", err)
	}
	if p.Describe().Scheme == "" {
		t.Error("Describe after Close is empty")
	}
}

func (s *suite) reopen(t *testing.T) {
	p, ctx := s.open(t)
	q := s.h.Reopen(t, p)
	t.Cleanup(func() { q.Close() })
	k1, k2 := newKey(t), newKey(t)
	s.unsealOK(t, ctx, q, s.seal(t, ctx, p, k1, testCtx), k1, testCtx)
	s.unsealOK(t, ctx, p, s.seal(t, ctx, q, k2, testCtx), k2, testCtx)
	// Closing one does not close the other.
	p.Close()
	if err := q.Check(ctx); err != nil {
		t.Fatalf("Check on the reopened provider after closing the first: %v", err)
	}
}

// eventually calls f until it returns nil or ctx ends; providers whose
// control plane is eventually consistent need a moment after Enable.
func eventually(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (s *suite) disable(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)

	s.h.Disable(t, p)
	var reasons []error
	if s.h.ExactReasons {
		reasons = []error{anchor.ErrDisabled}
	}
	if err := eventually(ctx, func() error {
		if err := p.Check(ctx); !anchor.IsDenied(err) {
			return fmt.Errorf("Check after Disable: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.wantDenied(t, "Check after Disable", p.Check(ctx), reasons...)
	_, err := p.Seal(ctx, k, testCtx)
	s.wantDenied(t, "Seal after Disable", err, reasons...)
	s.noLeak(t, err, k)
	pt, err := p.Unseal(ctx, sealed, testCtx)
	if pt != nil {
		t.Error("Unseal after Disable returned plaintext")
	}
	s.wantDenied(t, "Unseal after Disable", err, reasons...)
	s.noLeak(t, err, k)

	// Retry must not retry a denial: one attempt, at once.
	calls := 0
	_, err = anchor.Retry(ctx, anchor.RetryPolicy{Attempts: 5, Initial: time.Hour}, func(ctx context.Context) ([]byte, error) {
		calls++
		return p.Unseal(ctx, sealed, testCtx)
	})
	if !anchor.IsDenied(err) || calls != 1 {
		t.Errorf("Retry of a denied Unseal: %d calls, err %v; want 1 call and the denial", calls, err)
	}

	if s.h.Enable == nil {
		return
	}
	s.h.Enable(t, p)
	if err := eventually(ctx, func() error { return p.Check(ctx) }); err != nil {
		t.Fatalf("Check after Enable: %v", err)
	}
	s.unsealOK(t, ctx, p, sealed, k, testCtx)
	k2 := newKey(t)
	s.unsealOK(t, ctx, p, s.seal(t, ctx, p, k2, testCtx), k2, testCtx)
}

func (s *suite) destroy(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)
	s.h.Destroy(t, p)
	var reasons []error
	if s.h.ExactReasons {
		reasons = []error{anchor.ErrDestroyed, anchor.ErrPendingDeletion}
	}
	if err := eventually(ctx, func() error {
		if err := p.Check(ctx); !anchor.IsDenied(err) {
			return fmt.Errorf("Check after Destroy: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.wantDenied(t, "Check after Destroy", p.Check(ctx), reasons...)
	_, err := p.Seal(ctx, k, testCtx)
	s.wantDenied(t, "Seal after Destroy", err, reasons...)
	pt, err := p.Unseal(ctx, sealed, testCtx)
	if pt != nil {
		t.Error("Unseal after Destroy returned plaintext")
	}
	s.wantDenied(t, "Unseal after Destroy", err, reasons...)
	s.noLeak(t, err, k)
}

func (s *suite) transient(t *testing.T) {
	p, ctx := s.open(t)
	k := newKey(t)
	sealed := s.seal(t, ctx, p, k, testCtx)

	restore := s.h.FailTransiently(t, p)
	restored := false
	defer func() {
		if !restored {
			restore()
		}
	}()
	wantTransient := func(what string, err error) {
		t.Helper()
		if !anchor.IsTransient(err) || anchor.IsDenied(err) || !errors.Is(err, anchor.ErrUnavailable) {
			t.Errorf("%s: %v: want a *anchor.TransientError and no denial", what, err)
		}
		s.noLeak(t, err, k)
	}
	wantTransient("Check", p.Check(ctx))
	_, err := p.Seal(ctx, k, testCtx)
	wantTransient("Seal", err)
	pt, err := p.Unseal(ctx, sealed, testCtx)
	if pt != nil {
		t.Error("Unseal returned plaintext while failing")
	}
	wantTransient("Unseal", err)

	// Retry retries transient failures up to its attempt budget.
	calls := 0
	_, err = anchor.Retry(ctx, anchor.RetryPolicy{Attempts: 3, Initial: time.Millisecond, Max: 2 * time.Millisecond},
		func(ctx context.Context) ([]byte, error) {
			calls++
			return p.Unseal(ctx, sealed, testCtx)
		})
	if calls != 3 {
		t.Errorf("Retry made %d calls while the provider fails transiently, want 3", calls)
	}
	wantTransient("Retry", err)

	restore()
	restored = true
	if err := eventually(ctx, func() error { return p.Check(ctx) }); err != nil {
		t.Fatalf("Check after restore: %v", err)
	}
	s.unsealOK(t, ctx, p, sealed, k, testCtx)
}
