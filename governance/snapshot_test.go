package governance_test

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestSnapshotInstallAndRestart runs the state machine's snapshots through
// Raft: a follower that missed more than the trailing log catches up from a
// snapshot, and a whole cluster restarted from its snapshots and logs holds
// the same state as before.
func TestSnapshotInstallAndRestart(t *testing.T) {
	g := governancetest.Start(t, 3, governancetest.WithClusterConfig(func(c *cluster.Config) {
		c.SnapshotThreshold = 8
		c.TrailingLogs = 4
		c.SnapshotInterval = 200 * time.Millisecond
	}))
	g.CreateTenant("acme", devAnchor, "eu")
	leader := g.WaitLeader()
	f := (leader + 1) % 3
	g.Kill(f)
	op := g.Client(leader)
	ctx := g.Context(60 * time.Second)
	for i := range 40 {
		if _, err := op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: fmt.Sprintf("s-%d", i), Tenant: "acme", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.NodeClient(leader, "eu", "eu-1").ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 30,
		HasInventory: true, Inventory: []*kv1.KeyRef{{Tenant: "acme", Service: "billing", Version: 1}}}); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 30*time.Second, "a snapshot on the leader", func() bool {
		idx, _ := strconv.ParseUint(g.Nodes[leader].Cluster().Stats()["last_snapshot_index"], 10, 64)
		return idx > 20
	})
	g.Restart(f)
	want, _ := g.Nodes[leader].FSM().Encode()
	clustertest.Eventually(t, 30*time.Second, "the follower to catch up from the snapshot", func() bool {
		got, _ := g.Nodes[f].FSM().Encode()
		return bytes.Equal(got, want)
	})

	// Restart everything: state comes back from snapshots and logs.
	for i := range g.Nodes {
		g.Kill(i)
	}
	for i := range g.Nodes {
		g.Restart(i)
	}
	g.WaitLeader()
	clustertest.Eventually(t, 30*time.Second, "every node to hold the state again", func() bool {
		for _, n := range g.Nodes {
			got, _ := n.FSM().Encode()
			if !bytes.Equal(got, want) {
				return false
			}
		}
		return true
	})
	// And the log goes on from where it was.
	r, err := g.Client(g.WaitLeader()).UnlockTenant(g.Context(30*time.Second), &kv1.GovernanceUnlockTenantRequest{RequestId: "after", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetCursor() != 42 {
		t.Fatalf("cursor after restart %d, want 42", r.GetCursor())
	}
}
