package governance_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/audit"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestAuditAndMetrics checks that governance decisions land in the
// hash-chained audit log with the caller's identity, refusals too, and that
// the metrics follow the log.
func TestAuditAndMetrics(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	if _, err := op.Revoke(ctx, &kv1.RevokeRequest{Target: &kv1.KeyScope{Tenant: "acme"}, DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Revoke(ctx, &kv1.RevokeRequest{RequestId: "rv", Target: &kv1.KeyScope{Tenant: "acme"}, Reason: "audit test"}); err != nil {
		t.Fatal(err)
	}
	_, err := g.NodeClient(0, "us", "us-1").ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu"})
	wantCode(t, err, codes.PermissionDenied)
	if _, err := g.NodeClient(0, "eu", "eu-1").ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 1}); err != nil {
		t.Fatal(err)
	}

	reg := g.Nodes[0].Registry()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP krypton_governance_head_cursor Cursor of the newest event of the governance log.
# TYPE krypton_governance_head_cursor gauge
krypton_governance_head_cursor 2
# HELP krypton_governance_region_applied_cursor Cursor each region last reported applied.
# TYPE krypton_governance_region_applied_cursor gauge
krypton_governance_region_applied_cursor{region="eu"} 1
# HELP krypton_governance_region_pending_events Events of a region's tenants not yet reported applied by it.
# TYPE krypton_governance_region_pending_events gauge
krypton_governance_region_pending_events{region="eu"} 1
`), "krypton_governance_head_cursor", "krypton_governance_region_applied_cursor", "krypton_governance_region_pending_events"); err != nil {
		t.Fatal(err)
	}
	if v := gatherValue(t, reg, "krypton_governance_events_total", "revoke-tenant"); v != 1 {
		t.Fatalf("revoke-tenant events: %v", v)
	}

	// Close flushes the audit log; then read it.
	dir := g.Cfgs[0].DataDir
	g.Kill(0)
	f, err := os.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := audit.Verify(f); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	f.Seek(0, 0)
	kinds := map[string]audit.Event{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		kinds[e.Kind] = e
	}
	for _, k := range []string{governance.AuditTenantCreate, governance.AuditRevokeDryRun, governance.AuditRevoke, audit.KindCallRefused} {
		if _, ok := kinds[k]; !ok {
			t.Errorf("no %s event in the audit log", k)
		}
	}
	if e := kinds[governance.AuditRevoke]; e.Actor != "spiffe://krypton/operator/test-operator" || e.Tenant != "acme" || e.Reason != "audit test" || e.RequestID != "rv" {
		t.Errorf("revoke event: %+v", e)
	}
	if e := kinds[audit.KindCallRefused]; e.Actor != "spiffe://krypton/region/us/node/us-1" || e.Code != "PermissionDenied" {
		t.Errorf("refusal event: %+v", e)
	}
}

// TestPartitionedFollowerEndsStream: a follower cut off from the leader ends
// its watch streams with UNAVAILABLE instead of holding a region on a stale
// log; the region reconnects elsewhere.
func TestPartitionedFollowerEndsStream(t *testing.T) {
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(100*time.Millisecond))
	g.CreateTenant("acme", devAnchor, "eu")
	f := (g.WaitLeader() + 1) % 3
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := g.NodeClient(f, "eu", "eu-1").WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	recvEvents(t, s, 1)
	g.Partition(f)
	defer g.Heal()
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		wantCode(t, err, codes.Unavailable)
	case <-ctx.Done():
		t.Fatal("the partitioned follower kept streaming")
	}
	g.Heal()
	clustertest.Eventually(t, 30*time.Second, "the follower to rejoin", func() bool {
		id, _ := g.Nodes[f].Cluster().Leader()
		return id != ""
	})
}

// gatherValue returns the value of metric name whose one label has value
// label.
func gatherValue(t *testing.T, reg prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}
