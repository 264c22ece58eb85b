package region_test

import (
	"testing"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestFailover kills the leader: the survivors elect a new one, re-acquire their leases and keep
// wrapping and unwrapping; the killed node restarts from its data directory, catches up with what
// was written while it was down, and serves again.
func TestFailover(t *testing.T) {
	t.Parallel()
	r := setup(t)

	// Wrap on one node, unwrap on each other node.
	before := mustWrap(t, r, 0, "acme", "payments")
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", before)
	}

	old := r.Leader()
	oldTerm := r.Nodes[old].Cluster().Term()
	r.Kill(old)
	ld := r.WaitLeader()
	if ld == old {
		t.Fatalf("the killed node %d still leads", old)
	}
	if term := r.Nodes[ld].Cluster().Term(); term <= oldTerm {
		t.Fatalf("new leader in term %d, not after the old term %d", term, oldTerm)
	}
	r.WaitServing()
	survivors := running(r)
	if len(survivors) != 2 {
		t.Fatalf("%d nodes run after killing one of three", len(survivors))
	}
	// Every survivor wraps, and unwraps what the others wrapped, old and new.
	var during []wrapped
	for _, i := range survivors {
		during = append(during, mustWrap(t, r, i, "acme", "payments"))
	}
	for _, i := range survivors {
		mustUnwrap(t, r, i, "acme", "payments", before)
		for _, w := range during {
			mustUnwrap(t, r, i, "acme", "payments", w)
		}
	}
	// A write while the node is down: a new key, which it has never seen, and a rotation.
	admin := r.AdminClient(survivors[len(survivors)-1])
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-ledger", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatalf("CreateKey while a node is down: %v", err)
	}
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot-payments", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatalf("RotateKey while a node is down: %v", err)
	}
	ledger := mustWrap(t, r, ld, "acme", "ledger")
	rotated := mustWrap(t, r, ld, "acme", "payments")

	// The killed node comes back from its data directory and catches up.
	r.Start(old)
	r.WaitCaughtUp(old)
	r.WaitServing()
	if r.Leader() == -1 {
		t.Fatal("no leader after the restart")
	}
	for _, w := range append(during, before, rotated) {
		mustUnwrap(t, r, old, "acme", "payments", w)
	}
	mustUnwrap(t, r, old, "acme", "ledger", ledger)
	// It wraps under the version rotated in while it was down, and the others unwrap that.
	back := mustWrap(t, r, old, "acme", "payments")
	for _, i := range running(r) {
		mustUnwrap(t, r, i, "acme", "payments", back)
	}
	resp, err := r.WrapClient(old, "acme", "payments").Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: randKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if v := resp.GetKey().GetVersion(); v != 2 {
		t.Fatalf("the restarted node wraps under version %d, want 2 (rotated while it was down)", v)
	}
	waitSameState(t, r)
}
