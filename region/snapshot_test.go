package region_test

import (
	"io"
	"maps"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func saveSnapshot(t *testing.T, admin kv1.AdminServiceClient) []*kv1.SnapshotChunk {
	t.Helper()
	stream, err := admin.SnapshotSave(ctxT(t), &kv1.SnapshotSaveRequest{})
	if err != nil {
		t.Fatalf("SnapshotSave: %v", err)
	}
	var chunks []*kv1.SnapshotChunk
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			return chunks
		}
		if err != nil {
			t.Fatalf("SnapshotSave: %v", err)
		}
		chunks = append(chunks, c)
	}
}

func restoreSnapshot(t *testing.T, admin kv1.AdminServiceClient, id string, chunks []*kv1.SnapshotChunk) (*kv1.SnapshotRestoreResponse, error) {
	t.Helper()
	stream, err := admin.SnapshotRestore(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range chunks {
		req := &kv1.SnapshotRestoreRequest{Chunk: c}
		if i == 0 {
			req.RequestId = id
		}
		if err := stream.Send(req); err != nil {
			break // the server refused early; CloseAndRecv has its status
		}
	}
	return stream.CloseAndRecv()
}

func cloneChunks(chunks []*kv1.SnapshotChunk) []*kv1.SnapshotChunk {
	out := make([]*kv1.SnapshotChunk, len(chunks))
	for i, c := range chunks {
		out[i] = proto.Clone(c).(*kv1.SnapshotChunk)
	}
	return out
}

// TestSnapshotIntoFreshRegion saves a snapshot on one region and restores it into a fresh one
// (same region name, another CA, the same file anchor): the same blobs unwrap there, on every node.
// A snapshot with a wrong checksum, of another region, or without its metadata is refused with
// InvalidArgument and changes nothing.
func TestSnapshotIntoFreshRegion(t *testing.T) {
	t.Parallel()
	r1 := setup(t)
	admin1 := r1.AdminClient(r1.Leader())
	createTenant(t, admin1, r1.Anchor, "globex", "ledger")
	v1 := mustWrap(t, r1, 0, "acme", "payments")
	if _, err := admin1.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r1)
	blobs := []struct {
		tenant, service string
		w               wrapped
	}{
		{"acme", "payments", v1},
		{"acme", "payments", mustWrap(t, r1, 1, "acme", "payments")},
		{"globex", "ledger", mustWrap(t, r1, 2, "globex", "ledger")},
	}
	chunks := saveSnapshot(t, r1.AdminClient(r1.Followers()[0]))
	if len(chunks) == 0 || chunks[0].GetMeta().GetRegion() != "test" || chunks[len(chunks)-1].GetSha256() == nil {
		t.Fatalf("snapshot stream: %d chunks, first meta %v", len(chunks), chunks[0].GetMeta())
	}
	want := r1.Nodes[r1.Leader()].State().Hash()

	r2 := regiontest.Start(t, 3, regiontest.WithAnchor(r1.Anchor))
	if r2.Anchor != r1.Anchor {
		t.Fatalf("the fresh region's anchor is %s, want %s", r2.Anchor, r1.Anchor)
	}
	ld := r2.Leader()
	admin2 := r2.AdminClient(ld)
	// Start returns once every node serves, which a follower may do before it has applied the
	// leader's last entry (the test settings): compare against the settled state.
	waitSameState(t, r2)
	before := hashes(r2)

	bad := map[string]func([]*kv1.SnapshotChunk) []*kv1.SnapshotChunk{
		"wrong checksum": func(c []*kv1.SnapshotChunk) []*kv1.SnapshotChunk {
			c[0].Data[len(c[0].Data)/2] ^= 1
			return c
		},
		"of another region": func(c []*kv1.SnapshotChunk) []*kv1.SnapshotChunk {
			c[0].Meta.Region = "other"
			return c
		},
		"without metadata": func(c []*kv1.SnapshotChunk) []*kv1.SnapshotChunk {
			c[0].Meta = nil
			return c
		},
		"without checksum": func(c []*kv1.SnapshotChunk) []*kv1.SnapshotChunk {
			c[len(c)-1].Sha256 = nil
			return c
		},
		"truncated": func(c []*kv1.SnapshotChunk) []*kv1.SnapshotChunk {
			last := c[len(c)-1]
			last.Data = last.Data[:len(last.Data)-1]
			return c
		},
		"empty": func([]*kv1.SnapshotChunk) []*kv1.SnapshotChunk { return nil },
	}
	for name, mutate := range bad {
		_, err := restoreSnapshot(t, admin2, "bad-"+name, mutate(cloneChunks(chunks)))
		wantCode(t, err, codes.InvalidArgument, "restore of a snapshot "+name)
		if got := hashes(r2); !maps.Equal(got, before) {
			t.Fatalf("a refused restore (%s) changed the state", name)
		}
	}
	// A follower does not restore.
	_, err := restoreSnapshot(t, r2.AdminClient(r2.Followers()[0]), "on-follower", cloneChunks(chunks))
	wantCode(t, err, codes.FailedPrecondition, "restore on a follower")
	if got := hashes(r2); !maps.Equal(got, before) {
		t.Fatal("a refused restore on a follower changed the state")
	}

	if _, err := restoreSnapshot(t, admin2, "restore", chunks); err != nil {
		t.Fatalf("SnapshotRestore into a fresh region: %v", err)
	}
	waitSameState(t, r2)
	if got := r2.Nodes[r2.Leader()].State().Hash(); got != want {
		t.Fatal("the restored region's state differs from the snapshot's region")
	}
	r2.WaitServing()
	for i := range r2.Nodes {
		for _, b := range blobs {
			mustUnwrap(t, r2, i, b.tenant, b.service, b.w)
		}
	}
	// A follower restarted on the installed snapshot serves again with no write after the restore.
	f := r2.Followers()[0]
	r2.Kill(f)
	r2.Start(f)
	r2.WaitServing()
	for _, b := range blobs {
		mustUnwrap(t, r2, f, b.tenant, b.service, b.w)
	}
	// And it carries on from there: version 2 is current, new wraps open on the old region too.
	w := mustWrap(t, r2, 0, "acme", "payments")
	mustUnwrap(t, r1, 0, "acme", "payments", w)
}
