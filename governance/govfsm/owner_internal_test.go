package govfsm

import (
	"errors"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
)

// The state machine is the last line: it verifies the consent against the owner key it holds when
// it applies the change (a command proposed past the handler, or one whose tenant's owner key
// changed since the handler checked, is refused), and a consent is used once even after its request
// id is forgotten (an operator who floods the request table cannot replay it).
func TestStateMachineChecksConsent(t *testing.T) {
	k, mallory := ownertest.New(t), ownertest.New(t)
	now := time.Now()
	f := NewFSM()
	apply := func(c *Command) *Result {
		t.Helper()
		c.Fingerprint, c.EventID, c.Time = "fp-"+c.RequestID, "ev-"+c.RequestID, now.UnixNano()
		return f.ApplyCommand(c)
	}
	if r := apply(&Command{Op: OpCreateTenant, RequestID: "c", Tenant: "acme", AnchorURI: "file:///a", Regions: []string{"eu"}, OwnerKey: k.Public}); r.Err != nil {
		t.Fatal(r.Err)
	}
	set := func(id, uri, consent string) error {
		return apply(&Command{Op: OpSetAnchor, RequestID: id, Tenant: "acme", AnchorURI: uri, Consent: consent}).Err
	}
	st := func(id, uri string) owner.Statement {
		return owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: uri, RequestID: id}
	}
	if err := set("s1", "file:///evil", ""); !errors.Is(err, ErrConsentDenied) {
		t.Fatalf("no consent: %v", err)
	}
	if err := set("s2", "file:///evil", mallory.Consent(t, st("s2", "file:///evil"))); !errors.Is(err, ErrConsentDenied) {
		t.Fatalf("operator's consent: %v", err)
	}
	consent := k.Consent(t, st("s3", "file:///b"))
	if err := set("s3", "file:///b", consent); err != nil {
		t.Fatal(err)
	}
	// Forget every request id, as requestTTL or maxRequests would: the consent stays used.
	f.st.Requests, f.st.reqIndex = nil, map[string]*request{}
	if err := set("s3", "file:///b", consent); !errors.Is(err, ErrConsentUsed) {
		t.Fatalf("replayed consent: %v", err)
	}
	// The snapshot keeps owner key and used consents.
	b, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	st2, err := decodeState(b)
	if err != nil {
		t.Fatal(err)
	}
	if tn := st2.Tenants["acme"]; tn.OwnerKey != k.Public || len(tn.Consents) != 1 {
		t.Fatalf("restored tenant: owner key %v, %d consents", tn.OwnerKey == k.Public, len(tn.Consents))
	}
	// A snapshot from before owner keys restores: its tenants have none.
	old := []byte(`{"tenants":{"old":{"name":"old","anchor":"file:///a","regions":["eu"],"created":1,"cursor":1}},"events":[{"cursor":1,"id":"e","kind":9,"tenant":"old","time":1}],"requests":[],"regions":{},"last-time":1}`)
	if st3, err := decodeState(old); err != nil || st3.Tenants["old"].OwnerKey != "" {
		t.Fatalf("pre-owner snapshot: %v", err)
	}
}
