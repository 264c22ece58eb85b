package region_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Regression tests for the chaos harness's findings (jepsen/DESIGN.md, "findings").

// TestRotateKeyReportsItsOwnVersion: concurrent rotations each report the version they made, so
// every new version is reported exactly once, and a retry with the same request id reports the
// first call's version even after later rotations.
func TestRotateKeyReportsItsOwnVersion(t *testing.T) {
	t.Parallel()
	r := setup(t)
	const callers = 6
	var (
		mu       sync.Mutex
		reported = map[uint32][]string{}
		wg       sync.WaitGroup
	)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("rot-%d", i)
			k, err := r.AdminClient(i%len(r.Nodes)).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: id, Tenant: "acme", Service: "payments"})
			if err != nil {
				// A rotation that lost a race twice is refused and made nothing.
				t.Logf("%s: %v", id, err)
				return
			}
			mu.Lock()
			reported[k.GetCurrentVersion()] = append(reported[k.GetCurrentVersion()], id)
			mu.Unlock()
		}()
	}
	wg.Wait()
	k, err := r.AdminClient(r.Leader()).DescribeKey(ctxT(t), &kv1.DescribeKeyRequest{Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	if len(reported) == 0 {
		t.Fatal("no rotation succeeded")
	}
	for v := uint32(2); v <= k.GetCurrentVersion(); v++ {
		if ids := reported[v]; len(ids) != 1 {
			t.Errorf("version %d reported to %v, want exactly one caller", v, ids)
		}
	}
	if len(reported) != int(k.GetCurrentVersion())-1 {
		t.Errorf("reported versions %v, current %d", reported, k.GetCurrentVersion())
	}
	// A retry of each acknowledged rotation, after all of them, on another node, returns the
	// first result.
	for v, ids := range reported {
		k, err := r.AdminClient(r.Followers()[0]).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: ids[0], Tenant: "acme", Service: "payments"})
		if err != nil {
			t.Fatalf("retry of %s: %v", ids[0], err)
		}
		if k.GetCurrentVersion() != v {
			t.Errorf("retry of %s reports version %d, the first call reported %d", ids[0], k.GetCurrentVersion(), v)
		}
		var got []uint32
		for _, kv := range k.GetVersions() {
			got = append(got, kv.GetVersion())
		}
		if want := seq(v); !slices.Equal(got, want) {
			t.Errorf("retry of %s lists versions %v, want %v", ids[0], got, want)
		}
	}
}

func seq(n uint32) []uint32 {
	var out []uint32
	for v := uint32(1); v <= n; v++ {
		out = append(out, v)
	}
	return out
}

// TestDescribeRevokedKey: DescribeKey (on any node) of a revoked service, and of any service of a
// revoked tenant, reports current version 0 and every version REVOKED.
func TestDescribeRevokedKey(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	createTenant(t, admin, r.Anchor, "globex", "payments")
	for _, c := range []struct{ tenant, service string }{{"acme", "payments"}, {"globex", "payments"}} {
		if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot-" + c.tenant, Tenant: c.tenant, Service: c.service}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rv-svc", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rv-tenant", Scope: &kv1.KeyScope{Tenant: "globex"}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	for i := range r.Nodes {
		for _, tenant := range []string{"acme", "globex"} {
			k, err := r.AdminClient(i).DescribeKey(ctxT(t), &kv1.DescribeKeyRequest{Tenant: tenant, Service: "payments"})
			if err != nil {
				t.Fatal(err)
			}
			if k.GetCurrentVersion() != 0 || len(k.GetVersions()) != 2 {
				t.Errorf("%s/payments on %s: current %d, %d versions; want 0, 2", tenant, r.Cfgs[i].NodeID, k.GetCurrentVersion(), len(k.GetVersions()))
			}
			for _, v := range k.GetVersions() {
				if v.GetState() != kv1.KeyState_KEY_STATE_REVOKED || v.GetRevokedAt() == nil {
					t.Errorf("%s/payments v%d on %s: %v (revoked at %v), want REVOKED", tenant, v.GetVersion(), r.Cfgs[i].NodeID, v.GetState(), v.GetRevokedAt())
				}
			}
		}
	}
}

// TestReRevokeIsFenced: revoking what is already revoked succeeds, names the revoked versions and
// runs the fence: a client whose first revocation timed out in its fence (a partitioned follower
// neither confirmed nor had lost its lease yet) retries under a new request id and gets a fence
// result that accounts for every node.
func TestReRevokeIsFenced(t *testing.T) {
	t.Parallel()
	r := setup(t)
	ld := r.Leader()
	admin := r.AdminClient(ld)
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	cut := r.Followers()[0]
	r.Partition(cut)
	t.Cleanup(r.Heal)
	scope := &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := admin.RevokeKey(short, &kv1.RevokeKeyRequest{RequestId: "rv-1", Scope: scope, Reason: "test"})
	wantCode(t, err, codes.DeadlineExceeded, "revocation with a partitioned follower and a 1 s deadline")

	check := func(what string, resp *kv1.RevokeKeyResponse, wantVersions ...uint32) {
		t.Helper()
		var got []uint32
		for _, ref := range resp.GetRevoked() {
			got = append(got, ref.GetVersion())
		}
		if !slices.Equal(got, wantVersions) {
			t.Errorf("%s: revoked %v, want %v", what, got, wantVersions)
		}
		f := resp.GetFence()
		if f == nil {
			t.Fatalf("%s: no fence result", what)
		}
		nodes := append(slices.Clone(f.GetConfirmedNodes()), f.GetLeaseExpiredNodes()...)
		slices.Sort(nodes)
		var want []string
		for _, c := range r.Cfgs {
			want = append(want, c.NodeID)
		}
		slices.Sort(want)
		if !slices.Equal(nodes, want) {
			t.Errorf("%s: fence accounts for %v, want every node %v", what, nodes, want)
		}
	}
	resp, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rv-2", Scope: scope, Reason: "test"})
	if err != nil {
		t.Fatalf("re-revoking with a new request id: %v", err)
	}
	check("re-revoke while partitioned", resp, 1)
	if !slices.Contains(resp.GetFence().GetLeaseExpiredNodes(), r.Cfgs[cut].NodeID) {
		t.Errorf("fence %v does not wait out the partitioned node %s's lease", resp.GetFence(), r.Cfgs[cut].NodeID)
	}

	// Healed: re-revoking through a follower, and a version of a service whose tenant is revoked.
	r.Heal()
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rv-tenant", Scope: &kv1.KeyScope{Tenant: "acme"}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	resp, err = r.AdminClient(r.Followers()[0]).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rv-3", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 2}, Reason: "test"})
	if err != nil {
		t.Fatalf("revoking a version of a revoked tenant: %v", err)
	}
	check("re-revoke through a follower", resp, 2)
}

// TestCreateKeyOnLaggingFollower: a write through a follower that has not yet applied the tenant
// it names catches up before it answers NotFound: cut off, the follower answers Unavailable (it
// cannot know); healed, the CreateKey succeeds at once.
func TestCreateKeyOnLaggingFollower(t *testing.T) {
	t.Parallel()
	r := setup(t)
	f := r.Followers()[0]
	r.Partition(f)
	t.Cleanup(r.Heal)
	if _, err := r.AdminClient(r.Leader()).CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "t-late", Tenant: "late", AnchorUri: r.Anchor}); err != nil {
		t.Fatal(err)
	}
	follower := r.AdminClient(f)
	_, err := follower.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-late-0", Tenant: "late", Service: "payments"})
	wantCode(t, err, codes.Unavailable, "CreateKey through a partitioned follower that never saw the tenant")
	r.Heal()
	err = retryUnavailable(t, "CreateKey through the healed follower", func() error {
		_, err := follower.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-late", Tenant: "late", Service: "payments"})
		return err
	})
	if err != nil {
		t.Fatalf("CreateKey through a lagging follower after an acknowledged CreateTenant: %v", err)
	}
	// An unknown tenant is still NotFound, once the node has caught up.
	_, err = follower.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-none", Tenant: "nobody", Service: "payments"})
	wantCode(t, err, codes.NotFound, "CreateKey for a tenant that does not exist")
}

// TestWrapRightAfterCreateKey: a wrap on a follower right after CreateKey returned on the leader
// finds the key (the follower's catch-up barrier started after the wrap arrived), concurrent
// wraps on the same follower included.
func TestWrapRightAfterCreateKey(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	f := r.Followers()[0]
	for i := range 5 {
		svc := fmt.Sprintf("svc-%d", i)
		if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-" + svc, Tenant: "acme", Service: svc}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := r.WrapClient(f, "acme", svc).Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: svc}, Plaintext: randKey(t), Context: []byte("c")})
				if status.Code(err) == codes.NotFound {
					t.Errorf("wrap under %s on a follower right after CreateKey: %v", svc, err)
				}
			}()
		}
		wg.Wait()
	}
}

// TestWrapOnCutOffNodeIsUnavailable: a node cut off from the leader that does not know a key
// (created after the partition) cannot know whether it exists, and answers Unavailable, not
// NotFound.
func TestWrapOnCutOffNodeIsUnavailable(t *testing.T) {
	t.Parallel()
	r := setup(t)
	f := r.Followers()[0]
	r.Partition(f)
	t.Cleanup(r.Heal)
	if _, err := r.AdminClient(r.Leader()).CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-fresh", Tenant: "acme", Service: "fresh"}); err != nil {
		t.Fatal(err)
	}
	_, err := r.WrapClient(f, "acme", "fresh").Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "fresh"}, Plaintext: randKey(t), Context: []byte("c")})
	wantCode(t, err, codes.Unavailable, "wrap on a partitioned follower under a key created after the partition")
	r.Heal()
	mustWrap(t, r, f, "acme", "fresh")
}

// TestRotateKeyReportsItsVersionAfterServiceRevoked (jepsen finding 6): a rotation acknowledged
// reports the version it made even when the service was revoked before the response was built
// (here: a retry with the same request id after the revocation, which returns the first result;
// in the chaos run, a service revocation racing the rotation). keyProto takes the current status
// (revoked: current_version 0) with the write's own svc.
func TestRotateKeyReportsItsVersionAfterServiceRevoked(t *testing.T) {
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	k, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot-f6", Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	if k.GetCurrentVersion() != 2 {
		t.Fatalf("rotation reported v%d, want v2", k.GetCurrentVersion())
	}
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rv-f6", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	again, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot-f6", Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatalf("retry of an acknowledged rotation: %v", err)
	}
	if again.GetCurrentVersion() != 2 {
		t.Errorf("retry of the acknowledged rotation reports v%d after the service was revoked, want v2 (the first result)", again.GetCurrentVersion())
	}
}
