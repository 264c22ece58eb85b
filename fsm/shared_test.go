package fsm

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestSharedTenant: a shared tenant imported from its home region (ResyncTenant with Create and
// Import) has the home's versions, a version governance revoked arrives REVOKED, a later import
// continues the versions, out-of-order imports are refused whole, and RemoveTenant forgets it.
func TestSharedTenant(t *testing.T) {
	h := newHarness(t)
	regions := []string{"ap", "eu", "us"}
	h.must(ResyncTenant{Tenant: "acme",
		Create: &CreateTenant{Tenant: "acme", Anchor: "file:///l1", SealedL2: blob("acme", 1), Home: "eu", Regions: regions},
		Import: &KeyImport{L3: []ImportedL3{
			{Service: "pay", Version: 1, SealedBy: 1, Sealed: blob("pay", 1)},
			{Service: "pay", Version: 2, SealedBy: 1, Sealed: blob("pay", 2), Revoked: true},
			{Service: "pay", Version: 3, SealedBy: 1, Sealed: blob("pay", 3)},
		}}})
	tn, err := h.s.Tenant("acme")
	if err != nil || tn.Home != "eu" || !slices.Equal(tn.Regions, regions) {
		t.Fatalf("tenant %+v, %v", tn, err)
	}
	if v, err := h.s.Usable("acme", "pay", 0, OpWrap); err != nil || v != 3 {
		t.Fatalf("current: %d, %v", v, err)
	}
	if _, err := h.s.Usable("acme", "pay", 2, OpUnwrap); !errors.Is(err, ErrRevoked) {
		t.Fatalf("v2 imported as revoked: %v", err)
	}
	if _, err := h.s.Usable("acme", "pay", 1, OpUnwrap); err != nil {
		t.Fatalf("v1: %v", err)
	}
	// A gap is refused, and changes nothing.
	if _, err := h.apply(ResyncTenant{Tenant: "acme", Import: &KeyImport{L3: []ImportedL3{{Service: "pay", Version: 5, SealedBy: 1, Sealed: blob("pay", 5)}}}}); !errors.Is(err, ErrBadVersion) {
		t.Fatalf("gap: %v", err)
	}
	h.must(ResyncTenant{Tenant: "acme", Import: &KeyImport{
		L2: []ImportedL2{{Version: 2, Sealed: blob("acme", 2)}},
		L3: []ImportedL3{{Service: "pay", Version: 4, SealedBy: 2, Sealed: blob("pay", 4)}, {Service: "web", Version: 1, SealedBy: 2, Sealed: blob("web", 1)}}}})
	if v, err := h.s.Usable("acme", "web", 0, OpWrap); err != nil || v != 1 {
		t.Fatalf("web: %d, %v", v, err)
	}
	// A tenant of this region alone takes no import: its versions are its own.
	h.must(CreateTenant{Tenant: "solo", Anchor: "file:///l1", SealedL2: blob("solo", 1)})
	if _, err := h.apply(ResyncTenant{Tenant: "solo", Import: &KeyImport{L2: []ImportedL2{{Version: 2, Sealed: blob("x")}}}}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("import into a local tenant: %v", err)
	}
	if _, err := h.apply(RemoveTenant{Tenant: "solo"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("remove a local tenant: %v", err)
	}
	h.must(SetTenantRegions{Tenant: "acme", Regions: []string{"eu", "us"}})

	// Snapshot round trip: version 6 keeps home and regions; a version 5 header refuses the
	// shared record.
	snap := snapshotBytes(t, h.s)
	s := NewState(Options{})
	if err := s.Restore(strings.NewReader(string(snap))); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != h.s.Hash() {
		t.Fatal("a shared tenant's snapshot restores to another state")
	}
	if tn, _ := s.Tenant("acme"); tn.Home != "eu" || !slices.Equal(tn.Regions, []string{"eu", "us"}) {
		t.Fatalf("restored %+v", tn)
	}
	hdr, recs := splitSnapshot(t, snap)
	if err := NewState(Options{}).Restore(strings.NewReader(joinSnapshot(strings.Replace(hdr, `"v":6`, `"v":5`, 1), recs))); err == nil {
		t.Fatal("a shared record in a version 5 snapshot was restored")
	}
	// Old → new: a version 5 snapshot (no shared tenants) restores to the same state.
	old := fixture(t)
	hdr, recs = splitSnapshot(t, snapshotBytes(t, old.s))
	s = NewState(Options{})
	if err := s.Restore(strings.NewReader(joinSnapshot(strings.Replace(hdr, `"v":6`, `"v":5`, 1), recs))); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != old.s.Hash() {
		t.Fatal("a version 5 snapshot restores to another state")
	}

	h.must(RemoveTenant{Tenant: "acme", Reason: "residency"})
	if _, err := h.s.Tenant("acme"); !errors.Is(err, ErrTenantNotFound) {
		t.Fatalf("after remove: %v", err)
	}
	if strings.Contains(string(snapshotBytes(t, h.s)), "sealed:pay") {
		t.Fatal("the snapshot still holds a sealed key of the removed tenant")
	}
	h.must(RemoveTenant{Tenant: "acme"}) // not here: nothing to do
}
