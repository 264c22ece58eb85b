package governance_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
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
		if !errors.Is(err, governance.ErrSnapshotLacksRevocations) {
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

// A follower refuses a snapshot from its leader (InstallSnapshot) that lacks a revocation in its
// event log: the state machine's check, as the cluster calls it, with the state unchanged. A
// snapshot that only adds to the log is installed.
func TestInstallRefusesSnapshotWithoutRevocation(t *testing.T) {
	old := governance.NewFSM()
	mustOK(t, apply(t, old, cmd(governance.OpCreateTenant, "c1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustOK(t, apply(t, old, cmd(governance.OpCreateService, "s1", "acme", withService("billing", 0))))
	oldSnap, err := old.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f := governance.NewFSM()
	mustOK(t, apply(t, f, cmd(governance.OpCreateTenant, "c1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustOK(t, apply(t, f, cmd(governance.OpCreateService, "s1", "acme", withService("billing", 0))))
	mustOK(t, apply(t, f, cmd(governance.OpRevoke, "r1", "acme", withService("billing", 2))))
	before, _ := f.Encode()

	err = f.RestoreKind(io.NopCloser(bytes.NewReader(oldSnap)), cluster.RestoreInstall, 0)
	if !errors.Is(err, governance.ErrSnapshotLacksRevocations) || !errors.Is(err, cluster.ErrSnapshotRefused) || !strings.Contains(err.Error(), "key acme/billing v2 revoked") {
		t.Fatalf("installing a snapshot without the revocation: %v, want ErrSnapshotLacksRevocations naming acme/billing v2", err)
	}
	if after, _ := f.Encode(); !bytes.Equal(after, before) {
		t.Fatal("a refused install changed the state")
	}
	// A snapshot whose log has the revocation at its cursor, with more after it, installs.
	newer := governance.NewFSM()
	if err := newer.Restore(io.NopCloser(bytes.NewReader(before))); err != nil {
		t.Fatal(err)
	}
	mustOK(t, apply(t, newer, cmd(governance.OpLock, "l1", "acme")))
	newSnap, _ := newer.Encode()
	if err := f.RestoreKind(io.NopCloser(bytes.NewReader(newSnap)), cluster.RestoreInstall, 0); err != nil {
		t.Fatalf("installing a later snapshot: %v", err)
	}
	// A forked log (another revocation at the revocation's cursor) is refused too.
	fork := governance.NewFSM()
	mustOK(t, apply(t, fork, cmd(governance.OpCreateTenant, "c1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustOK(t, apply(t, fork, cmd(governance.OpCreateService, "s1", "acme", withService("billing", 0))))
	mustOK(t, apply(t, fork, cmd(governance.OpRevoke, "r-other", "acme", withService("billing", 1))))
	forkSnap, _ := fork.Encode()
	if err := f.RestoreKind(io.NopCloser(bytes.NewReader(forkSnap)), cluster.RestoreInstall, 0); !errors.Is(err, governance.ErrSnapshotLacksRevocations) {
		t.Fatalf("installing a forked snapshot: %v, want ErrSnapshotLacksRevocations", err)
	}
	// The node's own snapshot at start is not checked (its log follows).
	if err := f.RestoreKind(io.NopCloser(bytes.NewReader(oldSnap)), cluster.RestoreStartup, 0); err != nil {
		t.Fatalf("restoring at start: %v", err)
	}
}
