package fsm

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
)

// TestCompactRevocations: the revocation log drops history up to Through — governance events that
// revoke nothing, refused events, and an anchor deletion a later SetAnchor lifted, with the
// SetAnchor — and keeps every revocation in force (a version, a service, a tenant, an anchor
// deletion still on) and the newest entry. Numbering goes on after the gap; RevocationLog(since)
// reads past it; the snapshot round-trips with the gaps; a replica applying the same entries has
// the same Hash; a compaction with nothing to drop changes nothing.
func TestCompactRevocations(t *testing.T) {
	h, twin := fixture(t), fixture(t)
	both := func(c Command) {
		t.Helper()
		h.must(c)
		twin.must(c)
	}
	cur := uint64(0)
	gov := func(c Command, refused error) {
		t.Helper()
		cur++
		both(ApplyGovernanceEvent{Cursor: cur, After: cur - 1, EventID: fmt.Sprint("e", cur), Event: c, Refused: refused})
	}
	for i := range 20 {
		gov(LockTenant{Tenant: "acme", Reason: fmt.Sprint("churn ", i)}, nil)
		gov(UnlockTenant{Tenant: "acme"}, nil)
	}
	gov(DeleteAnchor{Tenant: "acme", Reason: "kill"}, nil)
	gov(SetAnchor{Tenant: "acme", Anchor: "file:///l1/acme"}, nil) // lifts it
	gov(RevokeService{Tenant: "nobody", Service: "x"}, refuse(ErrTenantNotFound, "nobody", "", 0))
	gov(RevokeService{Tenant: "lockd", Service: "pay", Reason: "gov"}, nil)
	before := h.s.RevocationLog(0)
	force := InForce(before)
	through := h.s.RevocationCompactThrough(3)
	if through == 0 {
		t.Fatal("nothing to compact")
	}
	both(CompactRevocations{Through: through})
	after := h.s.RevocationLog(0)
	if !reflect.DeepEqual(InForce(after), force) {
		t.Fatalf("in force after compaction:\n%+v\nwant\n%+v", InForce(after), force)
	}
	// In force: acme/pay v2, acme/old, gone, shred's deletion, lockd/pay; plus the 3 newest history
	// entries (the lifting SetAnchor, the refused event, and one unlock).
	if len(force) != 5 || len(after) != len(force)+3 {
		t.Fatalf("%d entries left of %d (%d in force)", len(after), len(before), len(force))
	}
	if got := h.s.RevocationLogLen(); got != len(after) {
		t.Fatal(got)
	}
	last := after[len(after)-1].Seq
	if last != before[len(before)-1].Seq {
		t.Fatal("the newest entry was dropped")
	}
	gov(RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 3, Reason: "r"}, nil)
	if log := h.s.RevocationLog(last); len(log) != 1 || log[0].Seq != last+1 || log[0].Kind != RevokedKeyVersion {
		t.Fatalf("after the gap: %+v", log)
	}
	if log := h.s.RevocationLog(after[1].Seq); len(log) != len(after)-1 {
		t.Fatalf("RevocationLog(since) across gaps: %d entries", len(log))
	}
	if h.s.Hash() != twin.s.Hash() {
		t.Fatal("replicas compacted differently")
	}
	snap := snapshotBytes(t, h.s)
	s := NewState(Options{})
	if err := s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != h.s.Hash() || !reflect.DeepEqual(s.RevocationLog(0), h.s.RevocationLog(0)) {
		t.Fatal("a compacted log does not round-trip")
	}
	// Only history up to Through goes: compacting again at the same point drops nothing.
	n := h.s.RevocationLogLen()
	h.must(CompactRevocations{Through: through})
	if h.s.RevocationLogLen() != n {
		t.Fatal("a second compaction dropped more")
	}
	if _, err := h.apply(CompactRevocations{}); err == nil {
		t.Fatal("Through 0 accepted")
	}
}
