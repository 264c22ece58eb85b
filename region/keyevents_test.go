package region_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/region"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestFenceCutsAWatcherThatNeverAcknowledges: a service holding a key-event stream that renews its
// cache lease but never acknowledges an event used to hold every fence of its tenant for a full
// serving lease (docs/security.md). The node now cuts a watcher that leaves an event unacknowledged
// for Config.KeyEventAckWait: its stream ends, it gets no more cache lease, and the fence waits for
// it only until the cache lease it already held runs out. With a 24 s serving lease (a 6 s cache
// lease) and the default 2 s bound, RevokeKey must return well inside a deadline shorter than the
// lease; before the fix it ran into that deadline.
func TestFenceCutsAWatcherThatNeverAcknowledges(t *testing.T) {
	t.Parallel()
	r := setup(t)
	ld := r.Leader()
	long := fsm.DefaultSettings()
	long.LeaseDuration = 24 * time.Second
	if err := r.Nodes[ld].SetSettings(ctxT(t), long); err != nil {
		t.Fatal(err)
	}
	victim := mustWrap(t, r, ld, "acme", "payments")
	p := r.Followers()[0]
	pid := r.Cfgs[p].NodeID
	// The follower grants a cache lease only inside its own serving lease: wait for a long one.
	clustertest.Eventually(t, 20*time.Second, "a long lease on "+pid, func() bool {
		until := r.Nodes[p].Status().GetLeaseExpiresAt()
		return until != nil && time.Until(until.AsTime()) > long.LeaseDuration/2
	})

	// The attacker: a service of the tenant watches key events on the follower, renews its cache
	// lease all the time and never acknowledges anything.
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	stream, err := r.WrapClient(p, "acme", "payments").WatchKeyEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leased := make(chan struct{}, 1)
	revoked := make(chan struct{}, 1)
	ended := make(chan error, 1)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				ended <- err
				return
			}
			switch {
			case ev.GetKind() == kv1.KeyEventKind_KEY_EVENT_KIND_LEASE && ev.GetLease().AsDuration() > 0:
				select {
				case leased <- struct{}{}:
				default:
				}
			case ev.GetKind() == kv1.KeyEventKind_KEY_EVENT_KIND_REVOKED:
				select {
				case revoked <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			if stream.Send(&kv1.WatchKeyEventsRequest{RenewSeq: seq}) != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	select {
	case <-leased:
	case err := <-ended:
		t.Fatalf("the watcher's stream ended before it got a cache lease: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the watcher got no cache lease")
	}

	// The fence must not wait for the whole serving lease (24 s × 1.05): give it less than that.
	rctx, rcancel := context.WithTimeout(context.Background(), long.LeaseDuration*3/4)
	defer rcancel()
	resp, err := r.AdminClient(ld).RevokeKey(rctx, &kv1.RevokeKeyRequest{RequestId: "rev", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "test"})
	if err != nil {
		t.Fatalf("RevokeKey with a watcher that never acknowledges: %v (it waited for the full lease)", err)
	}
	if got := resp.GetFence().GetConfirmedNodes(); !slices.Contains(got, pid) {
		t.Fatalf("fence: confirmed %v, expired %v; want %s confirmed once its watcher was cut", got, resp.GetFence().GetLeaseExpiredNodes(), pid)
	}
	select {
	case <-revoked:
	default:
		t.Error("the watcher was never sent the revocation")
	}
	// The watcher was cut: its stream ended with an error naming the fix, and the node counted it.
	select {
	case err := <-ended:
		if status.Code(err) != codes.Aborted {
			t.Fatalf("the watcher's stream ended with %v, want Aborted", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the watcher's stream was not cut")
	}
	if n := watchersCut(t, r.Nodes[p], "unacknowledged"); n < 1 {
		t.Errorf("krypton_key_event_watchers_cut_total{reason=unacknowledged} = %v on %s, want ≥ 1", n, pid)
	}

	// The revoked key is not served, and a watcher that subscribes again learns it from its
	// snapshot.
	_, err = r.WrapClient(p, "acme", "payments").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
	wantCode(t, err, codes.FailedPrecondition, "unwrap of the revoked key on "+pid)
	again, err := r.WrapClient(p, "acme", "payments").WatchKeyEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := again.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if snap.GetKind() != kv1.KeyEventKind_KEY_EVENT_KIND_SNAPSHOT || !slices.ContainsFunc(snap.GetUnusable(), func(s *kv1.KeyScope) bool {
		return s.GetTenant() == "acme" && s.GetService() == "payments"
	}) {
		t.Fatalf("a new stream's first event %v, want a SNAPSHOT naming acme/payments unusable", snap)
	}
}

// watchersCut reads krypton_key_event_watchers_cut_total{reason} on n.
func watchersCut(t *testing.T, n *region.Node, reason string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "krypton_key_event_watchers_cut_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
