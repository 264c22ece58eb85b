package fsm

import (
	"bytes"
	"fmt"
	"testing"
)

// blob returns a fake sealed blob; fsm never looks inside.
func blob(parts ...any) []byte {
	return []byte(fmt.Sprint(append([]any{"sealed:"}, parts...)...))
}

// harness applies entries to a State at increasing indexes, recording the
// changes the observer saw.
type harness struct {
	t       testing.TB
	s       *State
	index   uint64
	changes []Change
}

func newHarness(t testing.TB) *harness {
	h := &harness{t: t}
	h.s = NewState(Options{OnChange: func(c Change) { h.changes = append(h.changes, c) }})
	return h
}

func (h *harness) apply(c Command) (Result, error) {
	return h.applyEntry(Entry{Command: c})
}

func (h *harness) applyEntry(e Entry) (Result, error) {
	h.index++
	if e.At == 0 {
		e.At = int64(h.index) * 1000
	}
	// Every entry goes through the log encoding, as under Raft, except the
	// malformed ones Encode refuses: Apply must refuse those too.
	b, err := Encode(e)
	if err != nil {
		return h.s.Apply(h.index, e)
	}
	d, err := Decode(b)
	if err != nil {
		h.t.Fatalf("decode %T: %v", e.Command, err)
	}
	return h.s.Apply(h.index, d)
}

func (h *harness) must(c Command) Result {
	h.t.Helper()
	res, err := h.apply(c)
	if err != nil {
		h.t.Fatalf("apply %s: %v", c.Type(), err)
	}
	return res
}

// fixture builds a state with one of everything:
//
//	acme      ACTIVE, L2 v1; services pay (v1 DECRYPT_ONLY, v2 REVOKED, v3 ACTIVE), old (REVOKED)
//	lockd     LOCKED; service pay v1
//	gone      REVOKED; service pay v1
//	shred     anchor deleted; service pay v1
func fixture(t testing.TB) *harness {
	h := newHarness(t)
	for _, name := range []string{"acme", "lockd", "gone", "shred"} {
		h.must(CreateTenant{Tenant: name, Anchor: "file:///l1/" + name, SealedL2: blob(name, 1)})
		h.must(CreateService{Tenant: name, Service: "pay", SealedL3: blob(name, "pay", 1), SealedBy: 1})
	}
	h.must(RotateServiceKey{Tenant: "acme", Service: "pay", Version: 2, SealedL3: blob("acme", "pay", 2), SealedBy: 1})
	h.must(RotateServiceKey{Tenant: "acme", Service: "pay", Version: 3, SealedL3: blob("acme", "pay", 3), SealedBy: 1})
	h.must(RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 2, Reason: "leaked"})
	h.must(CreateService{Tenant: "acme", Service: "old", SealedL3: blob("acme", "old", 1), SealedBy: 1})
	h.must(RevokeService{Tenant: "acme", Service: "old"})
	h.must(LockTenant{Tenant: "lockd", Reason: "l1 denied"})
	h.must(RevokeTenant{Tenant: "gone"})
	h.must(DeleteAnchor{Tenant: "shred"})
	h.changes = nil
	return h
}

func snapshotBytes(t testing.TB, s *State) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
