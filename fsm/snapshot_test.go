package fsm

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestSnapshotRoundTrip(t *testing.T) {
	h := fixture(t)
	h.must(ApplyGovernanceEvent{Cursor: 4, EventID: "e4", Event: LockTenant{Tenant: "acme", Reason: "gov"}})
	h.applyEntry(Entry{RequestID: "r1", Command: UnlockTenant{Tenant: "acme"}})
	snap := snapshotBytes(t, h.s)
	if !bytes.HasPrefix(snap, []byte(`{"format":"krypton-fsm-snapshot","v":1,"index":`)) {
		t.Fatalf("header: %.80s", snap)
	}
	var restored []Change
	s := NewState(Options{OnChange: func(c Change) { restored = append(restored, c) }})
	s.Apply(1, Entry{Command: CreateTenant{Tenant: "zzz", Anchor: "file:///z", SealedL2: blob()}})
	if err := s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != h.s.Hash() || s.AppliedIndex() != h.s.AppliedIndex() {
		t.Fatal("restored state differs")
	}
	if _, err := s.Tenant("zzz"); err == nil {
		t.Fatal("restore kept previous state")
	}
	if len(restored) != 2 || restored[1] != (Change{Index: h.index, Kind: Restored}) {
		t.Fatalf("changes = %+v", restored)
	}
	if s.GovernanceCursor() != 4 {
		t.Fatalf("cursor = %d", s.GovernanceCursor())
	}
	if res, err := s.Apply(h.index+1, Entry{RequestID: "r1", Command: UnlockTenant{Tenant: "acme"}}); err != nil || !res.Duplicate {
		t.Fatalf("dedupe table lost: %+v, %v", res, err)
	}
}

func TestRestoreRefusesMalformed(t *testing.T) {
	h := fixture(t)
	good := string(snapshotBytes(t, h.s))
	lines := strings.SplitAfter(good, "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	find := func(prefix string) int {
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return i
			}
		}
		t.Fatalf("no %s line", prefix)
		return 0
	}
	without := func(i int) string { return strings.Join(append(lines[:i:i], lines[i+1:]...), "") }
	swap := func(i, j int) string {
		l := append([]string(nil), lines...)
		l[i], l[j] = l[j], l[i]
		return strings.Join(l, "")
	}
	key := find(`{"key":`)
	cases := map[string]string{
		"empty":             "",
		"not a snapshot":    "{}\n",
		"future version":    strings.Replace(good, `"v":1`, `"v":2`, 1),
		"truncated":         strings.Join(lines[:len(lines)-1], ""),
		"cut mid-line":      good[:len(good)/2],
		"missing key":       without(key),
		"missing revoked":   without(find(`{"revocation":`)),
		"key before svc":    swap(key, key-1),
		"trailing data":     good + `{"cursor":1}` + "\n",
		"unknown record":    strings.Replace(good, `{"cursor":`, `{"nope":1,"cursor":`, 1),
		"two records":       strings.Replace(good, `{"cursor":`, `{"end":{"records":0},"cursor":`, 1),
		"no record":         strings.Replace(good, `{"cursor":0}`, `{}`, 1),
		"bad json":          strings.Replace(good, `{"cursor":`, `{"cursor"`, 1),
		"bad status":        strings.Replace(good, `"status":"ACTIVE"`, `"status":"FINE"`, 1),
		"missing status":    strings.Replace(good, `"status":"ACTIVE",`, ``, 1),
		"bad tenant name":   strings.Replace(good, `{"tenant":{"name":"acme"`, `{"tenant":{"name":"ACME"`, 1),
		"duplicate tenant":  strings.Replace(good, `{"tenant":{"name":"gone"`, `{"tenant":{"name":"acme"`, 1),
		"bad settings":      strings.Replace(good, `"dedupe-window":10000`, `"dedupe-window":0`, 1),
		"count mismatch":    strings.Replace(good, `{"end":{"records":`, `{"end":{"records":1`, 1),
		"header only":       lines[0],
		"service elsewhere": strings.Replace(good, `{"service":{"tenant":"acme"`, `{"service":{"tenant":"gone"`, 1),
	}
	before := h.s.Hash()
	for name, in := range cases {
		if in == good {
			t.Fatalf("%s: case did not change the snapshot", name)
		}
		if err := h.s.Restore(strings.NewReader(in)); err == nil || !strings.HasPrefix(err.Error(), "fsm: restore") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if h.s.Hash() != before {
		t.Fatal("a failed restore changed the state")
	}
}

// TestSnapshotConcurrentApply persists a captured snapshot while Apply and
// queries run (under -race this checks the copy-on-write), and checks the
// snapshot is exactly the state at capture.
func TestSnapshotConcurrentApply(t *testing.T) {
	h := fixture(t)
	for i := range 50 {
		h.must(CreateService{Tenant: "acme", Service: fmt.Sprint("s", i), SealedL3: blob(i), SealedBy: 1})
	}
	want := h.s.Hash()
	f := &FSM{state: h.s}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var buf bytes.Buffer
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := writeSnapshot(&buf, snap.(*snapshot).root, snap.(*snapshot).index); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer wg.Done()
		for range 1000 {
			h.s.Usable("acme", "s1", 0, OpWrap)
			h.s.ListServices("acme")
		}
	}()
	// Change everything the snapshot can see: rotate (changes elements of
	// versions), revoke, lock, settings, dedupe, revocation log.
	for i := range 50 {
		svc := fmt.Sprint("s", i)
		h.must(RotateServiceKey{Tenant: "acme", Service: svc, Version: 2, SealedL3: blob(i, 2), SealedBy: 1})
		h.applyEntry(Entry{RequestID: svc, Command: RevokeKeyVersion{Tenant: "acme", Service: svc, Version: 1}})
	}
	h.must(RotateTenantKey{Tenant: "acme", Version: 2, SealedL2: blob(2)})
	h.must(LockTenant{Tenant: "acme", Reason: "x"})
	h.must(SetAnchor{Tenant: "lockd", Anchor: "file:///moved", Resealed: [][]byte{blob("re")}})
	h.must(SetSettings{Settings: Settings{LeaseDuration: 1, AnchorCheckPeriod: 1, DedupeWindow: 1}})
	wg.Wait()
	snap.Release()
	s := NewState(Options{})
	if err := s.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != want {
		t.Fatal("snapshot saw changes made after it was taken")
	}
	if s.Hash() == h.s.Hash() {
		t.Fatal("test made no changes")
	}
}
