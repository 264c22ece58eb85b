package region

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Key events tell gateways that cache unwrapped data keys which keys just became unusable
// (WrapService.WatchKeyEvents). The promise of the revocation fence ("once Revoke returns, nothing
// in the region uses the key") must hold for such a cache too, so:
//
//   - onChange queues each relevant change for every watcher of the tenant, in log order, as the
//     node applies it (inside FSM.Apply, so before AppliedIndex passes it);
//   - the node reports an index as applied to a fence (waitApplied, through settled) only once
//     every watcher has acknowledged every event up to it, or that watcher's cache lease has run
//     out; a watcher whose stream broke stays as a tombstone until then;
//   - a watcher that leaves an event unacknowledged for longer than Config.KeyEventAckWait is cut
//     (its stream ends, its renewals are refused): it then holds fences back only until the cache
//     lease it already holds runs out, not for as long as it keeps renewing (cut below);
//   - a cache lease is granted only while this node's own serving lease outlasts it, so a node
//     that is fenced by lease expiry has stopped every cache it fed by then too.
//
// A gateway counts its cache lease from when it sent the renewal, on its own clock; the node
// counts it from when it received it, stretched by ClockDrift.

// keyEventsMaxQueue bounds the events queued for one watcher; a watcher that falls further behind
// is cut off (its stream ends; it becomes a tombstone until its lease runs out).
const keyEventsMaxQueue = 4096

// cacheLeaseFraction is the cache lease as a fraction of the serving lease: much shorter, so that
// a node can always grant one inside its own lease.
const cacheLeaseFraction = 4

type keyEvents struct {
	l       *lease        // the node's serving lease, and its monotonic clock
	drift   float64       // Config.ClockDrift
	ackWait time.Duration // Config.KeyEventAckWait: how long an event may go unacknowledged
	// onCut, if set, reports a watcher that was cut (the node's metric and log line). It runs
	// under mu.
	onCut func(w *keyWatcher, reason string, err error)

	mu       sync.Mutex // guards watchers and every watcher's fields
	watchers map[*keyWatcher]struct{}
}

type keyWatcher struct {
	tenant     string
	who        string // the caller's identity, for the log line of a cut
	queue      []*kv1.KeyEvent
	kick       chan struct{} // 1-buffered: queue has grown
	unacked    []unacked     // queued or sent events not yet acknowledged, ascending by index
	leaseUntil int64         // lease.now() reading at which the watcher's cache lease surely ended
	closed     bool          // the stream ended: a tombstone until leaseUntil
	cutErr     error         // why the node cut the watcher off; the stream ends with it
}

// unacked is an event a watcher owes an acknowledgement for.
type unacked struct {
	index uint64
	at    int64 // lease.now() reading when the event was queued
}

// Reasons a watcher is cut off, for the metric's label.
const (
	cutBehind  = "behind"         // more than keyEventsMaxQueue events queued
	cutUnacked = "unacknowledged" // an event left unacknowledged for longer than ackWait
)

var errWatcherBehind = transport.Coded(codes.ResourceExhausted, "region: key-event watcher fell too far behind; subscribe again")

// DefaultKeyEventAckWait is Config.KeyEventAckWait's default.
const DefaultKeyEventAckWait = 2 * time.Second

func newKeyEvents(l *lease, drift float64) *keyEvents {
	return &keyEvents{l: l, drift: drift, ackWait: DefaultKeyEventAckWait, watchers: map[*keyWatcher]struct{}{}}
}

// cut ends w's stream (its sender sees closed and ends it with err) and refuses its renewals from
// now on, so it stays in the set fences wait for only until the cache lease it holds runs out.
// Run under k.mu.
func (k *keyEvents) cut(w *keyWatcher, reason string, err error) {
	w.closed = true
	w.cutErr = err
	w.signal()
	if k.onCut != nil {
		k.onCut(w, reason, err)
	}
}

// cutIfLate cuts w if it has left an event unacknowledged for longer than ackWait: a watcher that
// renews its cache lease without acknowledging would otherwise hold every fence of its tenant for
// as long as the node's own lease (docs/security.md). Run under k.mu.
func (k *keyEvents) cutIfLate(w *keyWatcher, now int64) {
	if w.closed || len(w.unacked) == 0 {
		return
	}
	first := w.unacked[0]
	if late := time.Duration(now - first.at); late > k.ackWait {
		k.cut(w, cutUnacked, transport.Coded(codes.Aborted, fmt.Sprintf(
			"region: key event %d was not acknowledged within %v; subscribe again, and acknowledge each event once its keys are dropped",
			first.index, k.ackWait)))
	}
}

// keyEventFor maps an applied change to the event watchers get; nil for changes that make no key
// unusable. The event goes to the watchers of c.Tenant, or to all when its scope is nil.
func keyEventFor(c fsm.Change) *kv1.KeyEvent {
	e := &kv1.KeyEvent{Index: c.Index, Scope: &kv1.KeyScope{Tenant: c.Tenant}}
	switch c.Kind {
	case fsm.TenantRevoked:
		e.Kind = kv1.KeyEventKind_KEY_EVENT_KIND_REVOKED
	case fsm.ServiceRevoked:
		e.Kind = kv1.KeyEventKind_KEY_EVENT_KIND_REVOKED
		e.Scope.Service = c.Service
	case fsm.KeyVersionRevoked:
		e.Kind = kv1.KeyEventKind_KEY_EVENT_KIND_REVOKED
		e.Scope.Service, e.Scope.Version = c.Service, c.Version
	case fsm.TenantLocked, fsm.AnchorDeleted, fsm.TenantRemoved:
		e.Kind = kv1.KeyEventKind_KEY_EVENT_KIND_LOCKED
	case fsm.PolicySet, fsm.TenantUnlocked, fsm.QuotaSet:
		// What the policy now allows is the region's to judge: the tenant's gateways drop their
		// cached keys and fetch them again through the region's checks. After an unlock, the new
		// stream's snapshot no longer denies the tenant, so its gateways may cache again. After a
		// quota change the flush makes the gateways ask ListEndpoints for the new quotas.
		e.Kind = kv1.KeyEventKind_KEY_EVENT_KIND_FLUSH
	case fsm.Restored:
		e.Kind, e.Scope = kv1.KeyEventKind_KEY_EVENT_KIND_FLUSH, nil
	case fsm.ServiceKeyRotated:
		// Not fenced: the old version stays usable for unwraps (it is decrypt-only now). Gateways
		// drop their delegated keys of older versions, so that new data keys go under this one.
		e.Kind = kv1.KeyEventKind_KEY_EVENT_KIND_ROTATED
		e.Scope.Service, e.Scope.Version = c.Service, c.Version
	default:
		return nil
	}
	return e
}

// onChange runs inside FSM.Apply: it only queues.
func (k *keyEvents) onChange(c fsm.Change) {
	e := keyEventFor(c)
	if e == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.l.now()
	for w := range k.watchers {
		if e.Scope != nil && w.tenant != c.Tenant {
			continue
		}
		if w.closed && now >= w.leaseUntil {
			delete(k.watchers, w)
			continue
		}
		k.cutIfLate(w, now)
		if e.Kind != kv1.KeyEventKind_KEY_EVENT_KIND_ROTATED {
			// A rotation is owed no acknowledgement: no fence waits for it, and a gateway of an
			// older version, which ignores the kind, must not be cut for not answering it.
			w.unacked = append(w.unacked, unacked{index: c.Index, at: now})
		}
		if w.closed {
			continue
		}
		if len(w.queue) >= keyEventsMaxQueue {
			k.cut(w, cutBehind, errWatcherBehind)
		} else {
			w.queue = append(w.queue, e)
			w.signal()
		}
	}
}

func (w *keyWatcher) signal() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// settled returns the highest index at or below applied that every watcher has acknowledged as
// far as it concerns it (or whose cache lease has run out): what this node may confirm to a fence.
func (k *keyEvents) settled(applied uint64) uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.l.now()
	for w := range k.watchers {
		k.cutIfLate(w, now)
		if now >= w.leaseUntil {
			if w.closed {
				delete(k.watchers, w)
			}
			continue
		}
		if len(w.unacked) > 0 && w.unacked[0].index <= applied {
			applied = w.unacked[0].index - 1
		}
	}
	return applied
}

// watch registers a watcher of tenant and queues its snapshot first: what is unusable now. It runs
// under k.mu, so that a change applied concurrently is either in the snapshot or queued after it
// (or both: the events are idempotent).
func (k *keyEvents) watch(tenant string, state *fsm.State) *keyWatcher {
	return k.watchAs(tenant, "", state)
}

// watchAs is watch for the caller who, named in the log line if the watcher is cut.
func (k *keyEvents) watchAs(tenant, who string, state *fsm.State) *keyWatcher {
	k.mu.Lock()
	defer k.mu.Unlock()
	w := &keyWatcher{tenant: tenant, who: who, kick: make(chan struct{}, 1)}
	snap := &kv1.KeyEvent{Kind: kv1.KeyEventKind_KEY_EVENT_KIND_SNAPSHOT, Index: state.AppliedIndex(), Unusable: unusableScopes(state, tenant)}
	w.queue = append(w.queue, snap)
	w.signal()
	k.watchers[w] = struct{}{}
	return w
}

// unusableScopes lists what of tenant is unusable now.
func unusableScopes(state *fsm.State, tenant string) []*kv1.KeyScope {
	t, err := state.Tenant(tenant)
	if err != nil {
		return nil // no such tenant (yet): it has no keys to cache
	}
	if t.Status != fsm.StatusActive || t.AnchorDeleted {
		return []*kv1.KeyScope{{Tenant: tenant}}
	}
	var out []*kv1.KeyScope
	services, _ := state.ListServices(tenant)
	for _, s := range services {
		if s.Status == fsm.StatusRevoked {
			out = append(out, &kv1.KeyScope{Tenant: tenant, Service: s.Name})
			continue
		}
		versions, _ := state.ListKeyVersions(tenant, s.Name)
		for _, v := range versions {
			if v.Status == fsm.StatusRevoked {
				out = append(out, &kv1.KeyScope{Tenant: tenant, Service: s.Name, Version: v.Version})
			}
		}
	}
	return out
}

// take returns the queued events; ok is false once the watcher was cut off, and cutErr then says
// why.
func (k *keyEvents) take(w *keyWatcher) (events []*kv1.KeyEvent, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	events, w.queue = w.queue, nil
	return events, !w.closed
}

// cutError is why the node cut w off (after take reported it).
func (k *keyEvents) cutError(w *keyWatcher) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if w.cutErr == nil {
		return errWatcherBehind
	}
	return w.cutErr
}

// ack records that the watcher dropped every key affected by events up to index.
func (k *keyEvents) ack(w *keyWatcher, index uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	i, _ := slices.BinarySearchFunc(w.unacked, index+1, func(u unacked, i uint64) int { return cmp.Compare(u.index, i) })
	w.unacked = w.unacked[i:]
}

// renew grants a cache lease if this node's serving lease outlasts it, and queues the answer (in
// stream order, after every event queued before: a gateway that reads the grant has read them).
func (k *keyEvents) renew(w *keyWatcher, seq uint64, serving time.Duration) {
	d := serving / cacheLeaseFraction
	stretched := time.Duration(float64(d) * (1 + k.drift))
	k.mu.Lock()
	defer k.mu.Unlock()
	// A watcher that is late with an acknowledgement gets no more lease: it is cut instead.
	k.cutIfLate(w, k.l.now())
	if w.closed {
		return
	}
	ans := &kv1.KeyEvent{Kind: kv1.KeyEventKind_KEY_EVENT_KIND_LEASE, RenewSeq: seq, Lease: durationpb.New(0)}
	if k.l.expiresIn() > stretched {
		until := k.l.now() + int64(stretched)
		w.leaseUntil = max(w.leaseUntil, until)
		ans.Lease = durationpb.New(d)
	}
	w.queue = append(w.queue, ans)
	w.signal()
}

// unwatch turns the watcher into a tombstone: it still holds fences back until its lease ends.
func (k *keyEvents) unwatch(w *keyWatcher) {
	k.mu.Lock()
	defer k.mu.Unlock()
	w.closed = true
	w.queue = nil
	if k.l.now() >= w.leaseUntil {
		delete(k.watchers, w)
	}
}

// watcherCut is keyEvents.onCut: the metric, and a log line naming the watcher.
func (n *Node) watcherCut(w *keyWatcher, reason string, err error) {
	n.metrics.watchersCut.WithLabelValues(reason).Inc()
	n.log.Warn("key-event watcher cut off; fences wait for it only until its cache lease runs out",
		"watcher", w.who, "tenant", w.tenant, "reason", reason, "err", err)
}

var errNoTenant = transport.Coded(codes.PermissionDenied, "region: the caller's certificate names no tenant")

// WatchKeyEvents streams key events of the caller's tenant (see keyEvents above).
func (s *wrapService) WatchKeyEvents(stream kv1.WrapService_WatchKeyEventsServer) error {
	n := s.n
	ctx := stream.Context()
	id, ok := transport.IdentityFromContext(ctx)
	if !ok || id.Tenant == "" {
		return errNoTenant
	}
	if err := n.Serving(); err != nil {
		return err
	}
	w := n.events.watchAs(id.Tenant, id.String(), n.state)
	defer n.events.unwatch(w)

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if req.GetAckIndex() > 0 {
				n.events.ack(w, req.GetAckIndex())
			}
			if req.GetRenewSeq() > 0 {
				n.events.renew(w, req.GetRenewSeq(), n.state.Settings().LeaseDuration)
			}
		}
	}()
	for {
		select {
		case <-w.kick:
			events, ok := n.events.take(w)
			for _, e := range events {
				if err := stream.Send(e); err != nil {
					return err
				}
			}
			if !ok {
				return n.events.cutError(w)
			}
		case err := <-recvErr:
			if err == nil || ctx.Err() != nil {
				return nil
			}
			return nil // the gateway closed its side
		case <-ctx.Done():
			return nil
		case <-n.stop:
			return ErrShutdown
		}
	}
}
