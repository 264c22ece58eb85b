package region_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestRevokeRefusedEverywhere: once RevokeKey returns, every node refuses the key with
// FailedPrecondition, whichever node took the call (a follower forwards it and runs the fence),
// and for each scope: a version, a service, a tenant.
func TestRevokeRefusedEverywhere(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	createTenant(t, admin, r.Anchor, "globex", "payments", "ledger")
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-acme-ledger", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
	v1 := mustWrap(t, r, 0, "acme", "payments")
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r) // read-your-writes holds on the node that took the call only
	v2 := mustWrap(t, r, 1, "acme", "payments")
	ledger := mustWrap(t, r, 2, "acme", "ledger")
	gp := mustWrap(t, r, 0, "globex", "payments")
	gl := mustWrap(t, r, 1, "globex", "ledger")
	// Every node holds every key before the revocations, so refusals are not cache misses.
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", v1)
		mustUnwrap(t, r, i, "acme", "payments", v2)
		mustUnwrap(t, r, i, "acme", "ledger", ledger)
		mustUnwrap(t, r, i, "globex", "payments", gp)
		mustUnwrap(t, r, i, "globex", "ledger", gl)
	}

	refusedEverywhere := func(tenant, service string, w wrapped) {
		t.Helper()
		for i := range r.Nodes {
			c := r.WrapClient(i, tenant, service)
			_, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.blob, Context: w.ctx})
			wantCode(t, err, codes.FailedPrecondition, "unwrap of a revoked key on "+r.Cfgs[i].NodeID)
		}
	}
	revoke := func(via int, id string, scope *kv1.KeyScope) *kv1.RevokeKeyResponse {
		t.Helper()
		resp, err := r.AdminClient(via).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: id, Scope: scope, Reason: "test"})
		if err != nil {
			t.Fatalf("RevokeKey %v via %s: %v", scope, r.Cfgs[via].NodeID, err)
		}
		if got := resp.GetFence().GetConfirmedNodes(); len(got) != 3 || len(resp.GetFence().GetLeaseExpiredNodes()) != 0 {
			t.Fatalf("fence of a healthy region: confirmed %v, expired %v", got, resp.GetFence().GetLeaseExpiredNodes())
		}
		return resp
	}

	// One version, through a follower.
	resp := revoke(r.Followers()[0], "rev-v1", &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1})
	if len(resp.GetRevoked()) != 1 || resp.GetRevoked()[0].GetVersion() != 1 {
		t.Fatalf("revoked %v, want acme/payments@v1 only", resp.GetRevoked())
	}
	refusedEverywhere("acme", "payments", v1)
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", v2) // the other version still opens
	}
	// A retry with the same request id returns again, and still fences.
	revoke(r.Followers()[1], "rev-v1", &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1})

	// A whole service.
	revoke(r.Leader(), "rev-ledger", &kv1.KeyScope{Tenant: "acme", Service: "ledger"})
	refusedEverywhere("acme", "ledger", ledger)
	for i := range r.Nodes {
		_, err := r.WrapClient(i, "acme", "ledger").Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "ledger"}, Plaintext: randKey(t)})
		wantCode(t, err, codes.FailedPrecondition, "wrap under a revoked service on "+r.Cfgs[i].NodeID)
	}
	mustUnwrap(t, r, 2, "acme", "payments", v2)

	// A whole tenant: every service of it, on every node; the other tenant is untouched.
	revoke(r.Followers()[0], "rev-globex", &kv1.KeyScope{Tenant: "globex"})
	refusedEverywhere("globex", "payments", gp)
	refusedEverywhere("globex", "ledger", gl)
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", v2)
	}
	waitSameState(t, r)
}

// TestRevokeWhilePartitioned cuts a follower off from its peers (Raft, cluster RPC and node
// service; clients still reach it). There is no in-process SIGSTOP, so this also stands for a
// *paused* follower: from the leader's side the two look alike (no lease renewals, no fence
// confirmations), and from the node's side a pause ends with a lease that ran out meanwhile, which
// the same checks refuse.
//
// The follower refuses every wrap with Unavailable once its lease is gone; a revocation made
// while it is cut off returns, naming it as fenced by lease expiry; after healing, it refuses the
// revoked key with FailedPrecondition. A goroutine polls it for the revoked key throughout and
// fails the test if any call sent after Revoke returned succeeded.
func TestRevokeWhilePartitioned(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	victim := mustWrap(t, r, r.Leader(), "acme", "payments")
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	p := r.Followers()[0]
	pid := r.Cfgs[p].NodeID
	r.WaitCaughtUp(p)
	mustUnwrap(t, r, p, "acme", "payments", victim) // p holds the keys and serves them

	// The poller: every call's send time and outcome.
	type outcome struct {
		sent time.Time
		code codes.Code
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	pc := r.WrapClient(p, "acme", "payments")
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			sent := time.Now()
			resp, err := pc.Unwrap(ctx, &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
			cancel()
			if err == nil && !bytes.Equal(resp.GetPlaintext(), victim.plain) {
				err = status.Error(codes.DataLoss, "other bytes")
			}
			mu.Lock()
			outcomes = append(outcomes, outcome{sent, status.Code(err)})
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	stopPoller := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopPoller)

	// Cut p off and revoke at once, while p still holds a lease: the fence must wait it out.
	r.Partition(p)
	cutAt := time.Now()
	resp, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"})
	revokedAt := time.Now()
	if err != nil {
		t.Fatalf("RevokeKey with a follower cut off: %v", err)
	}
	f := resp.GetFence()
	if !slices.Equal(f.GetLeaseExpiredNodes(), []string{pid}) {
		t.Fatalf("fence: lease-expired nodes %v, want [%s] (confirmed %v)", f.GetLeaseExpiredNodes(), pid, f.GetConfirmedNodes())
	}
	if len(f.GetConfirmedNodes()) != 2 || slices.Contains(f.GetConfirmedNodes(), pid) {
		t.Fatalf("fence: confirmed %v, want the two connected nodes", f.GetConfirmedNodes())
	}
	if took := revokedAt.Sub(cutAt); took < regiontest.LeaseDuration/2 {
		t.Fatalf("the fence returned %v after the cut: too soon to have waited out a lease of %v", took, regiontest.LeaseDuration)
	}
	// p does not serve now, not even the key that is still valid.
	if err := r.Nodes[p].Serving(); err == nil {
		t.Fatalf("%s serves after the fence waited out its lease", pid)
	}
	for _, call := range []func() error{
		func() error {
			_, err := pc.Wrap(ctxShort(t), &kv1.WrapRequest{Key: ref, Plaintext: randKey(t)})
			return err
		},
		func() error {
			_, err := pc.GenerateDataKey(ctxShort(t), &kv1.GenerateDataKeyRequest{Key: ref})
			return err
		},
		func() error {
			_, err := pc.Unwrap(ctxShort(t), &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
			return err
		},
		func() error {
			_, err := pc.BatchWrap(ctxShort(t), &kv1.BatchWrapRequest{Items: []*kv1.WrapRequest{{Key: ref, Plaintext: randKey(t)}}})
			return err
		},
	} {
		wantCode(t, call(), codes.Unavailable, "a call to a node cut off for longer than its lease")
	}
	// The rest of the region serves version 2, and refuses version 1.
	for _, i := range running(r) {
		if i == p {
			continue
		}
		mustWrap(t, r, i, "acme", "payments")
		_, err := r.WrapClient(i, "acme", "payments").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
		wantCode(t, err, codes.FailedPrecondition, "unwrap of the revoked version on a connected node")
	}
	// It stays refused for another lease period: nothing re-grants a lease while it is cut off.
	for end := time.Now().Add(regiontest.LeaseDuration); time.Now().Before(end); {
		_, err := pc.GenerateDataKey(ctxShort(t), &kv1.GenerateDataKeyRequest{Key: ref})
		wantCode(t, err, codes.Unavailable, "a call to a node still cut off")
	}

	r.Heal()
	healedAt := time.Now()
	clustertest.Eventually(t, 20*time.Second, pid+" serving again", func() bool { return r.Nodes[p].Serving() == nil })
	_, err = pc.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
	wantCode(t, err, codes.FailedPrecondition, "unwrap of the revoked version on the healed node")
	mustWrap(t, r, p, "acme", "payments")
	// Let the poller see the healed node serve for a while.
	clustertest.Eventually(t, 10*time.Second, "the poller seeing the healed node refuse", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, o := range outcomes {
			if o.sent.After(healedAt) && o.code == codes.FailedPrecondition {
				n++
			}
		}
		return n >= 20
	})
	stopPoller()

	var before, after int
	counts := map[codes.Code]int{}
	for _, o := range outcomes {
		counts[o.code]++
		if o.code != codes.OK {
			continue
		}
		if o.sent.After(revokedAt) {
			after++
		} else {
			before++
		}
	}
	t.Logf("poller outcomes: %v", counts)
	if after > 0 {
		t.Fatalf("%s unwrapped the revoked key %d times in calls sent after RevokeKey returned", pid, after)
	}
	if before == 0 || counts[codes.Unavailable] == 0 || counts[codes.FailedPrecondition] == 0 {
		t.Fatalf("the poller did not see the node serve, then refuse for no lease, then refuse the key: %v", counts)
	}
	for c := range counts {
		if c != codes.OK && c != codes.Unavailable && c != codes.FailedPrecondition {
			t.Fatalf("the poller saw %v: %v", c, counts)
		}
	}
}

// TestLeasesHoldOnAHealthyRegion: on a region where nothing fails, no node ever stops serving, also
// across the settings change regiontest.Start makes (the default lease to LeaseDuration), which
// once left every node without a lease for a moment.
func TestLeasesHoldOnAHealthyRegion(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3)
	for end := time.Now().Add(3 * regiontest.LeaseDuration); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		for _, i := range running(r) {
			if err := r.Nodes[i].Serving(); err != nil {
				t.Fatalf("%s stopped serving on a healthy region: %v", r.Cfgs[i].NodeID, err)
			}
		}
	}
}

// TestFenceAfterShorteningTheLease: a follower cut off while it holds a long lease keeps it when
// the region's lease is shortened behind its back; a revocation made then must still wait out the
// long lease, or the follower serves the revoked key after Revoke returned.
func TestFenceAfterShorteningTheLease(t *testing.T) {
	t.Parallel()
	r := setup(t)
	ld := r.Leader()
	long := fsm.DefaultSettings()
	long.LeaseDuration = 4 * regiontest.LeaseDuration
	if err := r.Nodes[ld].SetSettings(ctxT(t), long); err != nil {
		t.Fatal(err)
	}
	victim := mustWrap(t, r, ld, "acme", "payments")
	p := r.Followers()[0]
	mustUnwrap(t, r, p, "acme", "payments", victim)
	clustertest.Eventually(t, 10*time.Second, "a long lease on the follower", func() bool {
		until := r.Nodes[p].Status().GetLeaseExpiresAt()
		return until != nil && time.Until(until.AsTime()) > 2*regiontest.LeaseDuration
	})

	r.Partition(p)
	short := long
	short.LeaseDuration = regiontest.LeaseDuration
	if err := r.Nodes[ld].SetSettings(ctxT(t), short); err != nil {
		t.Fatal(err)
	}
	resp, err := r.AdminClient(ld).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "test"})
	if err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	_, err = r.WrapClient(p, "acme", "payments").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: victim.blob, Context: victim.ctx})
	if err == nil {
		t.Fatalf("%s unwrapped a revoked key after RevokeKey returned (fence %v)", r.Cfgs[p].NodeID, resp.GetFence())
	}
	wantCode(t, err, codes.Unavailable, "unwrap on the cut-off follower after the fence")
	r.Heal()
}

// TestFenceConfirmsARestartedNode: a revocation made while a node is down waits out its lease;
// once the node is back and serving, the next revocation gets its confirmation instead of waiting
// out the lease again. (The leader's connection to the node failed for a whole lease period, so
// gRPC's connect backoff grew past a second: the fence must redial rather than wait it out.)
func TestFenceConfirmsARestartedNode(t *testing.T) {
	t.Parallel()
	r := setup(t)
	for _, id := range []string{"rot-2", "rot-3"} {
		if _, err := r.AdminClient(r.Leader()).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: id, Tenant: "acme", Service: "payments"}); err != nil {
			t.Fatal(err)
		}
	}
	// The old leader goes down; the new leader fences it by lease expiry.
	old := r.Leader()
	oid := r.Cfgs[old].NodeID
	r.Kill(old)
	var admin kv1.AdminServiceClient
	clustertest.Eventually(t, 30*time.Second, "a new leader", func() bool {
		if l := r.Leader(); l >= 0 && l != old {
			admin = r.AdminClient(l)
			return true
		}
		return false
	})
	resp, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev-1", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(resp.GetFence().GetLeaseExpiredNodes(), oid) {
		t.Fatalf("fence with %s down: confirmed %v, expired %v; want %s expired", oid, resp.GetFence().GetConfirmedNodes(), resp.GetFence().GetLeaseExpiredNodes(), oid)
	}
	r.Start(old)
	clustertest.Eventually(t, 30*time.Second, oid+" serving again", func() bool { return r.Nodes[old].Serving() == nil })
	resp, err = admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev-2", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 2}, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetFence().GetConfirmedNodes(); !slices.Contains(got, oid) {
		t.Fatalf("fence after %s restarted: confirmed %v, expired %v; want %s confirmed", oid, got, resp.GetFence().GetLeaseExpiredNodes(), oid)
	}
}

// TestLeaseHoldsWhenRenewalsAreSlow: a follower whose lease renewals take longer than a third of a
// lease period, but less than two thirds, keeps serving without a gap. Renewals overlap, and each
// may take up to a period: a grant is counted from when its request was sent. A node serving
// 10,000 connections on a starved machine answered its renewals that slowly, and lapsed its lease
// while each renewal had to finish within the third of a period before the next (it then answered
// UNAVAILABLE "no serving lease" to tens of thousands of calls; docs/performance.md).
func TestLeaseHoldsWhenRenewalsAreSlow(t *testing.T) {
	t.Parallel()
	const (
		lease = 6 * time.Second
		delay = 2200 * time.Millisecond // more than lease/3; and delay+lease/3 < lease by 1.8 s, for a busy machine
	)
	var slow sync.Map // node id → true: its node-service calls wait delay before they go
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) {
		id, cut := c.NodeID, c.PeerFilter
		c.PeerFilter = func(remote string) bool {
			if _, ok := slow.Load(id); ok {
				time.Sleep(delay)
			}
			return cut(remote)
		}
	}))
	s := fsm.DefaultSettings()
	s.LeaseDuration = lease
	if err := r.Nodes[r.Leader()].SetSettings(ctxT(t), s); err != nil {
		t.Fatal(err)
	}
	f := r.Followers()[0]
	n := r.Nodes[f]
	clustertest.Eventually(t, 10*time.Second, "a lease of the new duration on the follower", func() bool {
		until := n.Status().GetLeaseExpiresAt()
		return n.Serving() == nil && until != nil && time.Until(until.AsTime()) > lease/2
	})
	ld := r.Leader()
	slow.Store(r.Cfgs[f].NodeID, true)
	for end := time.Now().Add(2 * lease); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if err := n.Serving(); err != nil {
			if r.Leader() != ld {
				t.Skipf("the leader changed during the test (a starved machine): %v", err)
			}
			t.Fatalf("%s stopped serving while its renewals took %v of a %v lease: %v", r.Cfgs[f].NodeID, delay, lease, err)
		}
	}
	// A follower that became leader renews without a peer call: it would have tested nothing.
	if r.Leader() != ld {
		t.Skip("the leader changed during the test (a starved machine); the slow renewals were not tested throughout")
	}
}
