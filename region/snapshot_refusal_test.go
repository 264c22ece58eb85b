package region_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// restoreWithoutRevocation saves a snapshot, revokes scope, and has the leader restore the
// snapshot without the admin API's check (as a leader without it would). The restore never
// returns while the followers refuse it: the returned channel yields its error once the region is
// closed.
func restoreWithoutRevocation(t *testing.T, r *regiontest.Region, scope *kv1.KeyScope) (leader int, restored chan error) {
	t.Helper()
	ld := r.Leader()
	admin := r.AdminClient(ld)
	var file []byte
	for _, c := range saveSnapshot(t, admin) {
		file = append(file, c.GetData()...)
	}
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev", Scope: scope, Reason: "test"}); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	waitSameState(t, r)
	restored = make(chan error, 1)
	node := r.Nodes[ld]
	go func() { restored <- node.RestoreUnchecked(context.Background(), file) }()
	return ld, restored
}

// snapshotDirs lists the snapshots in a node's Raft snapshot store, or in its refused-snapshot
// directory.
func snapshotDirs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestRefusedSnapshotNotRestoredAtStart: a follower refuses a snapshot from its leader that lacks a
// revocation it has applied (issue 14: the refused snapshot stayed the newest in its Raft snapshot
// store and was restored unchecked at its next start, bringing the revoked key back). The refused
// snapshot is taken out of the store (into snapshots-refused); the restarted follower's state is
// not the refused snapshot's. And a refused snapshot put back into the store, as an earlier
// version left it, is refused by the check at start too: the node starts without it.
func TestRefusedSnapshotNotRestoredAtStart(t *testing.T) {
	r := setup(t)
	mustWrap(t, r, 0, "acme", "payments")
	_, restored := restoreWithoutRevocation(t, r, &kv1.KeyScope{Tenant: "acme", Service: "payments"})
	f := r.Followers()[0]
	dir := r.Cfgs[f].DataDir
	clustertest.Eventually(t, 20*time.Second, r.Cfgs[f].NodeID+" refusing the leader's snapshot", func() bool {
		return r.Nodes[f].RefusedSnapshots() > 0 && len(snapshotDirs(t, filepath.Join(dir, "snapshots-refused"))) > 0
	})
	refused := snapshotDirs(t, filepath.Join(dir, "snapshots-refused"))[0]
	// Restarted, the follower's state is its own: the log it replays (the leader, stuck on the
	// restore, sends it no commit index) or, restored unchecked, the refused snapshot, where
	// acme/payments v1 is usable again.
	notUsable := func(what string) {
		t.Helper()
		if _, err := r.Nodes[f].State().Usable("acme", "payments", 1, fsm.OpUnwrap); err == nil {
			t.Errorf("%s: acme/payments v1 is usable", what)
		}
	}

	r.Kill(f)
	for _, s := range snapshotDirs(t, filepath.Join(dir, "snapshots")) {
		if s == refused {
			t.Fatalf("the refused snapshot %s is still in the snapshot store", s)
		}
	}
	r.Start(f)
	notUsable(r.Cfgs[f].NodeID + " after its restart")

	// The check at start: the refused snapshot back in the store, as an earlier version left it.
	r.Kill(f)
	// The leader sent it again meanwhile: the newest refused copy.
	clustertest.Eventually(t, 20*time.Second, "a refused snapshot kept", func() bool {
		return len(snapshotDirs(t, filepath.Join(dir, "snapshots-refused"))) > 0
	})
	refused = snapshotDirs(t, filepath.Join(dir, "snapshots-refused"))[0]
	if err := os.Rename(filepath.Join(dir, "snapshots-refused", refused), filepath.Join(dir, "snapshots", refused)); err != nil {
		t.Fatal(err)
	}
	r.Start(f)
	if r.Nodes[f].RefusedSnapshots() == 0 {
		t.Error("the refused snapshot was restored at start")
	}
	notUsable(r.Cfgs[f].NodeID + " after a start with the refused snapshot in its store")
	for _, s := range snapshotDirs(t, filepath.Join(dir, "snapshots")) {
		if s == refused {
			t.Errorf("the snapshot refused at start is still in the snapshot store")
		}
	}
	r.Close()
	if err := <-restored; err == nil {
		t.Error("the restore no follower took succeeded")
	}
}

// TestFetchTenantKeyChecksDurableRevocations: a leader whose state lost a tenant's revocation (it
// restored, unchecked, a snapshot from before it) does not hand that tenant's key to a follower:
// its durable revocation set still revokes the tenant (issue 14: the wrap path checked the set,
// the L2 hand-out did not).
func TestFetchTenantKeyChecksDurableRevocations(t *testing.T) {
	r := setup(t)
	mustWrap(t, r, 0, "acme", "payments")
	ld, restored := restoreWithoutRevocation(t, r, &kv1.KeyScope{Tenant: "acme"})
	clustertest.Eventually(t, 20*time.Second, "the leader's state without the tenant's revocation", func() bool {
		tn, err := r.Nodes[ld].State().Tenant("acme")
		return err == nil && tn.Status != fsm.StatusRevoked
	})
	voter := r.Cfgs[(ld+1)%3].NodeID
	cert, err := r.CA.IssueNode(voter, pki.NodeOptions{Region: r.Cfgs[ld].Region})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := transport.Dial(context.Background(), r.Cfgs[ld].RPCAddr, transport.ClientConfig{
		Roots: r.CA.Pool(), Certificate: cert.TLSCertificate(),
		Server: pki.Identity{Kind: pki.KindNode, Region: r.Cfgs[ld].Region, NodeID: r.Cfgs[ld].NodeID},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = kv1.NewNodeServiceClient(conn).FetchTenantKey(ctxShort(t), &kv1.FetchTenantKeyRequest{
		NodeId: voter, Tenant: "acme", TenantKeyVersion: 1,
		Suite:              kv1.HpkeSuite_HPKE_SUITE_X25519_SHA256_AES256GCM,
		RecipientPublicKey: priv.PublicKey().Bytes(),
	})
	wantCode(t, err, codes.FailedPrecondition, "FetchTenantKey of a tenant the durable set revokes")
	if !strings.Contains(status.Convert(err).Message(), "durable revocation set") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	r.Close()
	<-restored
}
