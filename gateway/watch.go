package gateway

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// watcher keeps one WatchKeyEvents stream open to a serving region node while the cache or
// delegated wrapping is on: it applies the node's events to the cache and the delegated keys
// (wiping before acknowledging, which the node's fence waits for) and holds the cache lease
// without which no cached key is served and no delegated key used. See region/keyevents.go for
// the node's side and docs/gateway.md for why this makes revocation exact.
type watcher struct {
	pool  *pool
	sinks []keyEventSink // the cache and the delegated keys, those that are on
	log   *slog.Logger

	epoch time.Time    // origin of the monotonic readings below
	until atomic.Int64 // nanoseconds since epoch when the cache lease ends; 0: none

	stop chan struct{}
	wg   sync.WaitGroup
}

// keyEventSink is what holds keys the region's events concern: the cache of unwrapped keys and the
// delegated wrapping keys. Each wipes what an event concerns before it returns; the watcher
// acknowledges the event after.
type keyEventSink interface {
	revoke(scope wrap.KeyID)  // wipe everything under scope and deny it from now on
	reset(deny []wrap.KeyID)  // wipe everything; deny exactly these from now on
	denyAll()                 // use nothing until the next reset
	rotated(scope wrap.KeyID) // a service\'s current version changed
}

func (w *watcher) revoke(scope wrap.KeyID) {
	for _, s := range w.sinks {
		s.revoke(scope)
	}
}

func (w *watcher) reset(deny []wrap.KeyID) {
	for _, s := range w.sinks {
		s.reset(deny)
	}
}

func (w *watcher) rotated(scope wrap.KeyID) {
	for _, s := range w.sinks {
		s.rotated(scope)
	}
}

func (w *watcher) denyAll() {
	for _, s := range w.sinks {
		s.denyAll()
	}
}

func newWatcher(p *pool, log *slog.Logger) *watcher {
	return &watcher{pool: p, log: log, epoch: time.Now(), stop: make(chan struct{})}
}

func (w *watcher) now() int64 { return int64(time.Since(w.epoch)) }

// leaseValid says whether cached keys may be served now.
func (w *watcher) leaseValid() bool {
	u := w.until.Load()
	return u != 0 && w.now() < u
}

func (w *watcher) start() {
	w.wg.Add(1)
	go w.run()
}

func (w *watcher) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *watcher) run() {
	defer w.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		var err error
		if e := w.pool.pick(nil); e != nil {
			err = w.session(e)
			w.until.Store(0)
			if err == nil {
				backoff = 50 * time.Millisecond
			} else {
				w.log.Debug("key-event stream ended", "node", e.id(), "code", status.Code(err).String())
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-w.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
}

// session runs one stream until it breaks or the gateway closes.
func (w *watcher) session(e *endpoint) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := e.wrap.WatchKeyEvents(ctx)
	w.pool.metrics.rpc("WatchKeyEvents", err)
	if err != nil {
		return err
	}
	var (
		mu     sync.Mutex // guards sentAt and every
		sentAt = map[uint64]int64{}
		every  = 50 * time.Millisecond // renewal period until the first lease says how long it is
		out    = make(chan *kv1.WatchKeyEventsRequest, 64)
		done   = make(chan struct{})
		sendWG sync.WaitGroup
	)
	defer func() { close(done); cancel(); sendWG.Wait() }()
	// One goroutine sends (a gRPC stream's Send is not safe for concurrent use): renewals on a
	// timer, acknowledgements as the receive loop queues them.
	sendWG.Add(1)
	go func() {
		defer sendWG.Done()
		var seq uint64
		renew := func() error {
			seq++
			mu.Lock()
			sentAt[seq] = w.now()
			mu.Unlock()
			return stream.Send(&kv1.WatchKeyEventsRequest{RenewSeq: seq})
		}
		if renew() != nil {
			return
		}
		for {
			mu.Lock()
			d := every
			mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-done:
				t.Stop()
				return
			case <-w.stop:
				t.Stop()
				cancel()
				return
			case req := <-out:
				t.Stop()
				if stream.Send(req) != nil {
					return
				}
			case <-t.C:
				if w.pool.activeRegion() != e.region {
					// The gateway moved to another region (failover or failback): follow it, so
					// that the cache lease comes from the region the calls go to.
					cancel()
					return
				}
				if renew() != nil {
					return
				}
			}
		}
	}()
	ack := func(index uint64) {
		select {
		case out <- &kv1.WatchKeyEventsRequest{AckIndex: index}:
		case <-ctx.Done():
		}
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch ev.GetKind() {
		case kv1.KeyEventKind_KEY_EVENT_KIND_SNAPSHOT:
			var deny []wrap.KeyID
			for _, s := range ev.GetUnusable() {
				deny = append(deny, scopeID(s))
			}
			w.reset(deny)
		case kv1.KeyEventKind_KEY_EVENT_KIND_REVOKED, kv1.KeyEventKind_KEY_EVENT_KIND_LOCKED:
			w.log.Info("key event: dropping cached keys", "kind", ev.GetKind().String(), "tenant", ev.GetScope().GetTenant(),
				"service", ev.GetScope().GetService(), "version", ev.GetScope().GetVersion(), "index", ev.GetIndex())
			w.revoke(scopeID(ev.GetScope()))
			ack(ev.GetIndex())
		case kv1.KeyEventKind_KEY_EVENT_KIND_ROTATED:
			// Not fenced and owed no acknowledgement: new data keys go under the new version.
			w.rotated(scopeID(ev.GetScope()))
		case kv1.KeyEventKind_KEY_EVENT_KIND_FLUSH:
			// The node's whole state was replaced: drop everything and start a new stream, whose
			// snapshot says afresh what is unusable.
			w.until.Store(0)
			w.reset(nil)
			w.denyAll()
			w.pool.refreshNow() // a policy change flushes too: learn the new policy at once
			ack(ev.GetIndex())
			return status.Error(codes.Aborted, "gateway: region state restored; resubscribing")
		case kv1.KeyEventKind_KEY_EVENT_KIND_LEASE:
			mu.Lock()
			sent, ok := sentAt[ev.GetRenewSeq()]
			for s := range sentAt {
				if s <= ev.GetRenewSeq() {
					delete(sentAt, s)
				}
			}
			d := ev.GetLease().AsDuration()
			if d > 0 {
				every = max(d/3, time.Millisecond)
			}
			mu.Unlock()
			if !ok || d <= 0 {
				// The node no longer holds a serving lease long enough: serve nothing from the
				// cache, and go find a node that does.
				return status.Error(codes.Unavailable, "gateway: the node grants no cache lease")
			}
			// Counted from when the renewal was sent: delay only shortens the lease.
			for {
				cur := w.until.Load()
				if sent+int64(d) <= cur || w.until.CompareAndSwap(cur, sent+int64(d)) {
					break
				}
			}
		}
	}
}

func scopeID(s *kv1.KeyScope) wrap.KeyID {
	return wrap.KeyID{Tenant: s.GetTenant(), Service: s.GetService(), Version: s.GetVersion()}
}
