package region

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/transport"
)

// barriers coalesces read barriers (cluster.Barrier) so that a burst of requests for keys this node
// does not know yet costs the leader one round trip, not one each, while keeping NOT_FOUND
// linearizable: a caller only ever joins a barrier that started after it arrived. A barrier that
// was already in flight when the caller came may have taken its read index before the write the
// caller depends on (a key created a moment ago on another node), so such a caller waits for the
// next barrier, which starts as soon as the one in flight ends and serves every caller queued
// behind it. (golang.org/x/sync/singleflight joins whatever is in flight, which is exactly the bug.)
type barriers struct {
	mu      sync.Mutex
	running bool         // a barrier is in flight
	next    *barrierTurn // the turn callers that arrived during the one in flight will share
}

// barrierTurn is one barrier and everyone waiting on it.
type barrierTurn struct {
	done    chan struct{}
	err     error
	waiters int // callers sharing this turn, under barriers.mu: tests wait on it, not on time
}

// catchUp returns once this node has applied every write committed before the call (a read barrier
// through the leader), or an error if it cannot know: no leader, or this node is cut off.
func (n *Node) catchUp(ctx context.Context) error {
	return n.barriers.do(ctx, func() error {
		// Others may share this barrier: it does not end with the first caller's context.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return n.cl.Barrier(ctx)
	})
}

// do returns the result of a run of barrier that started after do was called, sharing it with
// every caller that arrived while the previous run was in flight.
func (b *barriers) do(ctx context.Context, barrier func() error) error {
	b.mu.Lock()
	if b.next == nil {
		b.next = &barrierTurn{done: make(chan struct{})}
	}
	turn := b.next
	turn.waiters++
	if !b.running {
		b.running = true
		b.next = nil
		go b.run(turn, barrier)
	}
	b.mu.Unlock()
	select {
	case <-turn.done:
		return turn.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run runs turn's barrier, then the turns queued meanwhile, one at a time, until none is left.
func (b *barriers) run(turn *barrierTurn, barrier func() error) {
	for turn != nil {
		turn.err = barrier()
		close(turn.done)
		b.mu.Lock()
		turn, b.next = b.next, nil
		if turn == nil {
			b.running = false
		}
		b.mu.Unlock()
	}
}

// errCannotKnow is the answer of a node that finds no such key, tenant or service in its own state
// and cannot catch up with the leader to make sure: it may only lag (DESIGN.md, "Catching up before NotFound").
var errCannotKnow = transport.Coded(codes.Unavailable, "region: this node cannot reach the leader to learn whether the key exists; try another node")

// freshRead reads local state with read; if that finds the tenant, service or version missing, the
// node may only lag behind a write acknowledged elsewhere, so it catches up and reads again. A node
// that cannot catch up answers Unavailable, never NotFound.
func freshRead[T any](ctx context.Context, n *Node, read func() (T, error)) (T, error) {
	v, err := read()
	if !isNotFound(err) {
		return v, err
	}
	// The wait for the leader's read barrier: the span shows a call that had to catch up.
	_, span := tracing.StartSpan(ctx, n.tracer, "region.catch-up")
	cerr := n.catchUp(ctx)
	span.End()
	if cerr != nil {
		var zero T
		if errors.Is(cerr, context.Canceled) || (errors.Is(cerr, context.DeadlineExceeded) && ctx.Err() != nil) {
			return zero, ctx.Err()
		}
		return zero, errCannotKnow
	}
	return read()
}
