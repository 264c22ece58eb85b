package region_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The revocation fence on the leader waits for a silent voter only until the last lease it granted
// that voter has surely run out (lease.go, grantLog), not a full lease from the fence's start.

// setLease sets the region's serving lease to d through the leader, keeping the other settings, and
// waits until follower p holds a lease granted under it.
func setLease(t *testing.T, r *regiontest.Region, p int, d time.Duration) {
	t.Helper()
	ld := r.Leader()
	s := r.Nodes[ld].State().Settings()
	s.LeaseDuration = d
	if err := r.Nodes[ld].SetSettings(ctxT(t), s); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 20*time.Second, r.Cfgs[p].NodeID+" holding a lease of "+d.String(), func() bool {
		return time.Until(r.Nodes[p].LeaseEndsAt()) > d/2
	})
}

// TestFenceSkipsALapsedGrant: a follower cut off for longer than its lease is not waited for by a
// revocation made afterwards. The lease is long (10 s) and the revocation's deadline is half of it:
// a fence that waited a full lease from its start for the silent follower could not return in time
// (it did before grants were recorded: issue 16, "a revoke with one silent voter always costs a
// full lease").
func TestFenceSkipsALapsedGrant(t *testing.T) {
	t.Parallel()
	r := setup(t)
	const lease = 10 * time.Second
	victim := mustWrap(t, r, r.Leader(), "acme", "payments")
	p := r.Followers()[0]
	pid := r.Cfgs[p].NodeID
	setLease(t, r, p, lease)
	mustUnwrap(t, r, p, "acme", "payments", victim)

	r.Partition(p)
	t.Cleanup(r.Heal)
	var resp *kv1.RevokeKeyResponse
	for attempt := 1; ; attempt++ {
		ld := r.WaitLeader()
		term := r.Nodes[ld].Cluster().Term()
		// Poll the leader's own view of the silent follower's last grant.
		clustertest.Eventually(t, 4*lease, "the leader seeing "+pid+"'s last lease run out", func() bool {
			return r.Leader() != ld || !time.Now().Before(r.Nodes[ld].LeaseRunsOutAt(pid))
		})
		if r.Leader() != ld {
			continue // a new leader knows no grant of the old one's: it waits one more lease
		}
		ctx, cancel := context.WithTimeout(context.Background(), lease/2)
		var err error
		resp, err = r.AdminClient(ld).RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: fmt.Sprintf("rev-%d", attempt),
			Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"})
		cancel()
		if err == nil {
			break
		}
		if attempt < 3 && (r.Leader() != ld || r.Nodes[ld].Cluster().Term() != term) {
			t.Logf("the leader changed during the revocation (%v); again", err)
			continue
		}
		t.Fatalf("RevokeKey with %s's lease run out long ago, within half a lease (%v): %v", pid, lease/2, err)
	}
	f := resp.GetFence()
	if !slices.Equal(f.GetLeaseExpiredNodes(), []string{pid}) || len(f.GetConfirmedNodes()) != 2 || slices.Contains(f.GetConfirmedNodes(), pid) {
		t.Fatalf("fence: confirmed %v, lease expired %v; want the two connected nodes confirmed and %s expired",
			f.GetConfirmedNodes(), f.GetLeaseExpiredNodes(), pid)
	}
	if err := r.Nodes[p].Serving(); err == nil {
		t.Fatalf("%s serves after its lease was fenced as run out", pid)
	}
	_, err := r.WrapClient(p, "acme", "payments").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
	wantCode(t, err, codes.Unavailable, "unwrap on the cut-off follower after the fence")
}

// TestFenceWaitsOutALiveGrant: the leader's record of a follower's last grant never ends before the
// follower's own lease (sampled while it renews and after it is cut off), and a revocation made
// while the cut-off follower's lease still runs returns only once that lease is over.
func TestFenceWaitsOutALiveGrant(t *testing.T) {
	t.Parallel()
	r := setup(t)
	lease := 2 * regiontest.LeaseDuration
	victim := mustWrap(t, r, r.Leader(), "acme", "payments")
	p := r.Followers()[0]
	pid := r.Cfgs[p].NodeID
	setLease(t, r, p, lease)
	mustUnwrap(t, r, p, "acme", "payments", victim)

	// The follower's lease end is read first: a grant it holds then was on record before.
	check := func() {
		t.Helper()
		own := r.Nodes[p].LeaseEndsAt()
		ld := r.Leader()
		if ld < 0 {
			return
		}
		if view := r.Nodes[ld].LeaseRunsOutAt(pid); view.Before(own) {
			t.Fatalf("the leader's view of %s's lease ends %v before the lease itself", pid, own.Sub(view))
		}
	}
	for end := time.Now().Add(lease); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		check()
	}
	r.Partition(p)
	t.Cleanup(r.Heal)
	// Revoke once a part of the follower's lease has gone by since its last grant.
	clustertest.Eventually(t, 2*lease, pid+"'s lease half run", func() bool {
		check()
		return time.Until(r.Nodes[p].LeaseEndsAt()) < lease/2
	})
	if r.Nodes[p].Serving() != nil {
		t.Logf("%s's lease ran out before the revocation: this run shows only the record", pid)
	}
	ld := r.Leader()
	resp, err := r.AdminClient(ld).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev",
		Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"})
	if err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if slices.Contains(resp.GetFence().GetConfirmedNodes(), pid) {
		t.Fatalf("the cut-off %s confirmed the fence", pid)
	}
	if err := r.Nodes[p].Serving(); err == nil {
		t.Fatalf("%s still serves under its lease after RevokeKey returned (fence %v)", pid, resp.GetFence())
	}
	_, err = r.WrapClient(p, "acme", "payments").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
	wantCode(t, err, codes.Unavailable, "unwrap on the cut-off follower after the fence")
}

// TestFenceAfterALeaderChangeWaitsOutTheOldGrants: a new leader has no record of the grants its
// predecessor made; a revocation it makes just after taking over still waits out the lease a
// cut-off follower got from the old leader.
func TestFenceAfterALeaderChangeWaitsOutTheOldGrants(t *testing.T) {
	t.Parallel()
	r := setup(t)
	lease := 4 * regiontest.LeaseDuration
	victim := mustWrap(t, r, r.Leader(), "acme", "payments")
	old := r.Leader()
	fs := r.Followers()
	p, q := fs[0], fs[1]
	pid, qid := r.Cfgs[p].NodeID, r.Cfgs[q].NodeID
	setLease(t, r, p, lease)
	mustUnwrap(t, r, p, "acme", "payments", victim)
	r.WaitCaughtUp(q)

	r.Partition(p)
	t.Cleanup(r.Heal)
	if err := r.Nodes[old].Cluster().TransferLeadership(ctxT(t), qid); err != nil {
		t.Fatalf("TransferLeadership to %s: %v", qid, err)
	}
	clustertest.Eventually(t, 20*time.Second, qid+" leading", func() bool { return r.Nodes[q].Cluster().IsLeader() })
	if own, view := r.Nodes[p].LeaseEndsAt(), r.Nodes[q].LeaseRunsOutAt(pid); view.Before(own) {
		t.Fatalf("the new leader's view of %s's lease ends %v before the lease itself", pid, own.Sub(view))
	}
	if r.Nodes[p].Serving() != nil {
		t.Logf("%s's lease ran out before the revocation: this run shows only the record", pid)
	}
	resp, err := r.AdminClient(q).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev",
		Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"})
	if err != nil {
		t.Fatalf("RevokeKey on the new leader: %v", err)
	}
	if slices.Contains(resp.GetFence().GetConfirmedNodes(), pid) {
		t.Fatalf("the cut-off %s confirmed the fence", pid)
	}
	if err := r.Nodes[p].Serving(); err == nil {
		t.Fatalf("%s still serves under the old leader's grant after RevokeKey returned (fence %v)", pid, resp.GetFence())
	}
}
