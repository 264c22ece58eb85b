package region_test

import (
	"io"
	"testing"

	"google.golang.org/grpc/codes"

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
