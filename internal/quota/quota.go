// Package quota enforces per-tenant and per-service quotas (a token bucket of requests per second
// with a burst, and a bound on calls in flight) for the region's wrap path and the gateway's data
// key path, and builds the ResourceExhausted answer with a google.rpc.RetryInfo detail.
//
// The token bucket is golang.org/x/time/rate's; only the bound on calls in flight (an atomic
// counter: a semaphore that refuses rather than waits) and the admission of one call against
// several buckets at once (tenant and service, all or nothing) are written here.
package quota

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Limits is a quota: Rate requests per second with a bucket of Burst (0: Rate), and at most
// Concurrency calls in flight. A field 0 is that dimension unlimited.
type Limits struct {
	Rate, Burst, Concurrency uint32
}

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l == Limits{} }

func (l Limits) burst() int {
	if l.Burst != 0 {
		return int(l.Burst)
	}
	return int(l.Rate)
}

func (l Limits) String() string {
	if l.IsZero() {
		return "unlimited"
	}
	s := ""
	if l.Rate != 0 {
		s = fmt.Sprintf("rate %d/s, burst %d", l.Rate, l.burst())
	}
	if l.Concurrency != 0 {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("concurrency %d", l.Concurrency)
	}
	return s
}

// FromProto reads a quota from the wire (nil: none).
func FromProto(q *kv1.Quota) Limits {
	return Limits{Rate: q.GetRate(), Burst: q.GetBurst(), Concurrency: q.GetConcurrency()}
}

// ToProto is the wire form of l; nil for no quota.
func ToProto(l Limits) *kv1.Quota {
	if l.IsZero() {
		return nil
	}
	return &kv1.Quota{Rate: l.Rate, Burst: l.Burst, Concurrency: l.Concurrency}
}

// Bucket enforces one quota. Set changes it in place, so that calls in flight stay counted.
type Bucket struct {
	mu       sync.Mutex // serialises Set
	state    atomic.Pointer[bucketState]
	inflight atomic.Int64
}

// bucketState is a quota with its token bucket (nil without a rate); replaced whole by Set.
type bucketState struct {
	limits Limits
	lim    *rate.Limiter
}

// NewBucket returns a bucket enforcing l, its token bucket full.
func NewBucket(l Limits) *Bucket {
	b := &Bucket{}
	b.Set(l)
	return b
}

// Set changes the quota. A new rate or burst starts a full token bucket (rate.NewLimiter's); a
// change of the concurrency bound alone keeps the tokens.
func (b *Bucket) Set(l Limits) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.state.Load()
	if old != nil && old.limits == l {
		return
	}
	next := &bucketState{limits: l}
	switch {
	case l.Rate == 0:
	case old != nil && old.lim != nil && old.limits.Rate == l.Rate && old.limits.burst() == l.burst():
		next.lim = old.lim
	default:
		next.lim = rate.NewLimiter(rate.Limit(l.Rate), l.burst())
	}
	b.state.Store(next)
}

// Limits returns the quota the bucket enforces.
func (b *Bucket) Limits() Limits { return b.state.Load().limits }

// InFlight is the number of calls admitted and not yet released.
func (b *Bucket) InFlight() int64 { return b.inflight.Load() }

// Exhausted reports, without taking anything, whether a call of one request would be refused by
// b now, and how long to wait: the token bucket is empty or every slot in flight is taken. It is
// the cheap check of an early admission (before a request is read); the call, if let through,
// is admitted by Admit as usual.
func (b *Bucket) Exhausted(now time.Time) (kind string, retryAfter time.Duration, exhausted bool) {
	st := b.state.Load()
	if c := st.limits.Concurrency; c != 0 && b.inflight.Load() >= int64(c) {
		return KindConcurrency, 50 * time.Millisecond, true
	}
	if st.lim == nil {
		return "", 0, false
	}
	if tokens := st.lim.TokensAt(now); tokens < 1 {
		return KindRate, time.Duration((1 - tokens) / float64(st.limits.Rate) * float64(time.Second)), true
	}
	return "", 0, false
}

// Refusal kinds, the values of the kind label of the refusal metrics.
const (
	KindRate        = "rate"
	KindConcurrency = "concurrency"
	KindBatch       = "batch" // a batch larger than the burst: never admitted, split it
)

// Refusal says why Admit refused a call: which of its buckets (Index) and what to wait.
type Refusal struct {
	Kind       string
	Index      int
	Limits     Limits
	RetryAfter time.Duration // 0 for KindBatch (waiting does not help)
	Items      int
}

// Admit admits a call of items requests against every bucket of bs (nil ones are skipped), all or
// nothing: it takes a slot in flight from each bucket with a concurrency bound, then items tokens
// from each with a rate. On success release gives the slots back (call it once, when the call
// ends); on refusal nothing is held.
func Admit(now time.Time, items int, bs ...*Bucket) (release func(), refused *Refusal) {
	var held []*Bucket
	undo := func() {
		for _, b := range held {
			b.inflight.Add(-1)
		}
	}
	for i, b := range bs {
		if b == nil {
			continue
		}
		l := b.Limits()
		if l.Concurrency == 0 {
			continue
		}
		if b.inflight.Add(1) > int64(l.Concurrency) {
			b.inflight.Add(-1)
			undo()
			// A slot frees when a call ends: a short wait is the honest hint.
			return nil, &Refusal{Kind: KindConcurrency, Index: i, Limits: l, RetryAfter: 50 * time.Millisecond, Items: items}
		}
		held = append(held, b)
	}
	var taken []*rate.Reservation
	for i, b := range bs {
		if b == nil {
			continue
		}
		st := b.state.Load()
		l := st.limits
		if st.lim == nil {
			continue
		}
		r := st.lim.ReserveN(now, items)
		if !r.OK() {
			for _, t := range taken {
				t.CancelAt(now)
			}
			undo()
			return nil, &Refusal{Kind: KindBatch, Index: i, Limits: l, Items: items}
		}
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			for _, t := range taken {
				t.CancelAt(now)
			}
			undo()
			return nil, &Refusal{Kind: KindRate, Index: i, Limits: l, RetryAfter: d, Items: items}
		}
		taken = append(taken, r)
	}
	if len(held) == 0 {
		return func() {}, nil
	}
	var once sync.Once
	return func() { once.Do(undo) }, nil
}

// Status is the gRPC answer to a refused call: ResourceExhausted, the message (which names the
// quota and how to raise it), and a google.rpc.RetryInfo detail with r.RetryAfter (none for a
// batch larger than the burst, which waiting does not admit).
func Status(r *Refusal, msg string) *status.Status {
	st := status.New(codes.ResourceExhausted, msg)
	if r.RetryAfter <= 0 {
		return st
	}
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(r.RetryAfter)}); err == nil {
		return d
	}
	return st
}

// Describe says what r refused, for an error message: "tenant acme's quota (rate 10/s, burst 10)
// is exhausted; retry in 100ms".
func Describe(r *Refusal, whose string) string {
	switch r.Kind {
	case KindConcurrency:
		return fmt.Sprintf("%s quota (%s) is exhausted: %d calls already in flight; retry when one ends", whose, r.Limits, r.Limits.Concurrency)
	case KindBatch:
		return fmt.Sprintf("a batch of %d items exceeds %s quota burst (%s), so it can never be admitted; split it into batches of at most %d items", r.Items, whose, r.Limits, r.Limits.burst())
	}
	return fmt.Sprintf("%s quota (%s) is exhausted; retry in %s", whose, r.Limits, max(r.RetryAfter, time.Millisecond).Round(time.Millisecond))
}
