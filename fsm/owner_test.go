package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
)

// ownerHarness is a region "eu" with tenant acme (owner key k) and legacy (no owner key), each
// with one L2 version, applying entries at the real time (consents are signed for it).
func ownerHarness(t *testing.T) (*harness, *ownertest.Key) {
	t.Helper()
	h := newHarness(t)
	h.s = NewState(Options{Region: "eu"})
	k := ownertest.New(t)
	h.must(CreateTenant{Tenant: "acme", Anchor: "file:///l1/acme", SealedL2: blob("acme", 1), OwnerKey: k.Public})
	h.must(CreateTenant{Tenant: "legacy", Anchor: "file:///l1/legacy", SealedL2: blob("legacy", 1)})
	return h, k
}

// at applies e at the current time.
func (h *harness) at(e Entry) (Result, error) {
	e.At = time.Now().UnixNano()
	return h.applyEntry(e)
}

// rekey is a region's own rekey of tenant to anchor under request id id.
func rekey(id, tenant, anchor, consent string) Entry {
	return Entry{RequestID: id, Command: SetAnchor{Tenant: tenant, Anchor: anchor, Resealed: [][]byte{blob(tenant, "resealed")}, Consent: consent}}
}

// The state machine is the last line against an operator who rekeys a tenant to an anchor they
// control: a SetAnchor proposed past the region's handlers, for a tenant with an owner key, is
// refused without the owner's consent to exactly this change, changing nothing; the owner's
// consent applies once; a replay after the request id is forgotten is refused.
func TestStateMachineChecksRekeyConsent(t *testing.T) {
	h, k := ownerHarness(t)
	mallory := ownertest.New(t)
	const evil = "file:///operator/root.key"
	stmt := func(id string) owner.Statement {
		return owner.Statement{Tenant: "acme", Op: owner.OpRekey, Anchor: evil, Region: "eu", RequestID: id}
	}
	forged := map[string]func(id string) string{
		"no consent":         func(string) string { return "" },
		"operator's own key": func(id string) string { return mallory.Consent(t, stmt(id)) },
		"another tenant":     func(id string) string { st := stmt(id); st.Tenant = "legacy"; return k.Consent(t, st) },
		"another operation": func(id string) string {
			st := stmt(id)
			st.Op = owner.OpSetAnchor
			st.Region = ""
			return k.Consent(t, st)
		},
		"another anchor":     func(id string) string { st := stmt(id); st.Anchor = "file:///l1/other"; return k.Consent(t, st) },
		"another region":     func(id string) string { st := stmt(id); st.Region = "us"; return k.Consent(t, st) },
		"another request id": func(string) string { return k.Consent(t, stmt("other")) },
		"garbage":            func(string) string { return "not.a-consent" },
		"valid for too long": func(id string) string {
			st := stmt(id)
			st.Issued, st.Expires = time.Now().Unix(), time.Now().Add(48*time.Hour).Unix()
			return k.Consent(t, st)
		},
		"expired": func(id string) string {
			st := stmt(id)
			st.Issued, st.Expires = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			return k.Consent(t, st)
		},
		"issued in the future": func(id string) string {
			st := stmt(id)
			st.Issued, st.Expires = time.Now().Add(time.Hour).Unix(), time.Now().Add(2*time.Hour).Unix()
			return k.Consent(t, st)
		},
	}
	before := h.s.Hash()
	for name, consent := range forged {
		id := "rk-" + strings.ReplaceAll(name, " ", "-")
		if _, err := h.at(rekey(id, "acme", evil, consent(id))); !errors.Is(err, ErrConsentDenied) {
			t.Errorf("rekey with %s: %v, want ErrConsentDenied", name, err)
		}
	}
	if h.s.Hash() != before {
		t.Fatal("a refused rekey changed the state")
	}
	if tn, _ := h.s.Tenant("acme"); tn.Anchor != "file:///l1/acme" {
		t.Fatalf("anchor = %q", tn.Anchor)
	}

	// The owner's consent applies, once; a retry under its request id is the first answer.
	good := rekey("rk-good", "acme", evil, k.Consent(t, stmt("rk-good")))
	if _, err := h.at(good); err != nil {
		t.Fatalf("the owner's consent: %v", err)
	}
	if tn, _ := h.s.Tenant("acme"); tn.Anchor != evil || string(tn.L2[0].Sealed) != string(blob("acme", "resealed")) {
		t.Fatalf("after the owner's rekey: %+v", tn)
	}
	if res, err := h.at(good); err != nil || !res.Duplicate {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	// Once the dedupe table forgot the request id, the same consent is still refused.
	h.must(SetSettings{Settings: Settings{LeaseDuration: time.Second, AnchorCheckPeriod: time.Second, DedupeWindow: 1}})
	if _, err := h.at(Entry{RequestID: "other", Command: UnlockTenant{Tenant: "acme"}}); err != nil {
		t.Fatal(err)
	}
	before = h.s.Hash()
	if _, err := h.at(good); !errors.Is(err, ErrConsentUsed) {
		t.Fatalf("replay after the request id was forgotten: %v, want ErrConsentUsed", err)
	}
	// ... also after a snapshot and restore (the used consents are in it).
	s := NewState(Options{Region: "eu"})
	if err := s.Restore(bytes.NewReader(snapshotBytes(t, h.s))); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != before {
		t.Fatal("the restored state differs")
	}
	good.At = time.Now().UnixNano()
	if _, err := s.Apply(h.index+1, good); !errors.Is(err, ErrConsentUsed) {
		t.Fatalf("replay after a restore: %v, want ErrConsentUsed", err)
	}
	if pem, fp, err := s.OwnerKey("acme"); err != nil || pem != k.Public || fp != k.Fingerprint() {
		t.Fatalf("owner key after restore: %q, %q, %v", pem, fp, err)
	}

	// A consent for region eu does not apply in region us.
	us := NewState(Options{Region: "us"})
	us.Apply(1, Entry{At: time.Now().UnixNano(), Command: CreateTenant{Tenant: "acme", Anchor: "file:///l1/acme", SealedL2: blob(1), OwnerKey: k.Public}})
	e := rekey("rk-us", "acme", evil, k.Consent(t, stmt("rk-us")))
	e.At = time.Now().UnixNano()
	if _, err := us.Apply(2, e); !errors.Is(err, ErrConsentDenied) {
		t.Fatalf("a consent for eu applied in us: %v", err)
	}

	// Governance's feed moves anchors with governance's own consent check: no consent here.
	if _, err := h.at(Entry{Command: ApplyGovernanceEvent{Cursor: 1, EventID: "e1", Event: SetAnchor{Tenant: "acme", Anchor: "file:///l1/gov"}}}); err != nil {
		t.Fatal(err)
	}
	if tn, _ := h.s.Tenant("acme"); tn.Anchor != "file:///l1/gov" {
		t.Fatalf("the feed's SetAnchor did not apply: %q", tn.Anchor)
	}
	// A tenant without an owner key: its rekeys are in logs from before owner keys and apply
	// without a consent (the region's handler refuses new ones); one with a consent is refused.
	if _, err := h.at(rekey("rk-legacy", "legacy", evil, "")); err != nil {
		t.Fatalf("a keyless tenant's rekey from an old log: %v", err)
	}
	if _, err := h.at(rekey("rk-legacy2", "legacy", evil+"2", k.Consent(t, owner.Statement{Tenant: "legacy", Op: owner.OpRekey, Anchor: evil + "2", Region: "eu", RequestID: "rk-legacy2"}))); !errors.Is(err, ErrConsentDenied) {
		t.Fatalf("a consent for a keyless tenant: %v", err)
	}
}

// The owner key's life at a region: the first key of a keyless tenant is registered without a
// consent (and with one is refused); replacing a key needs the current key's consent to exactly
// that key in this region, used once.
func TestStateMachineOwnerKeyLifecycle(t *testing.T) {
	h, k := ownerHarness(t)
	next, mallory := ownertest.New(t), ownertest.New(t)
	setOwner := func(id, tenant string, key *ownertest.Key, consent string) (Result, error) {
		return h.at(Entry{RequestID: id, Command: SetOwnerKey{Tenant: tenant, OwnerKey: key.Public, Consent: consent}})
	}
	stmt := func(id string, key *ownertest.Key) owner.Statement {
		return owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: key.Fingerprint(), Region: "eu", RequestID: id}
	}
	before := h.s.Hash()
	for name, consent := range map[string]string{
		"no consent":         "",
		"operator's own key": mallory.Consent(t, stmt("so", mallory)),
		"another key named":  k.Consent(t, stmt("so", next)),
		"governance's":       k.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetOwner, OwnerKey: mallory.Fingerprint(), RequestID: "so"}),
	} {
		if _, err := setOwner("so", "acme", mallory, consent); !errors.Is(err, ErrConsentDenied) {
			t.Errorf("replacing the owner key with %s: %v", name, err)
		}
	}
	if h.s.Hash() != before {
		t.Fatal("a refused owner change changed the state")
	}
	if _, err := setOwner("so-next", "acme", next, k.Consent(t, stmt("so-next", next))); err != nil {
		t.Fatalf("handover with the owner's consent: %v", err)
	}
	if _, fp, _ := h.s.OwnerKey("acme"); fp != next.Fingerprint() {
		t.Fatalf("owner key after handover: %s", fp)
	}
	// The first key of a keyless tenant: on the operator's word, without a consent.
	if _, err := setOwner("so-legacy", "legacy", k, k.Consent(t, owner.Statement{Tenant: "legacy", Op: owner.OpSetOwner, OwnerKey: k.Fingerprint(), Region: "eu", RequestID: "so-legacy"})); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("a consent with a first key: %v", err)
	}
	if _, err := setOwner("so-legacy", "legacy", k, ""); err != nil {
		t.Fatal(err)
	}
	if _, fp, _ := h.s.OwnerKey("legacy"); fp != k.Fingerprint() {
		t.Fatalf("legacy's owner key: %s", fp)
	}
	// Malformed keys never reach the log; governance's feed carries no owner keys.
	for _, bad := range []Entry{
		{Command: SetOwnerKey{Tenant: "acme", OwnerKey: "not a key"}},
		{Command: SetOwnerKey{Tenant: "acme"}},
		{Command: CreateTenant{Tenant: "x", Anchor: "file:///x", SealedL2: blob(1), OwnerKey: "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"}},
		{Command: SetAnchor{Tenant: "acme", Anchor: "file:///x", Consent: strings.Repeat("x", owner.MaxConsent+1)}},
	} {
		if err := Validate(bad); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("Validate(%T): %v", bad.Command, err)
		}
	}
	res, err := h.at(Entry{Command: ApplyGovernanceEvent{Cursor: 1, EventID: "e1", Event: SetOwnerKey{Tenant: "acme", OwnerKey: mallory.Public}}})
	if err != nil || !errors.Is(res.EventErr, ErrInvalidCommand) {
		t.Fatalf("an owner key from the feed: %+v, %v", res, err)
	}
	if _, fp, _ := h.s.OwnerKey("acme"); fp != next.Fingerprint() {
		t.Fatalf("owner key after the feed's event: %s", fp)
	}
}

// Snapshots keep owner keys and used consents; a snapshot from before owner keys (version 3)
// restores to the same state, its tenants without owner keys; an owner record in a version 3
// snapshot, or a malformed one, is refused.
func TestSnapshotOwnerKeys(t *testing.T) {
	h, k := ownerHarness(t)
	snap := snapshotBytes(t, h.s)
	s := NewState(Options{})
	if err := s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != h.s.Hash() {
		t.Fatal("restored state differs")
	}
	if _, fp, _ := s.OwnerKey("acme"); fp != k.Fingerprint() {
		t.Fatalf("owner key lost: %q", fp)
	}
	if pem, _, _ := s.OwnerKey("legacy"); pem != "" {
		t.Fatal("legacy has an owner key")
	}
	hdr, recs := splitSnapshot(t, snap)
	if strings.Count(string(snap), k.Public) != 1 {
		t.Fatal("the owner key is not in the snapshot once")
	}
	v3 := strings.Replace(hdr, `"v":6`, `"v":3`, 1)
	if err := NewState(Options{}).Restore(strings.NewReader(joinSnapshot(v3, recs))); err == nil {
		t.Fatal("an owner record in a version 3 snapshot was restored")
	}
	bad := make([]rawRecord, len(recs))
	copy(bad, recs)
	for i, r := range bad {
		if r.kind == recOwner {
			bad[i] = build(recOwner, func(e *recWriter) { e.str("not a key"); e.uvarint(0) })
		}
	}
	if err := NewState(Options{}).Restore(strings.NewReader(joinSnapshot(hdr, bad))); err == nil {
		t.Fatal("a malformed owner record was restored")
	}

	// A state without owner keys: its version 3 snapshot restores to the same hash.
	old := fixture(t)
	hdr, recs = splitSnapshot(t, snapshotBytes(t, old.s))
	s = NewState(Options{})
	if err := s.Restore(strings.NewReader(joinSnapshot(strings.Replace(hdr, `"v":6`, `"v":3`, 1), recs))); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != old.s.Hash() {
		t.Fatal("a version 3 snapshot restores to another state")
	}
	if pem, _, _ := s.OwnerKey("acme"); pem != "" {
		t.Fatal("a pre-owner tenant has an owner key")
	}
}
