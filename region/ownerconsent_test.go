package region_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// newAnchor makes a development root key and returns its URI.
func newAnchor(t *testing.T, name string) string {
	t.Helper()
	uri := "file://" + filepath.Join(t.TempDir(), name)
	p, err := anchor.Open(ctxT(t), uri, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	return uri
}

// rekeyConsent is the owner's consent to rekeying tenant to uri in regiontest's region, under id.
func rekeyConsent(t *testing.T, k *ownertest.Key, tenant, uri, id string) string {
	return k.Consent(t, owner.Statement{Tenant: tenant, Op: owner.OpRekey, Anchor: uri, Region: "test", RequestID: id})
}

// registerOwner registers k as tenant's first owner key (on the operator's word).
func registerOwner(t *testing.T, r *regiontest.Region, tenant string, k *ownertest.Key) {
	t.Helper()
	if _, err := r.AdminClient(r.WaitLeader()).SetOwnerKey(ctxT(t), &kv1.SetOwnerKeyRequest{RequestId: "owner-" + tenant, Tenant: tenant, OwnerPublicKey: k.Public}); err != nil {
		t.Fatalf("SetOwnerKey %s: %v", tenant, err)
	}
}

// TestOperatorAloneCannotRekey: on a region that is not governed, an operator with an admin
// identity alone cannot rekey a tenant to an anchor they control (which would unseal the tenant's
// L2 with the customer's L1 and seal it under the operator's key, defeating the customer's kill
// switch; issue 14). RekeyTenant needs a consent signed by the tenant's owner key, which the
// operator does not hold. Every forgery an operator can make is refused before the Raft log with
// the right code, on the leader and on a follower: no proposal, the state, the tenant and the
// audit log unchanged. A keyless tenant is refused naming `tenant set-owner`. The owner's consent
// then works, once; the tenant still serves every earlier blob.
func TestOperatorAloneCannotRekey(t *testing.T) {
	r := regiontest.Start(t, 3)
	ctx := ctxT(t)
	k, mallory := ownertest.New(t), ownertest.New(t) // mallory: a key the operator made
	ld := r.WaitLeader()
	follower := r.Followers()[0]
	admin := r.AdminClient(ld)
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "ct", Tenant: "acme", AnchorUri: r.Anchor, OwnerPublicKey: k.Public}); err != nil {
		t.Fatal(err)
	}
	createTenant(t, admin, r.Anchor, "legacy") // no owner key
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "ck", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	before := mustWrap(t, r, 0, "acme", "payments")
	evil := newAnchor(t, "operator.key") // an anchor the operator controls
	waitSameState(t, r)

	stmt := func(id string) owner.Statement {
		return owner.Statement{Tenant: "acme", Op: owner.OpRekey, Anchor: evil, Region: "test", RequestID: id}
	}
	type attack struct {
		name    string
		code    codes.Code
		consent func(id string) string
	}
	attacks := []attack{
		{"no consent", codes.PermissionDenied, func(string) string { return "" }},
		{"operator's own key", codes.PermissionDenied, func(id string) string { return mallory.Consent(t, stmt(id)) }},
		{"owner's consent for another tenant", codes.PermissionDenied, func(id string) string { st := stmt(id); st.Tenant = "legacy"; return k.Consent(t, st) }},
		{"owner's consent to another operation", codes.PermissionDenied, func(id string) string {
			st := stmt(id)
			st.Op, st.Region = owner.OpSetAnchor, ""
			return k.Consent(t, st)
		}},
		{"owner's consent to another anchor", codes.PermissionDenied, func(id string) string { st := stmt(id); st.Anchor = r.Anchor; return k.Consent(t, st) }},
		{"owner's consent for another region", codes.PermissionDenied, func(id string) string { st := stmt(id); st.Region = "us"; return k.Consent(t, st) }},
		{"owner's consent to another request id", codes.PermissionDenied, func(string) string { return k.Consent(t, stmt("other-id")) }},
		{"expired consent", codes.PermissionDenied, func(id string) string {
			st := stmt(id)
			st.Issued, st.Expires = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			return k.Consent(t, st)
		}},
		{"malformed consent", codes.InvalidArgument, func(string) string { return "not.a-consent" }},
	}
	hashBefore := hashes(r)
	proposed := func() (sum float64) {
		for _, n := range r.Nodes {
			sum += proposals(t, n)
		}
		return sum
	}
	p0 := proposed()
	tenantBefore, err := admin.DescribeTenant(ctx, &kv1.DescribeTenantRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if fp := tenantBefore.GetTenant().GetOwnerKeyFingerprint(); fp != k.Fingerprint() {
		t.Fatalf("owner key fingerprint %q, want %q", fp, k.Fingerprint())
	}
	var refused []string
	for _, i := range []int{ld, follower} {
		for n, a := range attacks {
			id := "rk-" + r.Cfgs[i].NodeID + "-" + string(rune('a'+n))
			_, err := r.AdminClient(i).RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: id, Tenant: "acme", AnchorUri: evil, Consent: a.consent(id)})
			if status.Code(err) != a.code || !strings.Contains(status.Convert(err).Message(), "krypton owner consent") {
				t.Errorf("rekey with %s on %s: %v; want %v naming `krypton owner consent`", a.name, r.Cfgs[i].NodeID, err, a.code)
			}
			refused = append(refused, id)
		}
		// Nor can the operator replace the owner key by one of its own.
		id := "so-" + r.Cfgs[i].NodeID
		_, err := r.AdminClient(i).SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: id, Tenant: "acme", OwnerPublicKey: mallory.Public})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("owner key replaced without a consent: %v", err)
		}
		_, err = r.AdminClient(i).SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: id, Tenant: "acme", OwnerPublicKey: mallory.Public,
			Consent: mallory.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: mallory.Fingerprint(), Region: "test", RequestID: id})})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("owner key replaced with the operator's own consent: %v", err)
		}
		refused = append(refused, id)
		// A keyless tenant is not rekeyed on the operator's word.
		_, err = r.AdminClient(i).RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rk-legacy-" + r.Cfgs[i].NodeID, Tenant: "legacy", AnchorUri: evil})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "krypton tenant set-owner") {
			t.Errorf("rekey of a keyless tenant: %v; want FailedPrecondition naming `krypton tenant set-owner`", err)
		}
		refused = append(refused, "rk-legacy-"+r.Cfgs[i].NodeID)
	}
	if p := proposed(); p != p0 {
		t.Errorf("refused rekeys reached the Raft log: %v proposals, were %v", p, p0)
	}
	waitSameState(t, r)
	if got := hashes(r); !equalHashes(got, hashBefore) {
		t.Error("the state changed under refused rekeys")
	}
	if after, _ := admin.DescribeTenant(ctx, &kv1.DescribeTenantRequest{Tenant: "acme"}); !proto.Equal(after, tenantBefore) {
		t.Errorf("the tenant changed:\nbefore %v\nafter  %v", tenantBefore, after)
	}

	// The owner's consent rekeys, once: a retry under its request id is the first answer, the same
	// consent under another request id is refused.
	good := &kv1.RekeyTenantRequest{RequestId: "rk-owner", Tenant: "acme", AnchorUri: evil, Consent: rekeyConsent(t, k, "acme", evil, "rk-owner")}
	tn, err := r.AdminClient(follower).RekeyTenant(ctx, good)
	if err != nil || tn.GetAnchorUri() != evil {
		t.Fatalf("rekey with the owner's consent: %v, %v", tn, err)
	}
	if _, err := admin.RekeyTenant(ctx, good); err != nil {
		t.Fatalf("retry: %v", err)
	}
	again := proto.Clone(good).(*kv1.RekeyTenantRequest)
	again.RequestId = "rk-owner-2"
	if _, err := admin.RekeyTenant(ctx, again); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the consent reused under another request id: %v", err)
	}
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", before)
	}

	// The audit log: no refused request left a record; the rekey's names both anchors and the key.
	var events []audit.Event
	for i := range r.Nodes {
		events = append(events, auditLines(t, r, i)...)
	}
	for _, e := range events {
		if slices.Contains(refused, e.RequestID) {
			t.Errorf("a refused request has an audit record: %+v", e)
		}
	}
	rk, ok := findAudit(events, func(e audit.Event) bool { return e.Kind == "tenant.rekey" })
	// One record on each node, written from the log as it applied the rekey (auditapply.go).
	if n := len(slices.DeleteFunc(slices.Clone(events), func(e audit.Event) bool { return e.Kind != "tenant.rekey" })); n != len(r.Nodes) {
		t.Errorf("%d tenant.rekey records, want one per node (a retry's answer is the first's)", n)
	}
	if !ok || rk.Detail["owner-key"] != k.Fingerprint() || rk.Detail["anchor"] != anchor.Redact(evil) || rk.Detail["old-anchor"] != anchor.Redact(r.Anchor) {
		t.Errorf("tenant.rekey record %+v (found %v): want anchor, old-anchor and the consenting owner key", rk, ok)
	}
}

func equalHashes(a, b map[string][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestOwnerKeyAtRegion: a keyless tenant's first owner key is registered on the operator's word
// and audited; replacing it needs the current key's consent to exactly the new key in this region;
// the new key's consents rekey, the old key's no longer do. A region restarted from its log keeps
// the owner keys (fsm.TestSnapshotOwnerKeys: and from its snapshots).
func TestOwnerKeyAtRegion(t *testing.T) {
	r := setup(t) // acme, created without an owner key
	ctx := ctxT(t)
	k, next := ownertest.New(t), ownertest.New(t)
	admin := r.AdminClient(r.Followers()[0])
	// A malformed key is refused before the log.
	if _, err := admin.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: "so-bad", Tenant: "acme", OwnerPublicKey: "not a key"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a malformed owner key: %v", err)
	}
	if _, err := admin.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: "so-1", Tenant: "acme", OwnerPublicKey: k.Public,
		Consent: k.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: k.Fingerprint(), Region: "test", RequestID: "so-1"})}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a consent with the first key: %v", err)
	}
	tn, err := admin.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: "so-1", Tenant: "acme", OwnerPublicKey: k.Public})
	if err != nil || tn.GetOwnerKeyFingerprint() != k.Fingerprint() {
		t.Fatalf("the first owner key: %v, %v", tn, err)
	}
	// A handover consent for governance (no region) is not one for this region.
	id := "so-2"
	gov := k.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: next.Fingerprint(), RequestID: id})
	if _, err := admin.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: id, Tenant: "acme", OwnerPublicKey: next.Public, Consent: gov}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("governance's handover consent at the region: %v", err)
	}
	tn, err = admin.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: id, Tenant: "acme", OwnerPublicKey: next.Public,
		Consent: k.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: next.Fingerprint(), Region: "test", RequestID: id})})
	if err != nil || tn.GetOwnerKeyFingerprint() != next.Fingerprint() {
		t.Fatalf("the handover: %v, %v", tn, err)
	}
	uri := newAnchor(t, "new.key")
	if _, err := admin.RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rk-old", Tenant: "acme", AnchorUri: uri, Consent: rekeyConsent(t, k, "acme", uri, "rk-old")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the old key's consent after the handover: %v", err)
	}
	ld := r.WaitLeader()
	events := auditLines(t, r, ld)
	first, ok1 := findAudit(events, func(e audit.Event) bool { return e.Kind == region.AuditOwnerSet && e.RequestID == "so-1" })
	hand, ok2 := findAudit(events, func(e audit.Event) bool { return e.Kind == region.AuditOwnerSet && e.RequestID == "so-2" })
	if ok1 && !strings.Contains(first.Detail["old-owner-key"], "operator's word") || ok2 && hand.Detail["consented-by"] != k.Fingerprint() {
		t.Errorf("owner records: %+v, %+v", first, hand)
	}

	// Restarted from disk (its log replayed), every node keeps the new key.
	for i := range r.Nodes {
		r.Kill(i)
	}
	for i := range r.Nodes {
		r.Start(i)
	}
	r.WaitLeader()
	clustertest.Eventually(t, 20*time.Second, "every node with the new owner key after a restart", func() bool {
		for _, n := range r.Nodes {
			if _, fp, err := n.State().OwnerKey("acme"); err != nil || fp != next.Fingerprint() {
				return false
			}
		}
		return true
	})
	tn, err = r.AdminClient(r.WaitLeader()).RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rk-new", Tenant: "acme", AnchorUri: uri, Consent: rekeyConsent(t, next, "acme", uri, "rk-new")})
	if err != nil || tn.GetAnchorUri() != uri {
		t.Fatalf("rekey with the new owner's consent: %v, %v", tn, err)
	}
}

// An operator cannot swap a tenant's owner key through a backup: a restore that would replace or
// drop the owner key of a tenant the region holds is refused, changing nothing, and so is the
// two-step: a snapshot without the tenant (accepted), then one that brings it back with a key of
// the operator's own (the nodes' durable owner keys refuse it). One that keeps the key restores.
func TestRestoreKeepsOwnerKeys(t *testing.T) {
	r := setup(t) // acme, created without an owner key
	admin := r.AdminClient(r.Leader())
	keyless := saveSnapshot(t, admin)
	// The snapshots an operator crafts (made here in a one-node region of the same name): one
	// without acme, one where acme is owned by a key of the operator's own.
	mallory := ownertest.New(t)
	other := regiontest.Start(t, 1)
	empty := saveSnapshot(t, other.AdminClient(0))
	createTenant(t, other.AdminClient(0), other.Anchor, "acme")
	registerOwner(t, other, "acme", mallory)
	owned := saveSnapshot(t, other.AdminClient(0))

	registerOwner(t, r, "acme", ownertest.New(t)) // the customer's key
	good := saveSnapshot(t, admin)
	waitSameState(t, r)
	before := hashes(r)
	refused := func(name string, snap []*kv1.SnapshotChunk) {
		t.Helper()
		_, err := restoreSnapshot(t, admin, "restore-"+strings.ReplaceAll(name, " ", "-"), snap)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "owner key") {
			t.Errorf("restoring a snapshot %s: %v, want FailedPrecondition naming the owner key", name, err)
		}
	}
	refused("without the owner key", keyless)
	refused("with another owner key", owned)
	if !equalHashes(hashes(r), before) {
		t.Fatal("a refused restore changed the state")
	}
	// The two-step: without acme (nothing of it can be used then), then acme with mallory's key.
	if _, err := restoreSnapshot(t, admin, "restore-empty", empty); err != nil {
		t.Fatalf("restoring a snapshot without the tenant: %v", err)
	}
	refused("bringing the tenant back with another owner key", owned)
	if _, err := r.Nodes[r.Leader()].State().Tenant("acme"); err == nil {
		t.Fatal("acme came back")
	}
	if _, err := restoreSnapshot(t, admin, "restore-ok", good); err != nil {
		t.Fatalf("restoring a snapshot that keeps the owner key: %v", err)
	}
}

// An operator cannot undo a consented rekey through a backup: with a snapshot saved while an owned
// tenant was on anchor A, then a rekey to B with the owner's consent, restoring the snapshot would
// put the tenant back on A (an anchor the operator may control, where the customer disabling B no
// longer stops it) and drop the consent's used digest. It is refused, changing nothing (the state,
// the anchor, the audit log); so is the two-step, a snapshot without the tenant (accepted) then the
// old one (the nodes' durable anchors refuse it). A snapshot taken after the rekey restores.
func TestRestoreKeepsConsentedRekey(t *testing.T) {
	r := setup(t) // acme, created without an owner key, on r.Anchor
	ctx := ctxT(t)
	admin := r.AdminClient(r.Leader())
	k := ownertest.New(t)
	registerOwner(t, r, "acme", k)
	onA := saveSnapshot(t, admin)
	other := regiontest.Start(t, 1)
	empty := saveSnapshot(t, other.AdminClient(0))

	b := newAnchor(t, "customer-b.key")
	if tn, err := admin.RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rk-b", Tenant: "acme", AnchorUri: b, Consent: rekeyConsent(t, k, "acme", b, "rk-b")}); err != nil || tn.GetAnchorUri() != b {
		t.Fatalf("rekey with the owner's consent: %v, %v", tn, err)
	}
	onB := saveSnapshot(t, admin)
	waitSameState(t, r)
	before := hashes(r)
	ld := r.Leader()
	auditBefore := len(auditLines(t, r, ld))
	refused := func(name string, snap []*kv1.SnapshotChunk) {
		t.Helper()
		_, err := restoreSnapshot(t, r.AdminClient(r.Leader()), "restore-"+strings.ReplaceAll(name, " ", "-"), snap)
		if msg := status.Convert(err).Message(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, "acme") || !strings.Contains(msg, "snapshot taken after the rekey") {
			t.Errorf("restoring a snapshot %s: %v, want FailedPrecondition naming the tenant and the fix", name, err)
		}
		if tn, err := r.Nodes[r.Leader()].State().Tenant("acme"); err == nil && tn.Anchor != b {
			t.Fatalf("after restoring a snapshot %s, acme is on %s, want %s", name, anchor.Redact(tn.Anchor), anchor.Redact(b))
		}
	}
	refused("from before the rekey", onA)
	if !equalHashes(hashes(r), before) {
		t.Fatal("a refused restore changed the state")
	}
	for _, e := range auditLines(t, r, ld)[auditBefore:] {
		if e.Kind != "call.refused" { // the refusal itself is recorded as one
			t.Errorf("a refused restore wrote an audit record: %+v", e)
		}
	}
	// The two-step: without acme (nothing of it can be used then), then acme back on A.
	if _, err := restoreSnapshot(t, admin, "restore-empty", empty); err != nil {
		t.Fatalf("restoring a snapshot without the tenant: %v", err)
	}
	refused("bringing the tenant back on its old anchor", onA)
	if _, err := r.Nodes[r.Leader()].State().Tenant("acme"); err == nil {
		t.Fatal("acme came back")
	}
	if _, err := restoreSnapshot(t, r.AdminClient(r.Leader()), "restore-ok", onB); err != nil {
		t.Fatalf("restoring a snapshot taken after the rekey: %v", err)
	}
	if tn, err := r.Nodes[r.Leader()].State().Tenant("acme"); err != nil || tn.Anchor != b {
		t.Fatalf("after restoring the snapshot taken after the rekey: %+v, %v", tn, err)
	}
	// Its consent stays used: it is in that snapshot.
	if _, err := r.AdminClient(r.Leader()).RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rk-b-again", Tenant: "acme", AnchorUri: b, Consent: rekeyConsent(t, k, "acme", b, "rk-b")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the rekey's consent replayed after the restore: %v", err)
	}
}

// A snapshot from before a rekey and the rekey back (A to B to A) has the tenant on its current
// anchor, but lacks both consents' used digests: restored, the consent to B could be applied
// again while valid. It is refused, naming when the consents expire, changing nothing; a snapshot
// taken after them restores, and the consents stay used.
func TestRestoreKeepsUsedConsents(t *testing.T) {
	r := setup(t) // acme, created without an owner key, on r.Anchor
	ctx := ctxT(t)
	admin := r.AdminClient(r.Leader())
	k := ownertest.New(t)
	registerOwner(t, r, "acme", k)
	onA := saveSnapshot(t, admin)
	b := newAnchor(t, "customer-b.key")
	toB := &kv1.RekeyTenantRequest{RequestId: "rk-b", Tenant: "acme", AnchorUri: b, Consent: rekeyConsent(t, k, "acme", b, "rk-b")}
	for _, req := range []*kv1.RekeyTenantRequest{toB,
		{RequestId: "rk-a", Tenant: "acme", AnchorUri: r.Anchor, Consent: rekeyConsent(t, k, "acme", r.Anchor, "rk-a")}} {
		if _, err := admin.RekeyTenant(ctx, req); err != nil {
			t.Fatalf("rekey %s with the owner's consent: %v", req.GetRequestId(), err)
		}
	}
	after := saveSnapshot(t, admin)
	waitSameState(t, r)
	before := hashes(r)
	_, err := restoreSnapshot(t, admin, "restore-old", onA)
	if msg := status.Convert(err).Message(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, "consent") || !strings.Contains(msg, "acme") {
		t.Fatalf("restoring a snapshot without the used consents: %v, want FailedPrecondition naming them", err)
	}
	if !equalHashes(hashes(r), before) {
		t.Fatal("a refused restore changed the state")
	}
	if _, err := restoreSnapshot(t, admin, "restore-ok", after); err != nil {
		t.Fatalf("restoring a snapshot taken after the rekeys: %v", err)
	}
	// The request to B again is a retry of the first (its answer, changing nothing), not a rekey.
	r.AdminClient(r.Leader()).RekeyTenant(ctx, toB)
	if tn, err := r.Nodes[r.Leader()].State().Tenant("acme"); err != nil || tn.Anchor != r.Anchor {
		t.Fatalf("the consent to B replayed after the restore: %+v, %v", tn, err)
	}
}
