package region

import (
	"testing"

	"github.com/kryptonkms/krypton/fsm"
)

// TestInForce: the restore guard counts revocations and anchor deletions still in force, not the
// log's other governance events, refused events, or deletions a later anchor lifted.
func TestInForce(t *testing.T) {
	log := []fsm.Revocation{
		{Seq: 1, Kind: fsm.RevokedKeyVersion, Tenant: "a", Service: "s", Version: 1},
		{Seq: 2, Kind: fsm.RevokedAnchor, Tenant: "a"},
		{Seq: 3, Kind: fsm.EventAnchorSet, Tenant: "a", Error: "anchor-mismatch"}, // refused: a stays deleted
		{Seq: 4, Kind: fsm.RevokedAnchor, Tenant: "b"},
		{Seq: 5, Kind: fsm.EventAnchorSet, Tenant: "b"}, // lifts b's deletion
		{Seq: 6, Kind: fsm.EventPolicySet, Tenant: "a"},
		{Seq: 7, Kind: fsm.RevokedService, Tenant: "c", Service: "x", Error: "service-not-found"},
		{Seq: 8, Kind: fsm.RevokedTenant, Tenant: "d"},
	}
	var got []uint64
	for _, r := range inForce(log) {
		got = append(got, r.Seq)
	}
	if want := []uint64{1, 2, 8}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("in force: %v, want %v", got, want)
	}
}
