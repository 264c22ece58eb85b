package gateway

import (
	"context"
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
		b.flushLocked()
	case len(b.pending) == 1:
		gen := b.gen
		time.AfterFunc(b.wait, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.gen == gen && len(b.pending) > 0 {
				b.flushLocked()
			}
		})
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
	c.ctx, c.req, c.res, c.err, c.abandoned = nil, zr, zs, nil, false
	b.calls.Put(c)
}

// flushLocked sends what is pending as one batch. The caller holds b.mu.
func (b *batcher[Req, Res]) flushLocked() {
	batch := b.pending
	b.pending = nil
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
		defer b.mu.Unlock()
		b.inflight--
		if b.inflight == 0 && len(b.pending) > 0 {
			// What queued behind this batch goes now, without waiting out its timer.
			b.flushLocked()
		}
		for i, c := range batch {
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
	}()
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
			b.flushLocked()
		}
	}
	b.mu.Unlock()
	b.wg.Wait()
}
