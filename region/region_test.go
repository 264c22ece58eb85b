package region_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code codes.Code, what string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, code)
	}
}

// setup makes tenant acme with service payments on a fresh three-node region.
func setup(t *testing.T) *regiontest.Region {
	t.Helper()
	r := regiontest.Start(t, 3)
	// Writes reach any node; a follower forwards to the leader.
	admin := r.AdminClient(r.Followers()[0])
	if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "t1", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k1", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return r
}

var ref = &kv1.KeyRef{Tenant: "acme", Service: "payments"}

func TestWrapOnOneNodeUnwrapOnEveryOther(t *testing.T) {
	r := setup(t)
	dk := bytes.Repeat([]byte{0x42}, 32)
	ctx := ctxT(t)
	resp, err := r.WrapClient(0, "acme", "payments").Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Clone(dk), Context: []byte("order-1")})
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	if resp.GetKey().GetVersion() != 1 {
		t.Fatalf("wrapped under version %d, want 1", resp.GetKey().GetVersion())
	}
	for i := range r.Nodes {
		got, err := r.WrapClient(i, "acme", "payments").Unwrap(ctx, &kv1.UnwrapRequest{Blob: resp.GetBlob(), Context: []byte("order-1")})
		if err != nil {
			t.Fatalf("Unwrap on node %d: %v", i, err)
		}
		if !bytes.Equal(got.GetPlaintext(), dk) {
			t.Fatalf("node %d unwrapped other bytes", i)
		}
	}
	// The wrong context does not open it.
	_, err = r.WrapClient(1, "acme", "payments").Unwrap(ctx, &kv1.UnwrapRequest{Blob: resp.GetBlob(), Context: []byte("order-2")})
	wantCode(t, err, codes.InvalidArgument, "unwrap with another context")
}

func TestRotateThenRevoke(t *testing.T) {
	r := setup(t)
	ctx := ctxT(t)
	c0 := r.WrapClient(0, "acme", "payments")
	old, err := c0.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: ref})
	if err != nil {
		t.Fatal(err)
	}
	admin := r.AdminClient(r.Leader())
	key, err := admin.RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "rot-1", Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if key.GetCurrentVersion() != 2 {
		t.Fatalf("current version %d after rotation, want 2", key.GetCurrentVersion())
	}
	// The same request id again changes nothing.
	again, err := admin.RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "rot-1", Tenant: "acme", Service: "payments"})
	if err != nil || again.GetCurrentVersion() != 2 {
		t.Fatalf("retried rotation: version %d, %v", again.GetCurrentVersion(), err)
	}
	// New wraps use version 2 on every node once it has applied the rotation; the old blob still unwraps.
	for i := range r.Nodes {
		c := r.WrapClient(i, "acme", "payments")
		got, err := c.Unwrap(ctx, &kv1.UnwrapRequest{Blob: old.GetBlob()})
		if err != nil || !bytes.Equal(got.GetPlaintext(), old.GetPlaintext()) {
			t.Fatalf("node %d: old blob after rotation: %v", i, err)
		}
	}
	// Revoke version 1: once Revoke returns, every node refuses it.
	rv, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "rev-1", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"})
	if err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	if n := len(rv.GetFence().GetConfirmedNodes()); n != 3 {
		t.Fatalf("fence confirmed by %d nodes, want 3: %v", n, rv.GetFence())
	}
	for i := range r.Nodes {
		_, err := r.WrapClient(i, "acme", "payments").Unwrap(ctx, &kv1.UnwrapRequest{Blob: old.GetBlob()})
		wantCode(t, err, codes.FailedPrecondition, "unwrap of a revoked version")
	}
	// Version 2 still works.
	if _, err := c0.Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{1}, 32)}); err != nil {
		t.Fatalf("wrap under version 2 after revoking 1: %v", err)
	}
}
