package governance_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The platform operator alone cannot move a tenant's root of trust nor lift its kill switch (issue
// 14, finding 4): SetAnchor needs a consent signed by the tenant's owner key, which the operator
// does not hold. Every forgery an operator can make (no consent, one signed by a key of its own,
// the owner's consent to another anchor, request id or tenant, an expired one, garbage, replacing
// the owner key with its own) is refused before the Raft log with the right code; the state, the
// log and the audit chain stay as they were. The owner's real consent then works, once.
func TestOperatorAloneCannotMoveAnchor(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(60 * time.Second)
	const evil = "file:///tmp/operator-controlled/root.key"
	g.CreateTenant("acme", devAnchor, "eu")
	ownerKey := g.Owner
	mallory := ownertest.New(t) // a key the operator made: the CA is the operator's, this is too

	head := func() (uint64, uint64) {
		t.Helper()
		st, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetHeadCursor(), st.GetCommitIndex()
	}
	tenant := func() *kv1.GovernanceTenant {
		t.Helper()
		tn, err := op.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}
	var refusedIDs []string
	attacks := func(phase, target string) {
		t.Helper()
		h0, c0 := head()
		before := tenant()
		type attack struct {
			name    string
			id      string
			consent string
			code    codes.Code
		}
		stmt := func(id string) owner.Statement {
			return owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: target, RequestID: id}
		}
		var as []attack
		add := func(name string, code codes.Code, consent func(id string) string) {
			id := rid()
			as = append(as, attack{name, id, consent(id), code})
		}
		add("no consent", codes.PermissionDenied, func(string) string { return "" })
		add("operator's own key", codes.PermissionDenied, func(id string) string { return mallory.Consent(t, stmt(id)) })
		add("owner's consent to another anchor", codes.PermissionDenied, func(id string) string {
			st := stmt(id)
			st.Anchor = devAnchor + ".other"
			return ownerKey.Consent(t, st)
		})
		add("owner's consent to another request id", codes.PermissionDenied, func(string) string { return ownerKey.Consent(t, stmt("other-id")) })
		add("owner's consent for another tenant", codes.PermissionDenied, func(id string) string {
			st := stmt(id)
			st.Tenant = "other"
			return ownerKey.Consent(t, st)
		})
		add("owner's consent to another operation", codes.PermissionDenied, func(id string) string {
			st := stmt(id)
			st.Op = owner.OpRekey
			return ownerKey.Consent(t, st)
		})
		add("expired consent", codes.PermissionDenied, func(id string) string {
			st := stmt(id)
			st.Issued, st.Expires = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			return ownerKey.Consent(t, st)
		})
		add("consent valid for too long", codes.PermissionDenied, func(id string) string {
			st := stmt(id)
			st.Issued, st.Expires = time.Now().Unix(), time.Now().Add(30*24*time.Hour).Unix()
			return ownerKey.Consent(t, st)
		})
		add("malformed consent", codes.InvalidArgument, func(string) string { return "not.a-consent" })
		for _, a := range as {
			_, err := op.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: a.id, Tenant: "acme", AnchorUri: target, Consent: a.consent})
			if status.Code(err) != a.code {
				t.Fatalf("%s: SetAnchor with %s: %v, want %v", phase, a.name, err, a.code)
			}
			if !strings.Contains(status.Convert(err).Message(), "krypton owner consent") {
				t.Errorf("%s: SetAnchor with %s: %q does not name `krypton owner consent`", phase, a.name, status.Convert(err).Message())
			}
			refusedIDs = append(refusedIDs, a.id)
		}
		// Replacing the owner key by one of its own is refused too: the current key must consent.
		id := rid()
		_, err := op.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: id, Tenant: "acme", OwnerPublicKey: mallory.Public})
		wantCode(t, err, codes.PermissionDenied)
		_, err = op.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: id, Tenant: "acme", OwnerPublicKey: mallory.Public,
			Consent: mallory.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: mallory.Fingerprint(), RequestID: id})})
		wantCode(t, err, codes.PermissionDenied)
		refusedIDs = append(refusedIDs, id)

		if h1, c1 := head(); h1 != h0 || c1 != c0 {
			t.Fatalf("%s: the refusals moved the log: head %d -> %d, commit %d -> %d", phase, h0, h1, c0, c1)
		}
		if after := tenant(); !proto.Equal(after, before) {
			t.Fatalf("%s: the tenant changed:\nbefore %v\nafter  %v", phase, before, after)
		}
	}

	// 1. Moving the anchor to one the operator controls.
	attacks("anchor change", evil)
	if tn := tenant(); tn.GetAnchorUri() != devAnchor || tn.GetOwnerKeyFingerprint() != ownerKey.Fingerprint() {
		t.Fatalf("tenant after the refused moves: %v", tn)
	}

	// 2. Lifting the kill switch. Turning it on needs no consent: it only takes access away.
	if _, err := op.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: rid(), Tenant: "acme", Reason: "customer asked"}); err != nil {
		t.Fatal(err)
	}
	attacks("kill-switch lift to another anchor", evil)
	attacks("kill-switch lift to the same anchor", devAnchor)
	if tn := tenant(); tn.GetAnchorUri() != "" || tn.GetState() != kv1.TenantState_TENANT_STATE_LOCKED {
		t.Fatalf("the kill switch is off after the refused lifts: %v", tn)
	}

	// The owner's consent lifts it; the same consent cannot be used under another request id, and a
	// retry under its own returns the first answer.
	id := rid()
	consent := ownerKey.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: devAnchor, RequestID: id})
	req := &kv1.SetAnchorRequest{RequestId: id, Tenant: "acme", AnchorUri: devAnchor, Consent: consent}
	tn, err := op.SetAnchor(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if tn.GetAnchorUri() != devAnchor || tn.GetState() != kv1.TenantState_TENANT_STATE_ACTIVE {
		t.Fatalf("after the owner's lift: %v", tn)
	}
	if _, err := op.SetAnchor(ctx, req); err != nil {
		t.Fatalf("retry: %v", err)
	}
	_, err = op.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: rid(), Tenant: "acme", AnchorUri: devAnchor, Consent: consent})
	wantCode(t, err, codes.PermissionDenied)

	// 3. A tenant without an owner key: its anchor is not moved on the operator's word.
	if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "legacy", AnchorUri: devAnchor, Regions: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}
	_, err = op.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: rid(), Tenant: "legacy", AnchorUri: evil})
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(status.Convert(err).Message(), "krypton tenant set-owner") {
		t.Errorf("no-owner-key refusal does not say how to register one: %v", err)
	}

	// The audit chain verifies; no refused request made an anchor record; the lift's record names
	// the old anchor (deleted), the new one and the owner key that consented.
	dir := g.Cfgs[0].DataDir
	g.Kill(0)
	f, err := os.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := audit.Verify(f); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	f.Seek(0, 0)
	var lift *audit.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Kind != governance.AuditAnchorSet && e.Kind != governance.AuditOwnerSet {
			continue
		}
		for _, r := range refusedIDs {
			if e.RequestID == r {
				t.Errorf("a refused request has a %s record: %+v", e.Kind, e)
			}
		}
		if e.RequestID == id && lift == nil {
			lift = &e
		}
	}
	if lift == nil {
		t.Fatal("no audit record of the owner's lift")
	}
	if d := lift.Detail; d["anchor"] != devAnchor || !strings.Contains(d["old-anchor"], "deleted") || d["owner-key"] != ownerKey.Fingerprint() {
		t.Errorf("lift's audit record: %+v", lift.Detail)
	}
}

// The owner can move the anchor and hand over to a new owner key; a tenant without one gets its
// first on the operator's word, recorded in the audit log.
func TestOwnerKeyLifecycle(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(60 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	tn := g.SetAnchor("acme", devAnchor+"2")
	if tn.GetAnchorUri() != devAnchor+"2" {
		t.Fatalf("anchor after the owner's move: %q", tn.GetAnchorUri())
	}

	// Handing over to a new key needs the current key's consent; the old key is then worthless.
	next := ownertest.New(t)
	id := rid()
	tn, err := op.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: id, Tenant: "acme", OwnerPublicKey: next.Public,
		Consent: g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: next.Fingerprint(), RequestID: id})})
	if err != nil {
		t.Fatal(err)
	}
	if tn.GetOwnerKeyFingerprint() != next.Fingerprint() {
		t.Fatalf("owner key after the handover: %q", tn.GetOwnerKeyFingerprint())
	}
	id = rid()
	_, err = op.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: id, Tenant: "acme", AnchorUri: devAnchor,
		Consent: g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: devAnchor, RequestID: id})})
	wantCode(t, err, codes.PermissionDenied)
	g.Owner = next
	g.SetAnchor("acme", devAnchor)

	// Bad keys are refused before the log.
	for _, k := range []string{"", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"} {
		_, err := op.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: rid(), Tenant: "acme", OwnerPublicKey: k})
		wantCode(t, err, codes.InvalidArgument)
		_, err = op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "badkey", AnchorUri: devAnchor, Regions: []string{"eu"}, OwnerPublicKey: k + "x"})
		wantCode(t, err, codes.InvalidArgument)
	}

	// A tenant without an owner key gets its first on the operator's word.
	if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "legacy", AnchorUri: devAnchor, Regions: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}
	first := ownertest.New(t)
	tn, err = op.SetOwnerKey(ctx, &kv1.SetOwnerKeyRequest{RequestId: rid(), Tenant: "legacy", OwnerPublicKey: first.Public})
	if err != nil {
		t.Fatal(err)
	}
	if tn.GetOwnerKeyFingerprint() != first.Fingerprint() {
		t.Fatalf("first owner key: %q", tn.GetOwnerKeyFingerprint())
	}
}
