package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/policy"
)

func TestIdempotentRequestID(t *testing.T) {
	h := fixture(t)
	rot := Entry{RequestID: "req-1", Command: RotateServiceKey{Tenant: "acme", Service: "pay", Version: 4, SealedL3: blob(4), SealedBy: 1}}
	first, err := h.applyEntry(rot)
	if err != nil {
		t.Fatal(err)
	}
	hash := h.s.Hash()
	// The retry carries a fresh blob and time, as a leader would make.
	rot.Command = RotateServiceKey{Tenant: "acme", Service: "pay", Version: 4, SealedL3: blob("other"), SealedBy: 1}
	again, err := h.applyEntry(rot)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Index != first.Index || again.Version != 4 {
		t.Fatalf("retry = %+v, first = %+v", again, first)
	}
	if h.s.Hash() != hash {
		t.Fatal("retry changed the state")
	}
	if cur, _ := h.s.CurrentVersion("acme", "pay"); cur != 4 {
		t.Fatalf("current = %d", cur)
	}
	// The same id for another command is refused.
	if _, err := h.applyEntry(Entry{RequestID: "req-1", Command: RevokeTenant{Tenant: "acme"}}); !errors.Is(err, ErrRequestIDReused) {
		t.Fatalf("reuse: %v", err)
	}
	// A refused command is not remembered: fixing the cause and retrying works.
	bad := Entry{RequestID: "req-2", Command: CreateService{Tenant: "lockd", Service: "x", SealedL3: blob(), SealedBy: 1}}
	if _, err := h.applyEntry(bad); !errors.Is(err, ErrLocked) {
		t.Fatal(err)
	}
	h.must(UnlockTenant{Tenant: "lockd"})
	if res, err := h.applyEntry(bad); err != nil || res.Duplicate {
		t.Fatalf("retry after unlock = %+v, %v", res, err)
	}
	if _, err := h.applyEntry(Entry{RequestID: strings.Repeat("r", MaxRequestID+1), Command: UnlockTenant{Tenant: "acme"}}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("long request id: %v", err)
	}
}

// TestRequestIDNamesOneRequest reuses the request id of each kind of command
// for the same kind with other parameters (the attack of issue 14, finding
// 10: RevokeService of acme/sb under the id of acme/sa's answered "revoked"
// and revoked nothing). Every reuse is ErrRequestIDReused and changes
// nothing; a retry of the same request, re-prepared by a leader (fresh
// blobs, the next version), returns the first result.
func TestRequestIDNamesOneRequest(t *testing.T) {
	pol := func(rev uint64, svc string) policy.Policy {
		return policy.Policy{Revision: rev, Rules: []policy.Rule{{Caller: "spiffe://krypton/**", Service: svc, Operations: []policy.Op{policy.Wrap}}}}
	}
	cases := []struct {
		name                  string
		first, retry, another Command
	}{
		{"create-tenant", CreateTenant{Tenant: "t1", Anchor: "file:///a", SealedL2: blob(1)},
			CreateTenant{Tenant: "t1", Anchor: "file:///a", SealedL2: blob(2)},
			CreateTenant{Tenant: "t2", Anchor: "file:///a", SealedL2: blob(1)}},
		{"create-tenant anchor", CreateTenant{Tenant: "t3", Anchor: "file:///a", SealedL2: blob(1)},
			CreateTenant{Tenant: "t3", Anchor: "file:///a", SealedL2: blob(3)},
			CreateTenant{Tenant: "t3", Anchor: "file:///b", SealedL2: blob(1)}},
		{"rotate-tenant-key", RotateTenantKey{Tenant: "acme", Version: 2, SealedL2: blob(1)},
			RotateTenantKey{Tenant: "acme", Version: 3, SealedL2: blob(2)},
			RotateTenantKey{Tenant: "lockd", Version: 2, SealedL2: blob(1)}},
		{"create-service", CreateService{Tenant: "acme", Service: "new", SealedL3: blob(1), SealedBy: 2},
			CreateService{Tenant: "acme", Service: "new", SealedL3: blob(2), SealedBy: 2},
			CreateService{Tenant: "acme", Service: "other", SealedL3: blob(1), SealedBy: 2}},
		{"rotate-service-key", RotateServiceKey{Tenant: "acme", Service: "pay", Version: 4, SealedL3: blob(1), SealedBy: 2},
			RotateServiceKey{Tenant: "acme", Service: "pay", Version: 5, SealedL3: blob(2), SealedBy: 2},
			RotateServiceKey{Tenant: "acme", Service: "new", Version: 2, SealedL3: blob(1), SealedBy: 2}},
		{"revoke-key-version", RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 1, Reason: "r"},
			RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 1, Reason: "r"},
			RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 3, Reason: "r"}},
		{"revoke-key-version reason", RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 4, Reason: "r"},
			RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 4, Reason: "r"},
			RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 4, Reason: "other"}},
		{"revoke-service", RevokeService{Tenant: "acme", Service: "new", Reason: "r"},
			RevokeService{Tenant: "acme", Service: "new", Reason: "r"},
			RevokeService{Tenant: "acme", Service: "pay", Reason: "r"}},
		{"lock-tenant", LockTenant{Tenant: "t1", Reason: "r"},
			LockTenant{Tenant: "t1", Reason: "r"},
			LockTenant{Tenant: "acme", Reason: "r"}},
		{"unlock-tenant", UnlockTenant{Tenant: "t1"}, UnlockTenant{Tenant: "t1"}, UnlockTenant{Tenant: "lockd"}},
		{"set-anchor", SetAnchor{Tenant: "t1", Anchor: "file:///n", Resealed: [][]byte{blob(1)}},
			SetAnchor{Tenant: "t1", Anchor: "file:///n", Resealed: [][]byte{blob(2)}},
			SetAnchor{Tenant: "t1", Anchor: "file:///m", Resealed: [][]byte{blob(1)}}},
		{"set-policy", SetPolicy{Tenant: "t1", Policy: pol(1, "*")}, SetPolicy{Tenant: "t1", Policy: pol(1, "*")},
			SetPolicy{Tenant: "t1", Policy: pol(2, "pay")}},
		{"delete-anchor", DeleteAnchor{Tenant: "t3", Reason: "r"}, DeleteAnchor{Tenant: "t3", Reason: "r"},
			DeleteAnchor{Tenant: "acme", Reason: "r"}},
		{"revoke-tenant", RevokeTenant{Tenant: "t3", Reason: "r"}, RevokeTenant{Tenant: "t3", Reason: "r"},
			RevokeTenant{Tenant: "acme", Reason: "r"}},
	}
	h := fixture(t)
	for _, c := range cases {
		id := "id-" + c.name
		first, err := h.applyEntry(Entry{RequestID: id, Command: c.first})
		if err != nil {
			t.Fatalf("%s: first: %v", c.name, err)
		}
		hash := h.s.Hash()
		if _, err := h.applyEntry(Entry{RequestID: id, Command: c.another}); !errors.Is(err, ErrRequestIDReused) {
			t.Fatalf("%s: the id of %+v for %+v: %v", c.name, c.first, c.another, err)
		}
		if h.s.Hash() != hash {
			t.Fatalf("%s: a refused reuse changed the state", c.name)
		}
		again, err := h.applyEntry(Entry{RequestID: id, Command: c.retry})
		if err != nil || !again.Duplicate {
			t.Fatalf("%s: retry = %+v, %v", c.name, again, err)
		}
		again.Duplicate = false
		if again != first {
			t.Fatalf("%s: retry = %+v, first = %+v", c.name, again, first)
		}
		if h.s.Hash() != hash {
			t.Fatalf("%s: a retry changed the state", c.name)
		}
	}
	// The digests survive a snapshot: the restored state refuses and answers alike.
	s := NewState(Options{})
	if err := s.Restore(bytes.NewReader(snapshotBytes(t, h.s))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(1000, Entry{RequestID: "id-revoke-service", Command: RevokeService{Tenant: "acme", Service: "pay", Reason: "r"}}); !errors.Is(err, ErrRequestIDReused) {
		t.Fatalf("reuse after restore: %v", err)
	}
	if res, err := s.Apply(1001, Entry{RequestID: "id-revoke-service", Command: RevokeService{Tenant: "acme", Service: "new", Reason: "r"}}); err != nil || !res.Duplicate {
		t.Fatalf("retry after restore: %+v, %v", res, err)
	}
}

func TestDedupeWindow(t *testing.T) {
	h := newHarness(t)
	h.must(SetSettings{Settings: Settings{LeaseDuration: time.Second, AnchorCheckPeriod: time.Second, DedupeWindow: 3}})
	h.must(CreateTenant{Tenant: "acme", Anchor: "file:///a", SealedL2: blob()})
	id := func(i int) string { return "req-" + string(rune('a'+i)) }
	for i := range 5 {
		if _, err := h.applyEntry(Entry{RequestID: id(i), Command: LockTenant{Tenant: "acme", Reason: id(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// The oldest two are forgotten: applying them again applies anew.
	for i, wantDup := range []bool{false, false, true, true, true} {
		_, remembered := h.s.root.dedupe.ids[id(i)]
		if remembered != wantDup {
			t.Fatalf("id %d remembered = %v, want %v", i, remembered, wantDup)
		}
	}
	// Shrinking the window evicts at once, deterministically.
	h.must(SetSettings{Settings: Settings{LeaseDuration: time.Second, AnchorCheckPeriod: time.Second, DedupeWindow: 1}})
	if got := h.s.root.dedupe.order; len(got) != 1 || got[0] != id(4) {
		t.Fatalf("order = %v", got)
	}
	res, err := h.applyEntry(Entry{RequestID: id(4), Command: LockTenant{Tenant: "acme", Reason: id(4)}})
	if err != nil || !res.Duplicate {
		t.Fatalf("= %+v, %v", res, err)
	}
}

func TestGovernanceCursorIdempotent(t *testing.T) {
	h := fixture(t)
	ev := ApplyGovernanceEvent{Cursor: 10, EventID: "e10", Event: RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 3}}
	h.must(ev)
	hash, logLen := h.s.Hash(), len(h.s.RevocationLog(0))
	for _, c := range []uint64{10, 9, 1} {
		ev.Cursor = c
		res := h.must(ev)
		if !res.Skipped || res.Cursor != 10 {
			t.Fatalf("cursor %d: %+v", c, res)
		}
	}
	// Even a different event at an old cursor is skipped.
	res := h.must(ApplyGovernanceEvent{Cursor: 5, Event: RevokeTenant{Tenant: "acme"}})
	if !res.Skipped {
		t.Fatalf("%+v", res)
	}
	if h.s.Hash() != hash || len(h.s.RevocationLog(0)) != logLen || h.s.GovernanceCursor() != 10 {
		t.Fatal("skipped event changed the state")
	}
}
