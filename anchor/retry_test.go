package anchor

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fast is a policy that keeps the tests quick.
var fast = RetryPolicy{Attempts: 4, Initial: time.Millisecond, Max: 4 * time.Millisecond}

func TestRetrySucceedsAfterTransient(t *testing.T) {
	calls := 0
	v, err := Retry(context.Background(), fast, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, Transient("seal", "file", errors.New("throttled"))
		}
		return 42, nil
	})
	if err != nil || v != 42 || calls != 3 {
		t.Fatalf("v %d err %v after %d calls", v, err, calls)
	}
}

func TestRetryStopsOnNonTransient(t *testing.T) {
	for _, e := range []error{
		Deny("unseal", "file", ReasonDisabled, nil),
		ErrPlaintextSize,
		errors.New("unclassified"),
		errors.Join(Deny("check", "file", ReasonDestroyed, nil), Transient("check", "file", nil)),
	} {
		calls := 0
		_, err := Retry(context.Background(), RetryPolicy{Attempts: 5, Initial: time.Hour}, func(context.Context) (int, error) {
			calls++
			return 0, e
		})
		if calls != 1 || err != e {
			t.Errorf("%v: %d calls, err %v; want 1 call and the error", e, calls, err)
		}
	}
}

func TestRetryAttemptBudget(t *testing.T) {
	calls := 0
	last := Transient("seal", "file", errors.New("503"))
	_, err := Retry(context.Background(), fast, func(context.Context) (int, error) {
		calls++
		return 0, last
	})
	if calls != fast.Attempts || err != last {
		t.Fatalf("%d calls, err %v", calls, err)
	}
	calls = 0
	Retry(context.Background(), RetryPolicy{}, func(context.Context) (int, error) { calls++; return 0, last })
	if calls != 1 {
		t.Fatalf("zero policy made %d calls, want 1", calls)
	}
}

// Retry does not start a wait that would end after the deadline; it
// returns the provider's error at once rather than sleeping into a bare
// DeadlineExceeded.
func TestRetryRespectsDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := 0
	last := Transient("check", "file", errors.New("timeout"))
	start := time.Now()
	_, err := Retry(ctx, RetryPolicy{Attempts: 10, Initial: 2 * time.Minute}, func(context.Context) (int, error) {
		calls++
		return 0, last
	})
	if calls != 1 || err != last {
		t.Fatalf("%d calls, err %v", calls, err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("Retry waited although the wait could not end before the deadline")
	}
}

func TestRetryCancelWhileWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	last := Transient("check", "file", errors.New("timeout"))
	_, err := Retry(ctx, RetryPolicy{Attempts: 3, Initial: time.Hour}, func(context.Context) (int, error) {
		cancel() // cancelled during the call: Retry must not wait an hour
		return 0, last
	})
	if !errors.Is(err, last) || !errors.Is(err, context.Canceled) || !IsTransient(err) {
		t.Fatalf("err %v, want the provider's error joined with context.Canceled", err)
	}
}

func TestRetryDelay(t *testing.T) {
	p := RetryPolicy{Attempts: 10, Initial: 100 * time.Millisecond, Max: time.Second}
	for n, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := p.delay(n)
			if d < base/2 || d >= base {
				t.Fatalf("delay(%d) = %v, want in [%v, %v)", n, d, base/2, base)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("delay(%d) is hardly jittered: %d distinct values", n, len(seen))
		}
	}
	if d := (RetryPolicy{Initial: time.Second}).delay(100); d <= 0 {
		t.Errorf("uncapped delay overflowed: %v", d)
	}
}
