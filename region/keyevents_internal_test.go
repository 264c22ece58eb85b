package region

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// newTestEvents returns key events on a node lease that runs for an hour, and an empty state.
func newTestEvents() (*keyEvents, *fsm.State) {
	l := newLease()
	l.grant(l.dropped(), l.now(), time.Hour, 1)
	return newKeyEvents(l, 0.05), fsm.New(fsm.Options{}).State()
}

func drain(k *keyEvents, w *keyWatcher) []*kv1.KeyEvent {
	evs, _ := k.take(w)
	return evs
}

// TestKeyEventsSettled: a fence sees an index as applied only once every leased watcher of the
// tenant acknowledged the change; other tenants' watchers and watchers without a lease do not
// hold it back.
func TestKeyEventsSettled(t *testing.T) {
	k, state := newTestEvents()
	acme := k.watch("acme", state)
	other := k.watch("other", state)
	idle := k.watch("acme", state) // never asks for a lease: it serves nothing from a cache
	if evs := drain(k, acme); len(evs) != 1 || evs[0].GetKind() != kv1.KeyEventKind_KEY_EVENT_KIND_SNAPSHOT {
		t.Fatalf("first events %v, want one SNAPSHOT", evs)
	}
	k.renew(acme, 1, 4*time.Second)
	k.renew(other, 1, 4*time.Second)
	if evs := drain(k, acme); len(evs) != 1 || evs[0].GetRenewSeq() != 1 || evs[0].GetLease().AsDuration() != time.Second {
		t.Fatalf("renewal answered with %v, want a 1s lease for renewal 1", evs)
	}

	k.onChange(fsm.Change{Index: 7, Kind: fsm.KeyVersionRevoked, Tenant: "acme", Service: "pay", Version: 2})
	k.onChange(fsm.Change{Index: 8, Kind: fsm.ServiceCreated, Tenant: "acme", Service: "new"})
	if got := k.settled(10); got != 6 {
		t.Fatalf("settled(10) = %d before the acknowledgement, want 6", got)
	}
	evs := drain(k, acme)
	if len(evs) != 1 || evs[0].GetKind() != kv1.KeyEventKind_KEY_EVENT_KIND_REVOKED || evs[0].GetScope().GetVersion() != 2 || evs[0].GetIndex() != 7 {
		t.Fatalf("events %v, want REVOKED acme/pay/2 at 7", evs)
	}
	for _, e := range drain(k, other) { // its snapshot and its lease only
		if e.GetKind() == kv1.KeyEventKind_KEY_EVENT_KIND_REVOKED {
			t.Fatal("another tenant's watcher got acme's event")
		}
	}
	k.ack(acme, 7)
	if got := k.settled(10); got != 10 {
		t.Fatalf("settled(10) = %d after the acknowledgement, want 10", got)
	}
	_ = idle

	// A restored state concerns every watcher.
	k.onChange(fsm.Change{Index: 12, Kind: fsm.Restored})
	if got := k.settled(12); got != 11 {
		t.Fatalf("settled(12) = %d with two watchers owing the flush, want 11", got)
	}
	k.ack(acme, 12)
	k.ack(other, 12)
	if got := k.settled(12); got != 12 {
		t.Fatalf("settled(12) = %d, want 12", got)
	}
}

// TestKeyEventsTombstone: a watcher whose stream ended holds fences back until its last cache
// lease has run out, then is forgotten.
func TestKeyEventsTombstone(t *testing.T) {
	k, state := newTestEvents()
	w := k.watch("acme", state)
	k.renew(w, 1, 40*time.Millisecond) // a 10 ms cache lease
	k.unwatch(w)
	k.onChange(fsm.Change{Index: 3, Kind: fsm.TenantLocked, Tenant: "acme"})
	if got := k.settled(3); got != 2 {
		// The lease may already have run out on a slow machine; then the tombstone is gone too.
		k.mu.Lock()
		n := len(k.watchers)
		k.mu.Unlock()
		if got != 3 || n != 0 {
			t.Fatalf("settled(3) = %d with %d watchers", got, n)
		}
	}
	clustertest.Eventually(t, 5*time.Second, "the tombstone's lease running out", func() bool { return k.settled(3) == 3 })
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.watchers) != 0 {
		t.Errorf("%d watchers kept after the lease ran out", len(k.watchers))
	}
}

// TestKeyEventsNoLeaseNoGrant: a node whose serving lease would end before the cache lease grants
// none.
func TestKeyEventsNoLeaseNoGrant(t *testing.T) {
	l := newLease()
	l.grant(l.dropped(), l.now(), 500*time.Millisecond, 1)
	k := newKeyEvents(l, 0.05)
	w := k.watch("acme", fsm.New(fsm.Options{}).State())
	drain(k, w)
	k.renew(w, 1, 4*time.Second) // asks for 1s, the node holds at most 500ms
	evs := drain(k, w)
	if len(evs) != 1 || evs[0].GetLease().AsDuration() != 0 {
		t.Fatalf("answer %v, want a zero lease", evs)
	}
	k.onChange(fsm.Change{Index: 2, Kind: fsm.TenantRevoked, Tenant: "acme"})
	if got := k.settled(2); got != 2 {
		t.Fatalf("a watcher without a lease held the fence back: settled(2) = %d", got)
	}
}

// TestKeyEventsCutsALateWatcher: a watcher that keeps renewing its cache lease but leaves an event
// unacknowledged for longer than ackWait is cut: its renewals are refused, its stream is told to
// end with Aborted, and it holds the fence back only until the cache lease it held runs out.
func TestKeyEventsCutsALateWatcher(t *testing.T) {
	k, state := newTestEvents()
	k.ackWait = 50 * time.Millisecond
	var cuts []string
	k.onCut = func(_ *keyWatcher, reason string, _ error) { cuts = append(cuts, reason) }
	w := k.watch("acme", state)
	k.renew(w, 1, 400*time.Millisecond) // a 100 ms cache lease
	drain(k, w)
	k.onChange(fsm.Change{Index: 5, Kind: fsm.ServiceRevoked, Tenant: "acme", Service: "pay"})
	seq := uint64(1)
	clustertest.Eventually(t, 10*time.Second, "the fence no longer held by the late watcher", func() bool {
		seq++
		k.renew(w, seq, 400*time.Millisecond) // renews, never acknowledges
		return k.settled(5) == 5
	})
	if _, ok := k.take(w); ok {
		t.Fatal("the late watcher's stream was not told to end")
	}
	if err := k.cutError(w); status.Code(err) != codes.Aborted {
		t.Fatalf("cut with %v, want Aborted", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(cuts) != 1 || cuts[0] != cutUnacked {
		t.Fatalf("cuts reported: %v, want one %q", cuts, cutUnacked)
	}
}
