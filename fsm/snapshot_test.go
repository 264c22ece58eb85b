package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/policy"
)

func TestSnapshotRoundTrip(t *testing.T) {
	h := fixture(t)
	h.must(ApplyGovernanceEvent{Cursor: 4, EventID: "e4", Event: LockTenant{Tenant: "acme", Reason: "gov"}})
	h.must(ApplyGovernanceEvent{Cursor: 6, After: 4, EventID: "e6", Event: SetPolicy{Tenant: "acme", Policy: policy.Policy{Revision: 3, Rules: []policy.Rule{
		{Caller: "spiffe://krypton/tenant/acme/service/*", Service: "*", Operations: []policy.Op{policy.Wrap, policy.Unwrap}},
		{Caller: "spiffe://krypton/tenant/other/**", Service: "pay", Operations: []policy.Op{policy.Rewrap}},
	}}}})
	h.must(ApplyGovernanceEvent{Cursor: 7, After: 6, EventID: "e7", Event: SetAnchor{Tenant: "acme", Anchor: "file:///x"}, Refused: refuse(ErrAnchorMismatch, "acme", "", 0)})
	h.applyEntry(Entry{RequestID: "r1", Command: UnlockTenant{Tenant: "acme"}})
	snap := snapshotBytes(t, h.s)
	// No quota records: the lowest version that holds the state (a rolling upgrade's older
	// release installs it).
	if !bytes.HasPrefix(snap, []byte(`{"format":"krypton-fsm-snapshot","v":4,"index":`)) {
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
	if p, err := s.Policy("acme"); err != nil || p.Revision != 3 || len(p.Rules) != 2 || p.Rules[1].Operations[0] != policy.Rewrap {
		t.Fatalf("policy = %+v, %v", p, err)
	}
	if log := s.RevocationLog(0); log[len(log)-1].Error != "anchor-mismatch" || log[len(log)-1].Kind != EventAnchorSet {
		t.Fatalf("revocation log = %+v", log)
	}
	if s.GovernanceCursor() != 7 {
		t.Fatalf("cursor = %d", s.GovernanceCursor())
	}
	if res, err := s.Apply(h.index+1, Entry{RequestID: "r1", Command: UnlockTenant{Tenant: "acme"}}); err != nil || !res.Duplicate {
		t.Fatalf("dedupe table lost: %+v, %v", res, err)
	}
}

type rawRecord struct {
	kind    byte
	payload []byte
}

// splitSnapshot splits a snapshot into its header line and its records.
func splitSnapshot(t *testing.T, b []byte) (string, []rawRecord) {
	t.Helper()
	i := bytes.IndexByte(b, '\n')
	hdr, rest := string(b[:i+1]), b[i+1:]
	var recs []rawRecord
	for len(rest) > 0 {
		size, n := binary.Uvarint(rest[1:])
		recs = append(recs, rawRecord{rest[0], rest[1+n : 1+n+int(size)]})
		rest = rest[1+n+int(size):]
	}
	return hdr, recs
}

func joinSnapshot(hdr string, recs []rawRecord) string {
	var b bytes.Buffer
	b.WriteString(hdr)
	for _, r := range recs {
		b.WriteByte(r.kind)
		b.Write(binary.AppendUvarint(nil, uint64(len(r.payload))))
		b.Write(r.payload)
	}
	return b.String()
}

func build(kind byte, f func(e *recWriter)) rawRecord {
	e := &recWriter{}
	f(e)
	return rawRecord{kind, e.buf}
}

func tenantRecord(name string, status Status) rawRecord {
	return build(recTenant, func(e *recWriter) {
		e.str(name)
		e.str("file:///x")
		e.status(status)
		e.str("")
		e.bool(false)
		e.uvarint(1)
		e.varint(1)
		e.varint(0)
		e.varint(0)
		e.uvarint(1)
		e.uvarint(1)
		e.bytes([]byte("sealed"))
		e.status(StatusActive)
		e.varint(1)
	})
}

func TestRestoreRefusesMalformed(t *testing.T) {
	h := fixture(t)
	h.applyEntry(Entry{RequestID: "r1", Command: UnlockTenant{Tenant: "acme"}})
	good := string(snapshotBytes(t, h.s))
	hdr, recs := splitSnapshot(t, []byte(good))
	if joinSnapshot(hdr, recs) != good {
		t.Fatal("split/join is not the identity")
	}
	find := func(kind byte) int {
		for i, r := range recs {
			if r.kind == kind {
				return i
			}
		}
		t.Fatalf("no record of kind %d", kind)
		return 0
	}
	with := func(i int, r rawRecord) string {
		c := slices.Clone(recs)
		c[i] = r
		return joinSnapshot(hdr, c)
	}
	without := func(i int) string { return joinSnapshot(hdr, slices.Delete(slices.Clone(recs), i, i+1)) }
	swap := func(i, j int) string {
		c := slices.Clone(recs)
		c[i], c[j] = c[j], c[i]
		return joinSnapshot(hdr, c)
	}
	key, svc, end := find(recKeyVersion), find(recService), find(recEnd)
	cursor := find(recCursor)
	// insert adds a record before position i and fixes the end record's count, so that only the
	// inserted record is at fault.
	insert := func(i int, r rawRecord) string {
		c := slices.Insert(slices.Clone(recs), i, r)
		c[len(c)-1] = build(recEnd, func(e *recWriter) { e.uvarint(uint64(len(c) - 1)) })
		return joinSnapshot(hdr, c)
	}
	policy := func(rev uint64, service string) rawRecord {
		return build(recPolicy, func(e *recWriter) {
			e.uvarint(rev)
			e.uvarint(1)
			e.str("spiffe://krypton/**")
			e.str(service)
			e.uvarint(1)
			e.uvarint(uint64(policy.Wrap))
		})
	}
	tenant := find(recTenant)
	if err := NewState(Options{}).Restore(strings.NewReader(insert(tenant+1, policy(1, "*")))); err != nil {
		t.Fatalf("a well-formed policy record is refused: %v", err)
	}
	cases := map[string]string{
		"policy outside a tenant": insert(cursor+1, policy(1, "*")),
		"policy revision 0":       insert(tenant+1, policy(0, "*")),
		"policy bad service":      insert(tenant+1, policy(1, "A")),
		"policy in version 1":     strings.Replace(insert(tenant+1, policy(1, "*")), `"v":4`, `"v":1`, 1),
		"empty":                   "",
		"not a snapshot":          "{}\n",
		"future version":          strings.Replace(good, `"v":4`, `"v":7`, 1),
		"header only":             hdr,
		"truncated":               joinSnapshot(hdr, recs[:end]),
		"cut mid-record":          good[:len(good)-2],
		"missing key version":     without(key),
		"missing revocation":      without(find(recRevocation)),
		"key before service":      swap(key, svc),
		"service first":           swap(svc, cursor),
		"trailing data":           good + "x",
		"unknown kind":            with(cursor, rawRecord{99, recs[cursor].payload}),
		"payload too long":        with(cursor, rawRecord{recCursor, append(slices.Clone(recs[cursor].payload), 0)}),
		"payload too short":       with(cursor, rawRecord{recCursor, nil}),
		"huge length":             hdr + string([]byte{recCursor}) + string(binary.AppendUvarint(nil, 1<<40)),
		"bad tenant name":         with(find(recTenant), tenantRecord("ACME", StatusActive)),
		"bad tenant status":       with(find(recTenant), tenantRecord("acme", Status(9))),
		"duplicate tenant":        joinSnapshot(hdr, slices.Insert(slices.Clone(recs), cursor+1, tenantRecord("acme", StatusActive))),
		"bad settings":            with(find(recSettings), build(recSettings, func(e *recWriter) { e.varint(1); e.varint(1); e.varint(0); e.uvarint(0) })),
		"count mismatch":          with(end, build(recEnd, func(e *recWriter) { e.uvarint(3) })),
		"sealed by unknown l2": with(key, build(recKeyVersion, func(e *recWriter) {
			e.uvarint(1)
			e.bytes([]byte("s"))
			e.uvarint(2)
			e.status(StatusActive)
			e.varint(0)
			e.varint(0)
			e.varint(0)
		})),
		"bad dedupe type": with(find(recDedupe), build(recDedupe, func(e *recWriter) {
			e.str("r1")
			e.str("no-such-command")
			e.result(Result{Index: 1})
			e.bytes(bytes.Repeat([]byte{1}, 32))
		})),
		"dedupe without a digest": with(find(recDedupe), build(recDedupe, func(e *recWriter) {
			e.str("r1")
			e.str("unlock-tenant")
			e.result(Result{Index: 1})
		})),
		"dedupe with a zero digest": with(find(recDedupe), build(recDedupe, func(e *recWriter) {
			e.str("r1")
			e.str("unlock-tenant")
			e.result(Result{Index: 1})
			e.bytes(make([]byte, 32))
		})),
		"dedupe with a short digest": with(find(recDedupe), build(recDedupe, func(e *recWriter) {
			e.str("r1")
			e.str("unlock-tenant")
			e.result(Result{Index: 1})
			e.bytes([]byte("short"))
		})),
		"bad dedupe error code": with(find(recDedupe), build(recDedupe, func(e *recWriter) {
			e.str("r1")
			e.str("unlock-tenant")
			e.result(Result{Index: 1})
			e.buf[len(e.buf)-1] = 1 // has an event error...
			e.str("no-such-code")   // ...with an unknown code
			e.str("")
			e.str("")
			e.uvarint(0)
			e.str("")
			e.bytes(bytes.Repeat([]byte{1}, 32))
		})),
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
	// The unmodified snapshot still restores.
	if err := h.s.Restore(strings.NewReader(joinSnapshot(hdr, recs))); err != nil {
		t.Fatal(err)
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

// oldSnapshot rewrites a current snapshot into format version v (1 or 2): no
// dedupe digests and, for 1, no revocation error codes (the fixture has no
// policy records, which version 1 lacks).
func oldSnapshot(t *testing.T, snap []byte, v int) *bytes.Buffer {
	t.Helper()
	hdr, recs := splitSnapshot(t, snap)
	var out bytes.Buffer
	out.WriteString(strings.Replace(hdr, `"v":4`, fmt.Sprintf(`"v":%d`, v), 1))
	for _, r := range recs {
		p := r.payload
		if r.kind == recRevocation && v < 2 {
			if p[len(p)-1] != 0 {
				t.Fatal("revocation record without an empty error code at its end")
			}
			p = p[:len(p)-1]
		}
		if r.kind == recDedupe {
			if p[len(p)-33] != 32 {
				t.Fatal("dedupe record without a digest at its end")
			}
			p = p[:len(p)-33]
		}
		if r.kind == recPolicy && v < 2 {
			t.Fatal("fixture has a policy")
		}
		out.WriteByte(r.kind)
		out.Write(binary.AppendUvarint(nil, uint64(len(p))))
		out.Write(p)
	}
	return &out
}

// TestRestoreVersion1 restores a snapshot in the first format (no policy
// records, no error code in revocation records), as a node upgraded from
// the previous release finds on disk.
func TestRestoreVersion1(t *testing.T) {
	h := fixture(t)
	h.must(ApplyGovernanceEvent{Cursor: 4, EventID: "e4", Event: RevokeService{Tenant: "acme", Service: "pay"}})
	s := NewState(Options{})
	if err := s.Restore(oldSnapshot(t, snapshotBytes(t, h.s), 1)); err != nil {
		t.Fatal(err)
	}
	if s.Hash() != h.s.Hash() {
		t.Fatal("a version 1 snapshot restores to a different state")
	}
}

// TestRestoreVersion2 restores a snapshot whose dedupe entries carry no
// request digest: their ids cannot show that a retry is the same request,
// so every use of them is refused and changes nothing; the rest of the
// state is as it was.
func TestRestoreVersion2(t *testing.T) {
	h := fixture(t)
	revoke := Entry{RequestID: "rv", Command: RevokeService{Tenant: "lockd", Service: "pay", Reason: "r"}}
	if _, err := h.applyEntry(revoke); err != nil {
		t.Fatal(err)
	}
	s := NewState(Options{})
	if err := s.Restore(oldSnapshot(t, snapshotBytes(t, h.s), 2)); err != nil {
		t.Fatal(err)
	}
	if s.root.dedupe.ids["rv"].Digest != [32]byte{} {
		t.Fatal("a version 2 dedupe entry has a digest")
	}
	before := s.Hash()
	for _, c := range []Command{revoke.Command, RevokeService{Tenant: "acme", Service: "pay", Reason: "r"}} {
		if _, err := s.Apply(100, Entry{RequestID: "rv", Command: c}); !errors.Is(err, ErrRequestIDReused) {
			t.Fatalf("%+v with a version 2 id: %v", c, err)
		}
	}
	if s.Hash() != before {
		t.Fatal("a refused reuse changed the state")
	}
	if st, _ := s.Service("acme", "pay"); st.Status == StatusRevoked {
		t.Fatal("acme/pay revoked")
	}
}
