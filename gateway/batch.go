package gateway

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/internal/tracing"
)

// batcher coalesces concurrent requests into batch calls. A batch is sent when it holds size
// requests, or when its first request has waited wait, or as soon as no other batch is in flight,
// whichever comes first. So a lone request is delayed by at most wait (by nothing on an idle
// gateway), and requests are batched exactly while the region is busy with an earlier batch, as a
// database groups commits. With size 1 every request is sent at once, alone.
//
// send answers every request of a batch: results[i] and errs[i] answer reqs[i]. It runs on its
// own goroutine, so several batches may be in flight at once.
type batcher[Req, Res any] struct {
	size int
	wait time.Duration
	send func(ctx context.Context, reqs []Req) ([]Res, []error)
	// onBatch observes each batch's size (metrics).
	onBatch func(n int)
	// drop is called with a result nobody will read (its caller gave up), so that key material
	// in it can be wiped.
	drop func(Res)
	// tracer, if set, traces each batch (a "gateway.batch" span, op and size as attributes): its
	// parent is the first of its callers' spans that is sampled, the others' are its links.
	tracer trace.Tracer
	op     string

	// calls recycles the calls (and their channels): a call is put back by its caller once it has
	// its answer, or by the batch that answers it when its caller gave up.
	calls sync.Pool

	mu       sync.Mutex // guards pending, gen, inflight and closed
	pending  []*call[Req, Res]
	gen      uint64 // counts batches started, so that a late timer does not cut a younger batch
	inflight int    // batches sent and not yet answered
	closed   bool
	wg       sync.WaitGroup // batches in flight
}

type call[Req, Res any] struct {
	ctx  context.Context // the caller's, for its trace context only
	req  Req
	res  Res
	err  error
	done chan struct{} // 1-buffered: one send answers the call
	// abandoned is set (under the batcher's mutex) by a caller that stopped waiting.
	abandoned bool
	// then, for a call queued by submit, takes its answer (instead of done), on the goroutine of
	// the batch that answered it; notify, if set, is flushed once after every call of that batch
	// was answered, so that a connection writes its answers of one batch in one write.
	then   func(Res, error)
	notify flusher
}

// flusher is told that a batch's answers were handed to it (see call.notify).
type flusher interface{ flush() }

// newCall returns a recycled call for submit.
func (b *batcher[Req, Res]) newCall() *call[Req, Res] {
	c, _ := b.calls.Get().(*call[Req, Res])
	if c == nil {
		c = &call[Req, Res]{done: make(chan struct{}, 1)}
	}
	return c
}

// submit queues calls made with newCall, whose then takes the answer, and returns at once: the
// framed protocol's reader hands over every request of one read this way, so that they go in one
// batch with no goroutine waiting for each. The rules of do decide when a batch goes, applied once
// to the whole group.
func (b *batcher[Req, Res]) submit(cs []*call[Req, Res]) {
	if len(cs) == 0 {
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		var zero Res
		for _, c := range cs {
			then := c.then
			b.recycle(c)
			then(zero, errShutdown)
		}
		return
	}
	fresh := len(b.pending) == 0 // the group starts a batch: its timer is to start
	b.pending = append(b.pending, cs...)
	for len(b.pending) >= b.size {
		b.flushLocked(b.size)
		fresh = true
	}
	switch {
	case len(b.pending) == 0:
	case b.wait == 0 || b.inflight == 0:
		b.flushLocked(len(b.pending))
	case fresh:
		b.startTimerLocked()
	}
	b.mu.Unlock()
}

// startTimerLocked sends what is pending once wait has passed, unless it was sent before.
func (b *batcher[Req, Res]) startTimerLocked() {
	gen := b.gen
	time.AfterFunc(b.wait, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.gen == gen && len(b.pending) > 0 {
			b.flushLocked(len(b.pending))
		}
	})
}

// do queues req and waits for its answer or for ctx to end.
func (b *batcher[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	c, _ := b.calls.Get().(*call[Req, Res])
	if c == nil {
		c = &call[Req, Res]{done: make(chan struct{}, 1)}
	}
	c.ctx, c.req = ctx, req
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.recycle(c)
		var zero Res
		return zero, errShutdown
	}
	b.pending = append(b.pending, c)
	switch {
	case len(b.pending) >= b.size || b.wait == 0 || b.inflight == 0:
		b.flushLocked(len(b.pending))
	case len(b.pending) == 1:
		b.startTimerLocked()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-c.done:
			b.mu.Unlock()
		default:
			c.abandoned = true // the batch recycles c
			b.mu.Unlock()
			var zero Res
			return zero, errOr(nil, ctx.Err())
		}
	}
	res, err := c.res, c.err
	b.recycle(c)
	return res, err
}

// recycle clears c and puts it back for another request.
func (b *batcher[Req, Res]) recycle(c *call[Req, Res]) {
	var zr Req
	var zs Res
	c.ctx, c.req, c.res, c.err, c.abandoned, c.then, c.notify = nil, zr, zs, nil, false, nil, nil
	b.calls.Put(c)
}

// flushLocked sends the first n pending requests as one batch. The caller holds b.mu.
func (b *batcher[Req, Res]) flushLocked(n int) {
	batch := b.pending[:n:n]
	if rest := b.pending[n:]; len(rest) > 0 {
		b.pending = append([]*call[Req, Res](nil), rest...)
	} else {
		b.pending = nil
	}
	b.gen++
	b.inflight++
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if b.onBatch != nil {
			b.onBatch(len(batch))
		}
		reqs := make([]Req, len(batch))
		for i, c := range batch {
			reqs[i] = c.req
		}
		// The batch serves several callers: it runs to its own deadline (the pool's attempts),
		// not to any one caller's.
		ctx := context.Background()
		if b.tracer != nil {
			var span trace.Span
			ctx, span = b.startSpan(batch)
			defer span.End()
		}
		res, errs := b.send(ctx, reqs)
		b.mu.Lock()
		b.inflight--
		if b.inflight == 0 && len(b.pending) > 0 {
			// What queued behind this batch goes now, without waiting out its timer.
			b.flushLocked(min(len(b.pending), b.size))
		}
		async := false
		for i, c := range batch {
			if c.then != nil {
				async = true // answered below, outside the lock
				continue
			}
			if c.abandoned {
				if errs[i] == nil && b.drop != nil {
					b.drop(res[i])
				}
				b.recycle(c)
				continue
			}
			c.res, c.err = res[i], errs[i]
			c.done <- struct{}{}
		}
		b.mu.Unlock()
		if async {
			b.answerAsync(batch, res, errs)
		}
	}()
}

// answerAsync hands the answers of a batch's submitted calls to their then, and flushes each of
// their notify once.
func (b *batcher[Req, Res]) answerAsync(batch []*call[Req, Res], res []Res, errs []error) {
	var notified []flusher
	for i, c := range batch {
		if c.then == nil {
			continue
		}
		then, f := c.then, c.notify
		b.recycle(c)
		then(res[i], errs[i])
		if f != nil && !slices.Contains(notified, f) {
			notified = append(notified, f)
		}
	}
	for _, f := range notified {
		f.flush()
	}
}

// startSpan starts the span of a batch (see batcher.tracer).
func (b *batcher[Req, Res]) startSpan(batch []*call[Req, Res]) (context.Context, trace.Span) {
	var parent trace.SpanContext
	var links []trace.Link
	for _, c := range batch {
		sc := trace.SpanContextFromContext(c.ctx)
		switch {
		case !sc.IsValid():
		case !parent.IsSampled() && sc.IsSampled():
			if parent.IsValid() {
				links = append(links, trace.Link{SpanContext: parent})
			}
			parent = sc
		default:
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return tracing.StartSpanWith(trace.ContextWithSpanContext(context.Background(), parent), b.tracer, "gateway.batch",
		trace.WithLinks(links...),
		trace.WithAttributes(tracing.Op.String(b.op), tracing.BatchSize.Int(len(batch))))
}

// close refuses new requests, sends what is pending and waits for every batch in flight.
func (b *batcher[Req, Res]) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		if len(b.pending) > 0 {
			b.flushLocked(len(b.pending))
		}
	}
	b.mu.Unlock()
	b.wg.Wait()
}
