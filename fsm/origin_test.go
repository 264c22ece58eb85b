package fsm

import (
	"errors"
	"strings"
	"testing"
)

// TestOrigin: an entry's origin survives the log encoding, reaches OnApplied with the entry
// (before AppliedIndex advances), and changes nothing else: the request id still names the same
// request whatever node or caller resends it, and the retry is not a change (Applied.Changed).
// An oversized or unknown origin is refused by Validate, before the log, and by Apply.
func TestOrigin(t *testing.T) {
	var seen []Applied
	var s *State
	s = NewState(Options{OnApplied: func(a Applied) {
		if s.AppliedIndex() >= a.Index {
			t.Errorf("AppliedIndex %d already at %d in OnApplied", s.AppliedIndex(), a.Index)
		}
		seen = append(seen, a)
	}})
	apply := func(index uint64, e Entry) {
		t.Helper()
		b, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		s.Apply(index, d)
	}
	o := Origin{Kind: OriginAPI, Actor: "spiffe://krypton/operator/alice", Node: "node-2", Detail: map[string]string{"owner-key": "fp"}}
	apply(1, Entry{RequestID: "t1", Command: CreateTenant{Tenant: "acme", Anchor: "file:///a", SealedL2: blob(1)}, Origin: o})
	apply(2, Entry{RequestID: "t1", Command: CreateTenant{Tenant: "acme", Anchor: "file:///a", SealedL2: blob(2)},
		Origin: Origin{Kind: OriginAPI, Actor: "spiffe://krypton/operator/bob", Node: "node-3"}})
	apply(3, Entry{Command: SetAnchor{Tenant: "acme", Anchor: "file:///b"}, Origin: Origin{Kind: OriginFeed, Actor: "governance"}})
	apply(4, Entry{Command: UnlockTenant{Tenant: "nosuch"}})
	if len(seen) != 4 {
		t.Fatalf("OnApplied called %d times, want 4", len(seen))
	}
	if a := seen[0]; !a.Changed() || a.Index != 1 || a.Entry.Origin.Actor != o.Actor || a.Entry.Origin.Node != "node-2" || a.Entry.Origin.Detail["owner-key"] != "fp" {
		t.Errorf("first apply: %+v", a)
	}
	if a := seen[1]; a.Changed() || !a.Result.Duplicate {
		t.Errorf("the retry through another node is a change: %+v", a)
	}
	if a := seen[2]; !a.Changed() || a.OldAnchor != "file:///a" {
		t.Errorf("set-anchor: changed %v, old anchor %q", a.Changed(), a.OldAnchor)
	}
	if a := seen[3]; a.Changed() || a.Err == nil {
		t.Errorf("a refused entry is a change: %+v", a)
	}

	for name, bad := range map[string]Origin{
		"kind":   {Kind: "root"},
		"actor":  {Kind: OriginAPI, Actor: strings.Repeat("a", MaxOriginValue+1)},
		"value":  {Kind: OriginAPI, Detail: map[string]string{"k": strings.Repeat("v", MaxOriginValue+1)}},
		"key":    {Kind: OriginAPI, Detail: map[string]string{"": "v"}},
		"utf8":   {Kind: OriginAPI, Actor: "\xff"},
		"detail": {Kind: OriginAPI, Detail: manyDetails(MaxOriginDetail + 1)},
	} {
		e := Entry{Command: UnlockTenant{Tenant: "acme"}, Origin: bad}
		if err := Validate(e); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("Validate with a bad origin (%s): %v", name, err)
		}
		if _, err := NewState(Options{}).Apply(1, e); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("Apply with a bad origin (%s): %v", name, err)
		}
	}
}

func manyDetails(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[string(rune('a'+i))] = "v"
	}
	return m
}
