package region_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestRequestIDReuseIsRefused is issue 14, finding 10: a request id reused for another write of
// the same kind answered with the first write's result and applied nothing (RevokeKey of acme/sb
// under the id of acme/sa's said "revoked", fenced on every node, and acme/sb kept wrapping). For
// every write of the admin API, the id of a first call reused with other parameters is
// InvalidArgument and changes no node's state; an identical retry gets the first call's answer.
func TestRequestIDReuseIsRefused(t *testing.T) {
	r := setup(t)
	ctx := ctxT(t)
	ld := r.WaitLeader()
	admin := r.AdminClient(r.Followers()[0]) // forwarded to the leader, as most writes are
	// reuse checks that a call is InvalidArgument and leaves every node's state as it was.
	reuse := func(what string, call func() error) {
		t.Helper()
		waitSameState(t, r)
		before := r.Nodes[ld].State().Hash()
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: %v, want InvalidArgument", what, err)
		}
		waitSameState(t, r)
		if r.Nodes[ld].State().Hash() != before {
			t.Fatalf("%s changed the state", what)
		}
	}
	same := func(what string, first, retry proto.Message) {
		t.Helper()
		if !proto.Equal(first, retry) {
			t.Fatalf("%s: retry answered %v, first call %v", what, retry, first)
		}
	}
	revoke := func(id string, scope *kv1.KeyScope, reason string) (*kv1.RevokeKeyResponse, error) {
		resp, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: id, Scope: scope, Reason: reason})
		if err != nil {
			return nil, err
		}
		// The fence is made again for a retry (its time and who confirmed vary); what it fences
		// must not.
		return &kv1.RevokeKeyResponse{Revoked: resp.GetRevoked(), Fence: &kv1.FenceResult{Index: resp.GetFence().GetIndex()}}, nil
	}

	// CreateTenant.
	ct := &kv1.CreateTenantRequest{RequestId: "ct", Tenant: "globex", AnchorUri: r.Anchor}
	first, err := admin.CreateTenant(ctx, ct)
	if err != nil {
		t.Fatal(err)
	}
	reuse("CreateTenant of another tenant", func() error {
		_, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "ct", Tenant: "initech", AnchorUri: r.Anchor})
		return err
	})
	again, err := admin.CreateTenant(ctx, ct)
	if err != nil {
		t.Fatal(err)
	}
	same("CreateTenant", first, again)

	// CreateKey.
	ck := &kv1.CreateKeyRequest{RequestId: "ck", Tenant: "acme", Service: "sa"}
	key, err := admin.CreateKey(ctx, ck)
	if err != nil {
		t.Fatal(err)
	}
	reuse("CreateKey of another service", func() error {
		_, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "ck", Tenant: "acme", Service: "sb"})
		return err
	})
	keyAgain, err := admin.CreateKey(ctx, ck)
	if err != nil {
		t.Fatal(err)
	}
	same("CreateKey", key, keyAgain)
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "ck-sb", Tenant: "acme", Service: "sb"}); err != nil {
		t.Fatal(err)
	}

	// RotateKey: a retry is re-prepared (a fresh sealed key for the next version) and is still the
	// same request.
	rk := &kv1.RotateKeyRequest{RequestId: "rk", Tenant: "acme", Service: "sa"}
	key, err = admin.RotateKey(ctx, rk)
	if err != nil {
		t.Fatal(err)
	}
	reuse("RotateKey of another service", func() error {
		_, err := admin.RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "rk", Tenant: "acme", Service: "sb"})
		return err
	})
	keyAgain, err = admin.RotateKey(ctx, rk)
	if err != nil {
		t.Fatal(err)
	}
	same("RotateKey", key, keyAgain)
	if key.GetCurrentVersion() != 2 {
		t.Fatalf("rotated to %d", key.GetCurrentVersion())
	}

	// RevokeKey, each scope: another target under the id of a revocation is refused, and the
	// target stays usable on every node.
	for _, c := range []struct {
		id            string
		scope, target *kv1.KeyScope
	}{
		{"rv-version", &kv1.KeyScope{Tenant: "acme", Service: "sa", Version: 1}, &kv1.KeyScope{Tenant: "acme", Service: "sb", Version: 1}},
		{"rv-service", &kv1.KeyScope{Tenant: "acme", Service: "sa"}, &kv1.KeyScope{Tenant: "acme", Service: "sb"}},
		{"rv-tenant", &kv1.KeyScope{Tenant: "globex"}, &kv1.KeyScope{Tenant: "acme"}},
	} {
		rv, err := revoke(c.id, c.scope, "test")
		if err != nil {
			t.Fatal(err)
		}
		reuse("RevokeKey "+c.id+" of another target", func() error {
			_, err := revoke(c.id, c.target, "test")
			return err
		})
		reuse("RevokeKey "+c.id+" with another reason", func() error {
			_, err := revoke(c.id, c.scope, "another reason")
			return err
		})
		for i := range r.Nodes {
			mustWrap(t, r, i, "acme", "sb")
		}
		rvAgain, err := revoke(c.id, c.scope, "test")
		if err != nil {
			t.Fatal(err)
		}
		same("RevokeKey "+c.id, rv, rvAgain)
	}

	// LockTenant, UnlockTenant (on acme, the only live tenant left).
	k := ownertest.New(t) // the tenants' owner key: a rekey needs its consent
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "ct-initech", Tenant: "initech", AnchorUri: r.Anchor, OwnerPublicKey: k.Public}); err != nil {
		t.Fatal(err)
	}
	lk := &kv1.LockTenantRequest{RequestId: "lk", Tenant: "initech", Reason: "test"}
	lock, err := admin.LockTenant(ctx, lk)
	if err != nil {
		t.Fatal(err)
	}
	lock.Fence = &kv1.FenceResult{Index: lock.GetFence().GetIndex()}
	reuse("LockTenant of another tenant", func() error {
		_, err := admin.LockTenant(ctx, &kv1.LockTenantRequest{RequestId: "lk", Tenant: "acme", Reason: "test"})
		return err
	})
	lockAgain, err := admin.LockTenant(ctx, lk)
	if err != nil {
		t.Fatal(err)
	}
	lockAgain.Fence = &kv1.FenceResult{Index: lockAgain.GetFence().GetIndex()}
	same("LockTenant", lock, lockAgain)
	mustWrap(t, r, 0, "acme", "sb")

	ul := &kv1.UnlockTenantRequest{RequestId: "ul", Tenant: "initech"}
	tn, err := admin.UnlockTenant(ctx, ul)
	if err != nil {
		t.Fatal(err)
	}
	reuse("UnlockTenant of another tenant", func() error {
		_, err := admin.UnlockTenant(ctx, &kv1.UnlockTenantRequest{RequestId: "ul", Tenant: "acme"})
		return err
	})
	tnAgain, err := admin.UnlockTenant(ctx, ul)
	if err != nil {
		t.Fatal(err)
	}
	same("UnlockTenant", tn, tnAgain)

	// RekeyTenant: a retry reseals afresh and is still the same request (acme gets the owner key
	// too, so that its rekey under initech's id passes the consent check and meets the reuse).
	registerOwner(t, r, "acme", k)
	newURI := "file://" + filepath.Join(t.TempDir(), "new-root.key")
	p, err := anchor.Open(ctx, newURI, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	rt := &kv1.RekeyTenantRequest{RequestId: "rt", Tenant: "initech", AnchorUri: newURI, Consent: rekeyConsent(t, k, "initech", newURI, "rt")}
	tn, err = admin.RekeyTenant(ctx, rt)
	if err != nil {
		t.Fatal(err)
	}
	reuse("RekeyTenant of another tenant", func() error {
		_, err := admin.RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rt", Tenant: "acme", AnchorUri: newURI, Consent: rekeyConsent(t, k, "acme", newURI, "rt")})
		return err
	})
	tnAgain, err = admin.RekeyTenant(ctx, rt)
	if err != nil {
		t.Fatal(err)
	}
	same("RekeyTenant", tn, tnAgain)
	if acme, err := admin.DescribeTenant(ctx, &kv1.DescribeTenantRequest{Tenant: "acme"}); err != nil || acme.GetTenant().GetAnchorUri() != r.Anchor {
		t.Fatalf("acme's anchor: %v, %v", acme.GetTenant().GetAnchorUri(), err)
	}
	for i := range r.Nodes {
		mustWrap(t, r, i, "acme", "sb")
	}
}

// TestValidationBeforeReplication is issue 14, finding 12: a revocation's or lockout's reason was
// checked only when applied, so refused calls with multi-megabyte reasons were replicated to every
// node's Raft log (raft.db grew from 64 KB to 37 MB), and an empty reason was accepted. Both are
// refused where they arrive, and no node's log grows.
func TestValidationBeforeReplication(t *testing.T) {
	r := setup(t)
	ctx := ctxT(t)
	waitSameState(t, r)
	// What this node proposed to the Raft log: the last log index would also count what the region
	// appends on its own (a new leader's first entry, the L1 checks' results), so it is read from
	// the proposals metric instead.
	proposed := func() []float64 {
		var out []float64
		for _, n := range r.Nodes {
			out = append(out, proposals(t, n))
		}
		return out
	}
	before := proposed()
	huge := strings.Repeat("x", 3<<20) // under gRPC's message limit: it is the region that must refuse it
	calls := map[string]func(admin kv1.AdminServiceClient) error{
		"revoke with a 3 MiB reason": func(admin kv1.AdminServiceClient) error {
			_, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "big-rv", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: huge})
			return err
		},
		"revoke with a 1025-byte reason": func(admin kv1.AdminServiceClient) error {
			_, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "long-rv", Scope: &kv1.KeyScope{Tenant: "acme"}, Reason: strings.Repeat("y", 1025)})
			return err
		},
		"lock with a 3 MiB reason": func(admin kv1.AdminServiceClient) error {
			_, err := admin.LockTenant(ctx, &kv1.LockTenantRequest{RequestId: "big-lk", Tenant: "acme", Reason: huge})
			return err
		},
		"revoke without a reason": func(admin kv1.AdminServiceClient) error {
			_, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "empty-rv", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}})
			return err
		},
		"revoke with a blank reason": func(admin kv1.AdminServiceClient) error {
			_, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "blank-rv", Scope: &kv1.KeyScope{Tenant: "acme"}, Reason: "  "})
			return err
		},
		"lock without a reason": func(admin kv1.AdminServiceClient) error {
			_, err := admin.LockTenant(ctx, &kv1.LockTenantRequest{RequestId: "empty-lk", Tenant: "acme"})
			return err
		},
		"lock with a control character": func(admin kv1.AdminServiceClient) error {
			_, err := admin.LockTenant(ctx, &kv1.LockTenantRequest{RequestId: "ctl-lk", Tenant: "acme", Reason: "a\x1b[2Jb"})
			return err
		},
	}
	for name, call := range calls {
		for i := range r.Nodes { // on the leader and on followers, which would forward
			if err := call(r.AdminClient(i)); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%s on %s: %v, want InvalidArgument", name, r.Cfgs[i].NodeID, err)
			}
		}
	}
	if after := proposed(); !slices.Equal(after, before) {
		t.Fatalf("refused calls reached the Raft log: the nodes proposed %v commands, %v before", after, before)
	}
	mustWrap(t, r, 0, "acme", "payments")
	// The metric does count: an accepted revocation is proposed.
	if _, err := r.AdminClient(0).RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "ok-rv", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "rotated out"}); err != nil {
		t.Fatal(err)
	}
	if after := proposed(); after[0] != before[0]+1 {
		t.Fatalf("an accepted revocation on node-1: the nodes proposed %v commands, %v before", after, before)
	}
}
