package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestCompactionBehindSlowestRegion (governance/DESIGN.md, "Compaction"): a three-node governance
// and two one-node regions, eu and us, that follow its feed, and a region ap that a tenant names
// but that never runs.
//
//  1. Many events (lock and policy churn, services, revocations); both regions apply and report
//     them; the leader compacts: every node's floor is the head, the log keeps only the events
//     that define the state, and the snapshot shrinks (sizes logged). ap never reported and does
//     not pin the floor.
//  2. us goes down. More events, revocations among them, and eu applies them; us is silent longer
//     than the retention, stops pinning, and the floor passes its cursor. us comes back below the
//     floor and catches up from the retained events: every revocation in force there, each
//     applied exactly once (one revocation-log entry per cursor), its state (lock, policy,
//     services) the same as eu's; the superseded events never reach it.
//  3. A Revoke with wait returns once both regions applied it, as before compaction; retried with
//     its request id, it returns the same event.
func TestCompactionBehindSlowestRegion(t *testing.T) {
	const retention = 3 * time.Second
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(100*time.Millisecond), governancetest.WithConfig(func(c *governance.Config) {
		c.EventRetention = retention // the compactor stays off (the kit's default): the test compacts
	}))
	// eu compacts its revocation log down to 5 history entries, often.
	eu := regiontest.Start(t, 1, regiontest.WithCA(g.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...),
		regiontest.WithConfig(func(c *region.Config) { c.RevocationHistory, c.RevocationCompactInterval = 5, 100*time.Millisecond }))
	us := regiontest.Start(t, 1, regiontest.WithCA(g.CA), regiontest.WithRegion("us"), regiontest.WithAnchor(eu.Anchor), regiontest.WithGovernance(g.Addrs()...))
	op := g.Client(0)
	call := func(what string, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := f(ctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	fsmOf := func() interface {
		Head() uint64
		Floor() uint64
		LogLen() int
		Encode() ([]byte, error)
	} {
		return g.Nodes[g.WaitLeader()].FSM()
	}
	rules := func(n int) []*kv1.PolicyRule {
		ops := []kv1.Operation{kv1.Operation_OPERATION_WRAP, kv1.Operation_OPERATION_UNWRAP}
		return []*kv1.PolicyRule{{Caller: fmt.Sprintf("spiffe://krypton/tenant/acme/app-%d/**", n), Service: "*", Operations: ops}}
	}
	revoke := func(rid, svc string, version uint32, wait bool) *kv1.RevokeResponse {
		var r *kv1.RevokeResponse
		call("revoke "+svc, func(ctx context.Context) (err error) {
			r, err = op.Revoke(ctx, &kv1.RevokeRequest{RequestId: rid, Target: &kv1.KeyScope{Tenant: "acme", Service: svc, Version: version}, Reason: "test", Wait: wait})
			return err
		})
		return r
	}
	// churn makes n lock/unlock pairs and n policies: events that supersede each other.
	policies := 0
	churn := func(n int) {
		for i := range n {
			call("lock", func(ctx context.Context) error {
				_, err := op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: governancetest.RequestID(), Tenant: "acme", Reason: fmt.Sprint("churn ", i)})
				return err
			})
			call("unlock", func(ctx context.Context) error {
				_, err := op.UnlockTenant(ctx, &kv1.GovernanceUnlockTenantRequest{RequestId: governancetest.RequestID(), Tenant: "acme"})
				return err
			})
			policies++
			call("policy", func(ctx context.Context) error {
				_, err := op.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: governancetest.RequestID(), Policy: &kv1.Policy{Tenant: "acme", Rules: rules(policies)}})
				return err
			})
		}
	}
	applied := func(r *regiontest.Region, what string) {
		t.Helper()
		head := fsmOf().Head()
		clustertest.Eventually(t, 60*time.Second, what, func() bool {
			return r.Nodes[0].State().GovernanceCursor() >= head && g.Nodes[g.WaitLeader()].FSM().Report(r.Cfgs[0].Region).Cursor >= head
		})
	}
	compactTo := func(want uint64) {
		t.Helper()
		clustertest.Eventually(t, 60*time.Second, fmt.Sprintf("the floor at %d on every node", want), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := g.Nodes[g.WaitLeader()].Compact(ctx); err != nil {
				return false
			}
			for _, n := range g.Nodes {
				if n.FSM().Floor() < want {
					return false
				}
			}
			return true
		})
	}

	// 1. Many events, both regions apply them, the log compacts.
	g.CreateTenant("acme", eu.Anchor, "eu", "us")
	g.CreateTenant("beta", eu.Anchor, "ap") // ap never runs
	for i := range 4 {
		call("create service", func(ctx context.Context) error {
			_, err := op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: governancetest.RequestID(), Tenant: "acme", Service: fmt.Sprint("svc-", i)})
			return err
		})
	}
	applied(eu, "eu has the services")
	applied(us, "us has the services")
	revoke(governancetest.RequestID(), "svc-0", 0, true)
	churn(30)
	applied(eu, "eu applied the churn")
	applied(us, "us applied the churn")
	before, _ := fsmOf().Encode()
	head := fsmOf().Head()
	compactTo(head)
	after, _ := fsmOf().Encode()
	t.Logf("compaction 1: head %d, %d events kept, snapshot %d -> %d bytes", head, fsmOf().LogLen(), len(before), len(after))
	if fsmOf().LogLen() >= 15 || 3*len(after) >= 2*len(before) { // the request ids (48 h) stay
		t.Fatalf("after compaction: %d events, snapshot %d bytes (was %d)", fsmOf().LogLen(), len(after), len(before))
	}
	// Every node's state at one moment, compared with the others: regions keep reporting (every
	// heartbeat), so one node's encoding taken once goes stale while the others catch up.
	clustertest.Eventually(t, 60*time.Second, "every node compacted alike", func() bool {
		var first []byte
		for i, n := range g.Nodes {
			b, _ := n.FSM().Encode()
			if i == 0 {
				first = b
			} else if string(b) != string(first) {
				return false
			}
		}
		return true
	})

	// 2. us goes down and falls below the floor.
	usCursor := us.Nodes[0].State().GovernanceCursor()
	us.Kill(0)
	revoke(governancetest.RequestID(), "svc-1", 0, false)
	revoke(governancetest.RequestID(), "svc-2", 1, false)
	churn(10)
	call("lock", func(ctx context.Context) error {
		_, err := op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: governancetest.RequestID(), Tenant: "acme", Reason: "final"})
		return err
	})
	applied(eu, "eu applied what us missed")
	clustertest.Eventually(t, 60*time.Second, "us silent longer than the retention", func() bool {
		rep := g.Nodes[g.WaitLeader()].FSM().Report("us")
		return time.Since(time.Unix(0, rep.ReportedAt)) > retention+time.Second
	})
	head = fsmOf().Head()
	compactTo(head)
	if fsmOf().Floor() <= usCursor {
		t.Fatalf("floor %d, us at %d: us still pins the floor", fsmOf().Floor(), usCursor)
	}
	us.Start(0)
	applied(us, "us caught up from below the floor")
	st, want := us.Nodes[0].State(), eu.Nodes[0].State()
	for _, s := range []string{"svc-0", "svc-1"} {
		if sv, err := st.Service("acme", s); err != nil || sv.Status != fsm.StatusRevoked {
			t.Fatalf("us: %s not revoked: %+v %v", s, sv, err)
		}
	}
	if kv, err := st.KeyVersion("acme", "svc-2", 1); err != nil || kv.Status != fsm.StatusRevoked {
		t.Fatalf("us: svc-2 v1 not revoked: %+v %v", kv, err)
	}
	tu, _ := st.Tenant("acme")
	te, _ := want.Tenant("acme")
	pu, _ := st.Policy("acme")
	pe, _ := want.Policy("acme")
	if tu.Status != fsm.StatusLocked || tu.Status != te.Status || pu.Revision != pe.Revision || pu.Revision != uint64(policies) {
		t.Fatalf("us caught up to %v, policy %d; eu %v, policy %d (want %d)", tu.Status, pu.Revision, te.Status, pe.Revision, policies)
	}
	// Exactly once: one log entry per cursor, each revocation once; the superseded churn never came.
	seen := map[uint64]int{}
	revocations := 0
	for _, rv := range st.RevocationLog(0) {
		if rv.Cursor == 0 {
			continue
		}
		if seen[rv.Cursor]++; seen[rv.Cursor] > 1 {
			t.Fatalf("us applied event %d twice", rv.Cursor)
		}
		if rv.Kind.IsRevocation() && rv.Error == "" {
			revocations++
		}
	}
	if revocations != 3 {
		t.Fatalf("us applied %d revocations, want 3 (svc-0 before, svc-1 and svc-2 v1 after)", revocations)
	}
	missed := 0
	for c := range seen {
		if c > usCursor {
			missed++
		}
	}
	if sent := head - usCursor; uint64(missed) >= sent/2 {
		t.Fatalf("us applied %d of the %d events it missed: the superseded ones reached it", missed, sent)
	}
	t.Logf("us was at %d, the floor at %d: it caught up with %d events of %d", usCursor, fsmOf().Floor(), missed, head-usCursor)

	// 3. Revoke with wait returns once both regions applied it; a retry returns the same event.
	id := governancetest.RequestID()
	r := revoke(id, "svc-3", 0, true)
	if got := r.GetRegions(); len(got) != 2 || got[0].GetAppliedCursor() < r.GetEvent().GetCursor() || got[1].GetAppliedCursor() < r.GetEvent().GetCursor() {
		t.Fatalf("revoke with wait returned %v", got)
	}
	for _, rg := range []*regiontest.Region{eu, us} {
		if sv, err := rg.Nodes[0].State().Service("acme", "svc-3"); err != nil || sv.Status != fsm.StatusRevoked {
			t.Fatalf("%s: svc-3 not revoked when the wait returned", rg.Cfgs[0].Region)
		}
	}
	// eu's revocation log: the four revocations in force and at most 5 history entries (and the
	// newest), whatever it applied; the metric says so.
	clustertest.Eventually(t, 30*time.Second, "eu's revocation log compacted", func() bool {
		return eu.Nodes[0].State().RevocationLogLen() <= 4+5+1
	})
	if f := fsm.InForce(eu.Nodes[0].State().RevocationLog(0)); len(f) != 4 {
		t.Fatalf("eu keeps %d revocations in force, want 4: %+v", len(f), f)
	}
	if sv, err := eu.Nodes[0].State().Service("acme", "svc-0"); err != nil || sv.Status != fsm.StatusRevoked {
		t.Fatal("eu: svc-0 not revoked after compaction")
	}
	mf, err := eu.Nodes[0].Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	gauge := -1.0
	for _, m := range mf {
		if m.GetName() == "krypton_region_revocation_log_entries" {
			gauge = m.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if gauge < 4 || gauge > 10 {
		t.Fatalf("krypton_region_revocation_log_entries = %v", gauge)
	}
	compactTo(fsmOf().Head())
	if again := revoke(id, "svc-3", 0, true); again.GetEvent().GetCursor() != r.GetEvent().GetCursor() {
		t.Fatalf("retried revoke: event %d, want %d", again.GetEvent().GetCursor(), r.GetEvent().GetCursor())
	}
}
