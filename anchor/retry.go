package anchor

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// A RetryPolicy says how Retry backs off. The zero value is not useful;
// start from DefaultRetryPolicy.
type RetryPolicy struct {
	// Attempts is the most calls Retry makes, the first included. 1 means
	// no retry.
	Attempts int

	// Initial is the base delay before the second attempt; each later
	// attempt doubles it, up to Max.
	Initial time.Duration

	// Max caps the base delay; 0 means no cap.
	Max time.Duration
}

// DefaultRetryPolicy returns 5 attempts with delays of about 100 ms,
// 200 ms, 400 ms and 800 ms (jittered): under two seconds in all, short
// next to the region leader's check period and grace period, long enough
// to ride out a KMS throttling burst.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Attempts: 5, Initial: 100 * time.Millisecond, Max: 2 * time.Second}
}

// Retry calls op until it succeeds, returns an error that is not
// transient (see IsTransient), has been called p.Attempts times, or the
// next wait would end after ctx's deadline. It returns op's last result
// and error; if ctx ends while waiting, the error joins op's last error
// with ctx's.
//
//	pt, err := anchor.Retry(ctx, anchor.DefaultRetryPolicy(), func(ctx context.Context) ([]byte, error) {
//		return p.Unseal(ctx, sealed, ac)
//	})
//
// Denials are never retried: the customer's "no" must reach the kill
// switch at once, not after a backoff.
//
// The delay before attempt n+1 is drawn uniformly from [d/2, d) with
// d = min(Max, Initial·2^(n-1)) ("equal jitter"): the random half spreads
// the retries of many nodes apart, the fixed half makes sure a throttled
// caller does slow down.
//
// This is hand-written rather than taken from cenkalti/backoff (not in
// Krypton's module graph): what Krypton needs is the classification
// (retry only *TransientError) and deadline awareness (do not start a wait
// that cannot end before the deadline, and return the provider's error,
// not a bare context.DeadlineExceeded), which is most of these 30 lines.
func Retry[T any](ctx context.Context, p RetryPolicy, op func(context.Context) (T, error)) (T, error) {
	attempts := max(p.Attempts, 1)
	for n := 1; ; n++ {
		v, err := op(ctx)
		if err == nil || IsDenied(err) || !IsTransient(err) || n >= attempts {
			return v, err
		}
		wait := p.delay(n)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// delay returns the wait after the n-th failed attempt (n ≥ 1).
func (p RetryPolicy) delay(n int) time.Duration {
	d := p.Initial
	for i := 1; i < n && d < 1<<40; i++ { // 1<<40 ns: 18 minutes, no overflow
		d *= 2
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	if d <= 1 {
		return max(d, 0)
	}
	half := d / 2
	return half + rand.N(d-half)
}
