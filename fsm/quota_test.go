package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// SetQuota sets and clears a tenant's and a service's quota, survives a snapshot (and changes the
// hash only while a quota is set), and refuses bad values and unknown or revoked targets without
// changing anything.
func TestSetQuota(t *testing.T) {
	h := fixture(t)
	before := h.s.Hash()
	bad := map[string]SetQuota{
		"rate too large":        {Tenant: "acme", Quota: Quota{Rate: MaxQuotaRate + 1}},
		"burst too large":       {Tenant: "acme", Quota: Quota{Rate: 1, Burst: MaxQuotaBurst + 1}},
		"burst without rate":    {Tenant: "acme", Quota: Quota{Burst: 5}},
		"concurrency too large": {Tenant: "acme", Quota: Quota{Concurrency: MaxQuotaConcurrency + 1}},
		"bad tenant name":       {Tenant: "A!", Quota: Quota{Rate: 1}},
		"bad service name":      {Tenant: "acme", Service: "P!", Quota: Quota{Rate: 1}},
		"unknown tenant":        {Tenant: "nobody", Quota: Quota{Rate: 1}},
		"unknown service":       {Tenant: "acme", Service: "nope", Quota: Quota{Rate: 1}},
		"revoked tenant":        {Tenant: "gone", Quota: Quota{Rate: 1}},
		"revoked service":       {Tenant: "acme", Service: "old", Quota: Quota{Rate: 1}},
	}
	for name, c := range bad {
		if _, err := h.apply(c); err == nil {
			t.Errorf("%s: applied", name)
		}
		if name == "rate too large" {
			if _, err := h.apply(c); !errors.Is(err, ErrInvalidCommand) {
				t.Errorf("%s: %v, want ErrInvalidCommand", name, err)
			}
		}
	}
	if h.s.Hash() != before {
		t.Fatal("a refused SetQuota changed the state")
	}
	tq := Quota{Rate: 100, Burst: 200, Concurrency: 4}
	sq := Quota{Concurrency: 2}
	h.must(SetQuota{Tenant: "acme", Quota: tq})
	h.must(SetQuota{Tenant: "acme", Service: "pay", Quota: sq})
	if got := h.changes[len(h.changes)-1]; got.Kind != QuotaSet || got.Tenant != "acme" || got.Service != "pay" {
		t.Fatalf("change %+v", got)
	}
	if tn, _ := h.s.Tenant("acme"); tn.Quota != tq {
		t.Fatalf("tenant quota %+v", tn.Quota)
	}
	if sv, _ := h.s.Service("acme", "pay"); sv.Quota != sq {
		t.Fatalf("service quota %+v", sv.Quota)
	}
	want := []QuotaEntry{{Tenant: "acme", Quota: tq}, {Tenant: "acme", Service: "pay", Quota: sq}}
	if got := h.s.Quotas(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Quotas() = %+v", got)
	}
	snap := snapshotBytes(t, h.s)
	r := NewState(Options{})
	if err := r.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if r.Hash() != h.s.Hash() || len(r.Quotas()) != 2 {
		t.Fatalf("restored quotas %+v", r.Quotas())
	}
	// A quota record in a version 4 snapshot is refused.
	if err := NewState(Options{}).Restore(strings.NewReader(strings.Replace(string(snap), `"v":6`, `"v":4`, 1))); err == nil {
		t.Fatal("a quota record in a version 4 snapshot was restored")
	}
	// Clearing the quotas gives back the hash of the state before them.
	h.must(SetQuota{Tenant: "acme"})
	h.must(SetQuota{Tenant: "acme", Service: "pay"})
	if h.s.Hash() != before || len(h.s.Quotas()) != 0 {
		t.Fatal("cleared quotas left a trace")
	}
}

// A quota from governance's feed applies and enters the revocation log as a quota-set event.
func TestSetQuotaFromGovernance(t *testing.T) {
	h := fixture(t)
	res, err := h.apply(ApplyGovernanceEvent{Cursor: 1, EventID: "e1", Event: SetQuota{Tenant: "acme", Quota: Quota{Rate: 5}}})
	if err != nil || res.EventErr != nil {
		t.Fatal(err, res.EventErr)
	}
	if tn, _ := h.s.Tenant("acme"); tn.Quota.Rate != 5 {
		t.Fatal("quota not applied")
	}
	log := h.s.RevocationLog(0)
	if last := log[len(log)-1]; last.Kind != EventQuotaSet || last.Tenant != "acme" {
		t.Fatalf("log entry %+v", last)
	}
}
