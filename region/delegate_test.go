package region_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// delegate asks node i for a delegated wrapping key of tenant/service as that service, retrying
// while the node is between leases, and returns the answer and its error.
func delegate(t *testing.T, r *regiontest.Region, i int, caller [2]string, ref *kv1.KeyRef) (*kv1.DelegateWrapResponse, error) {
	t.Helper()
	c := r.WrapClient(i, caller[0], caller[1])
	var resp *kv1.DelegateWrapResponse
	err := retryUnavailable(t, "DelegateWrap on "+r.Cfgs[i].NodeID, func() (err error) {
		resp, err = c.DelegateWrap(ctxT(t), &kv1.DelegateWrapRequest{Key: ref})
		return err
	})
	return resp, err
}

// TestDelegateWrap: a delegated key seals, on the caller's side, data keys that every node of the
// region opens (with their context, and only with it); it names the current version, holds the
// default limits, and two answers never share a salt.
func TestDelegateWrap(t *testing.T) {
	r := regiontest.Start(t, 3)
	createTenant(t, r.AdminClient(r.WaitLeader()), r.Anchor, "acme", "payments")
	me := [2]string{"acme", "payments"}
	resp, err := delegate(t, r, 1, me, &kv1.KeyRef{Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	id := wrap.KeyID{Tenant: "acme", Service: "payments", Version: 1}
	if got := (wrap.KeyID{Tenant: resp.GetKey().GetTenant(), Service: resp.GetKey().GetService(), Version: resp.GetKey().GetVersion()}); got != id {
		t.Fatalf("delegated key of %v, want %v", got, id)
	}
	if resp.GetMaxItems() != wrap.ItemsPerDerivedKey || resp.GetTtl().AsDuration() != region.DefaultDelegateTTL {
		t.Fatalf("limits: %d items, %v", resp.GetMaxItems(), resp.GetTtl().AsDuration())
	}
	d, err := wrap.NewWrapDelegate(id, wrap.KDF(resp.GetKdf()), resp.GetSalt(), resp.GetDerivedKey())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destroy()
	w := wrapped{plain: randKey(t), ctx: []byte("order-7")}
	if w.blob, err = d.Wrap(w.plain, w.ctx); err != nil {
		t.Fatal(err)
	}
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", w)
	}
	c := r.ServingWrapClient(0, "acme", "payments")
	if resp, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.blob, Context: []byte("order-8")}); err == nil || len(resp.GetPlaintext()) != 0 {
		t.Fatalf("a delegated blob opened under another context: %v", err)
	}
	again, err := delegate(t, r, 2, me, &kv1.KeyRef{Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again.GetSalt(), resp.GetSalt()) || bytes.Equal(again.GetDerivedKey(), resp.GetDerivedKey()) {
		t.Fatal("two delegations share a salt or a key")
	}
}

// TestDelegateWrapRefusals: DelegateWrap is refused exactly where a Wrap of the key is — another
// service's key by the default policy, another tenant's, a revoked version, a locked tenant, an
// unknown key, a malformed reference — and on a node configured to hand out none. None of these
// answers carries key material.
func TestDelegateWrapRefusals(t *testing.T) {
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) {
		if c.NodeID == "node-3" {
			c.DelegateTTL = -1
		}
	}))
	admin := r.AdminClient(r.WaitLeader())
	createTenant(t, admin, r.Anchor, "acme", "payments", "ledger", "old")
	createTenant(t, admin, r.Anchor, "other", "app")
	createTenant(t, admin, r.Anchor, "locked", "app")
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "revoke-old", Reason: "test",
		Scope: &kv1.KeyScope{Tenant: "acme", Service: "old", Version: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.LockTenant(ctxT(t), &kv1.LockTenantRequest{RequestId: "lock", Tenant: "locked", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	payments := [2]string{"acme", "payments"}
	for _, tc := range []struct {
		name   string
		node   int
		caller [2]string
		ref    *kv1.KeyRef
		want   codes.Code
	}{
		{"another service's key", 0, payments, &kv1.KeyRef{Tenant: "acme", Service: "ledger"}, codes.PermissionDenied},
		{"another tenant's key", 0, payments, &kv1.KeyRef{Tenant: "other", Service: "app"}, codes.PermissionDenied},
		{"a revoked version", 0, [2]string{"acme", "old"}, &kv1.KeyRef{Tenant: "acme", Service: "old", Version: 1}, codes.FailedPrecondition},
		{"a locked tenant", 0, [2]string{"locked", "app"}, &kv1.KeyRef{Tenant: "locked", Service: "app"}, codes.FailedPrecondition},
		{"an unknown version", 0, payments, &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 9}, codes.NotFound},
		{"no key", 0, payments, nil, codes.InvalidArgument},
		{"delegation off on the node", 2, payments, &kv1.KeyRef{Tenant: "acme", Service: "payments"}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := delegate(t, r, tc.node, tc.caller, tc.ref)
			if status.Code(err) != tc.want {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if resp != nil {
				t.Fatal("a refusal carried an answer")
			}
		})
	}
	// The node with delegation off still wraps.
	mustWrap(t, r, 2, "acme", "payments")
}

// TestDelegatedKeyOpensNothingElse: a delegated key is not the key of any blob the region made:
// sealing with it under the salt of a region blob, as an attacker holding it might try, makes a
// blob the region refuses, and the region's own blobs are not opened by it.
func TestDelegatedKeyOpensNothingElse(t *testing.T) {
	r := regiontest.Start(t, 3)
	createTenant(t, r.AdminClient(r.WaitLeader()), r.Anchor, "acme", "payments")
	resp, err := delegate(t, r, 0, [2]string{"acme", "payments"}, &kv1.KeyRef{Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	theirs := mustWrap(t, r, 0, "acme", "payments")
	h, err := wrap.ParseHeader(theirs.blob)
	if err != nil {
		t.Fatal(err)
	}
	// The delegated key with the region blob's salt: a forgery the region must refuse.
	forged, err := wrap.NewWrapDelegate(h.Parent, h.KDF, h.Salt[:], resp.GetDerivedKey())
	if err != nil {
		t.Fatal(err)
	}
	pt := make([]byte, wrap.KeySize)
	rand.Read(pt)
	blob, err := forged.Wrap(pt, theirs.ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := r.ServingWrapClient(0, "acme", "payments")
	if _, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: blob, Context: theirs.ctx}); err == nil {
		t.Fatal("a blob sealed with a delegated key under another salt opened")
	}
}

// TestDelegateWrapUnderQuota: a delegated key stands for up to wrap.ItemsPerDerivedKey wraps that
// no node counts, so a key whose service or tenant has a quota gets none (FailedPrecondition: the
// gateway wraps at the region, each data key counted); a key with no quota still gets one.
func TestDelegateWrapUnderQuota(t *testing.T) {
	r := regiontest.Start(t, 3)
	createTenant(t, r.AdminClient(r.WaitLeader()), r.Anchor, "acme", "payments", "ledger")
	createTenant(t, r.AdminClient(r.WaitLeader()), r.Anchor, "other", "app")
	if err := setQuota(t, r, r.WaitLeader(), "quota-svc", "acme", "payments", &kv1.Quota{Rate: 1000, Burst: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := setQuota(t, r, r.WaitLeader(), "quota-tenant", "other", "", &kv1.Quota{Rate: 1000, Burst: 1000}); err != nil {
		t.Fatal(err)
	}
	for _, caller := range [][2]string{{"acme", "payments"}, {"other", "app"}} {
		for i := range r.Nodes {
			// SetQuota returned once applied on the leader; the others apply it a moment later.
			var err error
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				_, err = delegate(t, r, i, caller, &kv1.KeyRef{Tenant: caller[0], Service: caller[1]})
				if status.Code(err) == codes.FailedPrecondition || time.Now().After(deadline) {
					break
				}
			}
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("%v on %s: %v, want FailedPrecondition", caller, r.Cfgs[i].NodeID, err)
			}
		}
	}
	// Not the service next to it, which has no quota of its own nor its tenant's.
	if _, err := delegate(t, r, 0, [2]string{"acme", "ledger"}, &kv1.KeyRef{Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
}

// TestDelegateWrapAudited: every delegated key handed out is audited on the node that handed it
// out — the caller, the key version and the salt, which every blob sealed under it carries — so
// that the blobs a leaked delegated key could have made can be found; the record carries no key
// bytes.
func TestDelegateWrapAudited(t *testing.T) {
	r := regiontest.Start(t, 3)
	createTenant(t, r.AdminClient(r.WaitLeader()), r.Anchor, "acme", "payments")
	resp, err := delegate(t, r, 1, [2]string{"acme", "payments"}, &kv1.KeyRef{Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := findAudit(auditLines(t, r, 1), func(e audit.Event) bool { return e.Kind == "key.delegate" })
	switch {
	case !ok:
		t.Fatal("no key.delegate record on the node that handed the key out")
	case rec.Tenant != "acme" || rec.Service != "payments" || rec.Version != 1 ||
		rec.Detail["salt"] != hex.EncodeToString(resp.GetSalt()) || !strings.Contains(rec.Actor, "tenant/acme/service/payments"):
		t.Fatalf("record %+v: want acme/payments v1, the salt, the caller", rec)
	}
	b, err := os.ReadFile(filepath.Join(r.Cfgs[1].DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	key := resp.GetDerivedKey()
	for _, enc := range [][]byte{key, []byte(hex.EncodeToString(key)), []byte(base64.StdEncoding.EncodeToString(key))} {
		if bytes.Contains(b, enc) {
			t.Fatal("the audit log holds the delegated key's bytes")
		}
	}
}
