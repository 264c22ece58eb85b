package region_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestRestartAll stops every node and starts them all again from their data directories: every
// key and every blob wrapped before still unwraps, on every node. Nothing unsealed survives a
// restart, so the new leader unseals each L2 through the file anchor again and the followers fetch
// it from the leader again; a revocation made before the restart still holds.
func TestRestartAll(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	createTenant(t, admin, r.Anchor, "globex", "payments", "ledger")
	type blob struct {
		tenant, service string
		w               wrapped
	}
	var blobs []blob
	for i := range r.Nodes {
		blobs = append(blobs,
			blob{"acme", "payments", mustWrap(t, r, i, "acme", "payments")},
			blob{"globex", "payments", mustWrap(t, r, i, "globex", "payments")},
			blob{"globex", "ledger", mustWrap(t, r, i, "globex", "ledger")})
	}
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "globex", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	blobs = append(blobs, blob{"globex", "ledger", mustWrap(t, r, 1, "globex", "ledger")})
	revoked := mustWrap(t, r, 2, "acme", "payments")
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot-acme", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	var kept []blob // the acme/payments@v1 blobs are revoked with it
	for _, b := range blobs {
		if b.tenant != "acme" {
			kept = append(kept, b)
		}
	}
	kept = append(kept, blob{"acme", "payments", mustWrap(t, r, 0, "acme", "payments")})
	waitSameState(t, r)
	want := r.Nodes[r.Leader()].State().Hash()

	for i := range r.Nodes {
		r.Kill(i)
	}
	for i := range r.Nodes {
		r.Start(i)
	}
	for i := range r.Nodes {
		if st := r.Nodes[i].Status(); st.GetKeyringTenantKeys() != 0 || st.GetKeyringServiceKeys() != 0 {
			t.Fatalf("%s holds keys right after starting: %v", r.Cfgs[i].NodeID, st)
		}
	}
	r.WaitLeader()
	r.WaitServing()
	waitSameState(t, r)
	if got := r.Nodes[r.Leader()].State().Hash(); got != want {
		t.Fatal("the state after restarting every node differs from the state before")
	}
	for i := range r.Nodes {
		for _, b := range kept {
			mustUnwrap(t, r, i, b.tenant, b.service, b.w)
		}
		// A node whose lease lapsed on a busy machine answers Unavailable ("try another node"),
		// which is no answer about the key: ask again until it answers.
		err := retryUnavailable(t, "unwrap of the revoked key on "+r.Cfgs[i].NodeID, func() error {
			_, err := r.WrapClient(i, "acme", "payments").Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: revoked.blob, Context: revoked.ctx})
			return err
		})
		wantCode(t, err, codes.FailedPrecondition, "unwrap of a key revoked before the restart")
	}
	// Writes work again: a new key under an L2 that was unsealed anew.
	if _, err := r.AdminClient(r.Followers()[0]).CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "after", Tenant: "globex", Service: "billing"}); err != nil {
		t.Fatalf("CreateKey after the restart: %v", err)
	}
	w := mustWrap(t, r, 2, "globex", "billing")
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "globex", "billing", w)
	}
}
