package region_test

import (
	"context"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// A snapshot taken before a revocation must not bring the revoked key back when restored.
func TestRestoreCannotUndoRevocation(t *testing.T) {
	r := setup(t)
	ctx := ctxT(t)
	c := r.WrapClient(0, "acme", "payments")
	gen, err := c.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: ref})
	if err != nil {
		t.Fatal(err)
	}
	admin := r.AdminClient(r.Leader())
	stream, err := admin.SnapshotSave(ctx, &kv1.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []*kv1.SnapshotChunk
	for {
		ch, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SnapshotSave: %v", err)
		}
		chunks = append(chunks, ch)
	}
	if _, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "rev", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "test"}); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	before := r.Nodes[r.Leader()].State().Hash()

	up, err := admin.SnapshotRestore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, ch := range chunks {
		req := &kv1.SnapshotRestoreRequest{Chunk: ch}
		if i == 0 {
			req.RequestId = "restore-old"
		}
		if err := up.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	_, err = up.CloseAndRecv()
	wantCode(t, err, codes.FailedPrecondition, "restoring a snapshot from before a revocation")
	if r.Nodes[r.Leader()].State().Hash() != before {
		t.Fatal("a refused restore changed the state")
	}
	_, err = c.Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob()})
	wantCode(t, err, codes.FailedPrecondition, "unwrap of the revoked key after the refused restore")
}

// The two-snapshot attack (issue 14, finding 3): snapshot A before a tenant exists, snapshot B
// before one of its keys is revoked, revoke, then restore A (which empties the revocation log)
// and B (which the log no longer contradicts). The durable revocation set refuses both, and the
// revoked key stays refused on every node.
func TestTwoSnapshotsCannotUndoRevocation(t *testing.T) {
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	snapA := saveSnapshot(t, admin) // no tenant beta yet
	createTenant(t, admin, r.Anchor, "beta", "ledger")
	w := mustWrap(t, r, 0, "beta", "ledger")
	snapB := saveSnapshot(t, admin) // beta/ledger v1 active
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev-beta", Scope: &kv1.KeyScope{Tenant: "beta", Service: "ledger"}, Reason: "test"}); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	waitSameState(t, r)
	before := hashes(r)

	_, err := restoreSnapshot(t, admin, "restore-a", snapA)
	wantCode(t, err, codes.FailedPrecondition, "restoring a snapshot from before the tenant existed")
	if !strings.Contains(status.Convert(err).Message(), "service beta/ledger") {
		t.Errorf("the refusal does not name the missing revocation: %v", err)
	}
	_, err = restoreSnapshot(t, admin, "restore-b", snapB)
	wantCode(t, err, codes.FailedPrecondition, "restoring a snapshot from before the revocation")
	if got := hashes(r); !maps.Equal(got, before) {
		t.Fatal("a refused restore changed the state")
	}
	for _, i := range running(r) {
		err := retryUnavailable(t, "unwrap on "+r.Cfgs[i].NodeID, func() error {
			_, err := r.WrapClient(i, "beta", "ledger").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.blob, Context: w.ctx})
			return err
		})
		wantCode(t, err, codes.FailedPrecondition, "unwrap of the revoked key on "+r.Cfgs[i].NodeID)
	}
	// A snapshot taken after the revocation still restores.
	snapC := saveSnapshot(t, admin)
	if _, err := restoreSnapshot(t, admin, "restore-c", snapC); err != nil {
		t.Fatalf("restoring a snapshot taken after the revocation: %v", err)
	}
}

// A follower refuses a snapshot from its leader (InstallSnapshot) that lacks a revocation it has
// applied, here sent by a leader that restored it without the admin API's check; and the leader
// itself still refuses the key, from its durable revocation set.
func TestFollowerRefusesSnapshotWithoutRevocation(t *testing.T) {
	r := setup(t)
	ld := r.Leader()
	admin := r.AdminClient(ld)
	w := mustWrap(t, r, 0, "acme", "payments")
	var file []byte
	for _, c := range saveSnapshot(t, admin) {
		file = append(file, c.GetData()...)
	}
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "test"}); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	waitSameState(t, r)
	// Raft's restore returns once its next entry commits, which needs a follower that took the
	// snapshot: none will, so it returns only when the region is closed below.
	restored := make(chan error, 1)
	leader := r.Nodes[ld]
	go func() { restored <- leader.RestoreUnchecked(context.Background(), file) }()
	for _, f := range r.Followers() {
		clustertest.Eventually(t, 20*time.Second, r.Cfgs[f].NodeID+" refusing the leader's snapshot", func() bool {
			return r.Nodes[f].RefusedSnapshots() > 0
		})
		if _, err := r.Nodes[f].State().Usable("acme", "payments", 1, fsm.OpUnwrap); !errors.Is(err, fsm.ErrRevoked) {
			t.Errorf("%s: acme/payments v1 after the refused snapshot: %v, want revoked", r.Cfgs[f].NodeID, err)
		}
	}
	for _, i := range running(r) {
		_, err := r.WrapClient(i, "acme", "payments").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.blob, Context: w.ctx})
		if c := status.Code(err); c != codes.FailedPrecondition && c != codes.Unavailable {
			t.Errorf("unwrap of the revoked key on %s: %v, want FailedPrecondition or Unavailable", r.Cfgs[i].NodeID, err)
		}
	}
	r.Close()
	if err := <-restored; err == nil {
		t.Error("the restore no follower took succeeded")
	}
}
