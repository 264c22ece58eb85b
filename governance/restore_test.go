package governance_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/governance/govfsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// backup saves a snapshot of governance through its leader.
func backup(t *testing.T, g *governancetest.Cluster) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := g.Nodes[g.WaitLeader()].Snapshot(g.Context(30*time.Second), &buf); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return buf.Bytes()
}

// restore restores snap through the leader, asking again if leadership moved.
func restore(t *testing.T, g *governancetest.Cluster, snap []byte) error {
	t.Helper()
	ctx := g.Context(30 * time.Second)
	for {
		err := g.Nodes[g.WaitLeader()].Restore(ctx, bytes.NewReader(snap))
		if !errors.Is(err, cluster.ErrNotLeader) || ctx.Err() != nil {
			return err
		}
	}
}

// encodings waits until every node holds the same state and returns it.
func sameState(t *testing.T, g *governancetest.Cluster) []byte {
	t.Helper()
	var want []byte
	clustertest.Eventually(t, 30*time.Second, "every node to hold the same state", func() bool {
		want, _ = g.Nodes[0].FSM().Encode()
		for _, n := range g.Nodes[1:] {
			if got, _ := n.FSM().Encode(); !bytes.Equal(got, want) {
				return false
			}
		}
		return true
	})
	return want
}

// Two legitimate backups must not undo a revocation at governance either (the region's is
// region.TestTwoSnapshotsCannotUndoRevocation): neither a backup from before the tenant existed
// nor one from before the revocation restores, whatever the order, and the refusal names the
// revocation the backup lacks. A backup taken after the revocation restores.
func TestTwoBackupsCannotUndoRevocation(t *testing.T) {
	g := governancetest.Start(t, 3)
	ctx := g.Context(60 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	snapA := backup(t, g) // no tenant beta yet
	g.CreateTenant("beta", devAnchor, "eu")
	op := g.Client(g.WaitLeader())
	if _, err := op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "svc-ledger", Tenant: "beta", Service: "ledger"}); err != nil {
		t.Fatalf("CreateService: %v", err)
	}
	snapB := backup(t, g) // beta/ledger active
	if _, err := op.Revoke(ctx, &kv1.RevokeRequest{RequestId: "rev-ledger", Target: &kv1.KeyScope{Tenant: "beta", Service: "ledger"}, Reason: "test"}); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	before := sameState(t, g)

	for _, c := range []struct {
		name string
		snap []byte
	}{{"a backup from before the tenant existed", snapA}, {"a backup from before the revocation", snapB},
		{"the first backup again", snapA}} {
		err := restore(t, g, c.snap)
		if !errors.Is(err, govfsm.ErrSnapshotLacksRevocations) {
			t.Fatalf("restoring %s: %v, want ErrSnapshotLacksRevocations", c.name, err)
		}
		if !strings.Contains(err.Error(), "service beta/ledger revoked") {
			t.Errorf("the refusal of %s does not name the revocation it lacks: %v", c.name, err)
		}
	}
	if got := sameState(t, g); !bytes.Equal(got, before) {
		t.Fatal("a refused restore changed the state")
	}
	for i, n := range g.Nodes {
		svcs, err := n.FSM().Services("beta", "", 10)
		if err != nil || len(svcs) != 1 || !svcs[0].Revoked {
			t.Fatalf("node %d: beta's services after the refused restores: %+v, %v; want ledger revoked", i, svcs, err)
		}
	}
	// A backup taken after the revocation restores, and keeps it.
	snapC := backup(t, g)
	if err := restore(t, g, snapC); err != nil {
		t.Fatalf("restoring a backup taken after the revocation: %v", err)
	}
	svcs, err := g.Nodes[g.WaitLeader()].FSM().Services("beta", "", 10)
	if err != nil || len(svcs) != 1 || !svcs[0].Revoked {
		t.Fatalf("beta's services after restoring the later backup: %+v, %v", svcs, err)
	}
}
