package governance_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestCompactorLoop: with the compactor on, the leader compacts the log on its own behind the
// region's reported cursor (no call from the test), and the metrics show the log's length and
// floor; krypton_governance_events_total still counts every event. A negative retention is
// refused with an error naming the fix.
func TestCompactorLoop(t *testing.T) {
	g := governancetest.Start(t, 1, governancetest.WithConfig(func(c *governance.Config) { c.CompactInterval = 100 * time.Millisecond }))
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	eu := g.NodeClient(0, "eu", "eu-1")
	// eu reports cursor 1: it pins the floor there (a region that never reported pins nothing).
	if _, err := eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 1}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: rid(), Tenant: "acme", Reason: "churn"}); err != nil {
			t.Fatal(err)
		}
		if _, err := op.UnlockTenant(ctx, &kv1.GovernanceUnlockTenantRequest{RequestId: rid(), Tenant: "acme"}); err != nil {
			t.Fatal(err)
		}
	}
	f := g.Nodes[0].FSM()
	head := f.Head()
	if f.Floor() > 1 {
		t.Fatalf("floor %d passed eu's cursor 1", f.Floor())
	}
	if _, err := eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: head}); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 30*time.Second, "the compactor raising the floor to the head", func() bool { return f.Floor() == head })
	// The creation and the newest lock event (the last unlock) stay.
	if f.LogLen() != 2 {
		t.Fatalf("%d events kept, want 2", f.LogLen())
	}
	reg := g.Nodes[0].Registry()
	if v := gauge(t, reg, "krypton_governance_event_log_entries"); v != 2 {
		t.Fatalf("krypton_governance_event_log_entries = %v", v)
	}
	if v := gauge(t, reg, "krypton_governance_event_log_floor_cursor"); v != float64(head) {
		t.Fatalf("krypton_governance_event_log_floor_cursor = %v, want %d", v, head)
	}
	if v := gatherValue(t, reg, "krypton_governance_events_total", "unlock-tenant"); v != 10 {
		t.Fatalf("krypton_governance_events_total{unlock-tenant} = %v after compaction, want 10", v)
	}
	cfg := g.Cfgs[0]
	cfg.EventRetention = -time.Second
	if err := cfg.Validate(); err == nil {
		t.Fatal("a negative EventRetention was accepted")
	}
}

// gauge returns the value of an unlabelled gauge.
func gauge(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
