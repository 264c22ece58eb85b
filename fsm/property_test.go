package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/policy"
)

// gen makes random but mostly sensible entries: it peeks at a State to pick
// the right next version most of the time, and otherwise sends wrong
// versions, unknown names, replayed request ids and stale cursors.
type gen struct {
	rng     *rand.Rand
	tenants []string
	svcs    []string
	cursor  uint64
	ids     []string
	n       int
}

func newGen(seed uint64) *gen {
	return &gen{
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		tenants: []string{"t0", "t1", "t2", "t3", "t4", "t5"},
		svcs:    []string{"s0", "s1", "s2"},
	}
}

func (g *gen) pick(xs []string) string { return xs[g.rng.IntN(len(xs))] }

func (g *gen) version(cur uint32) uint32 {
	switch g.rng.IntN(10) {
	case 0:
		return cur
	case 1:
		return cur + 2
	}
	return cur + 1
}

func (g *gen) command(s *State) Command {
	g.n++
	tn, sn := g.pick(g.tenants), g.pick(g.svcs)
	curL2 := uint32(0)
	if t, err := s.Tenant(tn); err == nil {
		curL2 = t.CurrentL2
	}
	cur, _ := s.CurrentVersion(tn, sn)
	b := []byte(fmt.Sprintf("blob-%d", g.n))
	switch g.rng.IntN(20) {
	case 0, 1:
		return CreateTenant{Tenant: tn, Anchor: "file:///" + tn, SealedL2: b}
	case 2:
		return RotateTenantKey{Tenant: tn, Version: g.version(curL2), SealedL2: b}
	case 3, 4, 5:
		return CreateService{Tenant: tn, Service: sn, SealedL3: b, SealedBy: curL2}
	case 6, 7, 8, 9:
		return RotateServiceKey{Tenant: tn, Service: sn, Version: g.version(cur), SealedL3: b, SealedBy: curL2}
	case 10:
		if g.rng.IntN(12) == 0 {
			return RevokeTenant{Tenant: tn, Reason: "r"}
		}
		return RevokeService{Tenant: tn, Service: sn}
	case 11, 12:
		return RevokeKeyVersion{Tenant: tn, Service: sn, Version: uint32(g.rng.IntN(int(cur) + 2))}
	case 13:
		return LockTenant{Tenant: tn, Reason: fmt.Sprint("denied ", g.n)}
	case 14:
		return UnlockTenant{Tenant: tn}
	case 15:
		if g.rng.IntN(10) == 0 {
			return DeleteAnchor{Tenant: tn}
		}
		var re [][]byte
		if g.rng.IntN(2) == 0 {
			for i := uint32(0); i < curL2; i++ {
				re = append(re, []byte(fmt.Sprintf("re-%d-%d", g.n, i)))
			}
		}
		return SetAnchor{Tenant: tn, Anchor: fmt.Sprintf("file:///%s/%d", tn, g.n), Resealed: re}
	case 16, 17:
		// Mostly advancing and chained to the applied cursor, sometimes
		// stale cursors, a wrong After or a proposer's refusal.
		applied := s.GovernanceCursor()
		c := applied + uint64(g.rng.IntN(3))
		after := applied
		if g.rng.IntN(8) == 0 {
			after = applied + 1
		}
		var ev Command
		switch g.rng.IntN(6) {
		case 0:
			ev = RevokeKeyVersion{Tenant: tn, Service: sn, Version: cur}
		case 1:
			ev = UnlockTenant{Tenant: tn}
		case 2:
			ev = DeleteAnchor{Tenant: tn, Reason: "kill"}
		case 3:
			ev = SetAnchor{Tenant: tn, Anchor: fmt.Sprintf("file:///%s/back", tn)}
		case 4:
			rev := uint64(1)
			if p, err := s.Policy(tn); err == nil {
				rev = p.Revision + uint64(g.rng.IntN(2))
			}
			ev = SetPolicy{Tenant: tn, Policy: policy.Policy{Revision: rev, Rules: []policy.Rule{{Caller: "spiffe://krypton/tenant/" + tn + "/service/*", Service: "*", Operations: []policy.Op{policy.Wrap}}}}}
		default:
			ev = RevokeService{Tenant: tn, Service: sn}
		}
		g.cursor = max(g.cursor, c)
		e := ApplyGovernanceEvent{Cursor: c, After: after, EventID: fmt.Sprint("ev-", c), Event: ev}
		if g.rng.IntN(10) == 0 {
			e.Refused = refuse(ErrAnchorMismatch, tn, "", 0)
		}
		return e
	case 18:
		return SetSettings{Settings: Settings{LeaseDuration: time.Duration(1+g.rng.IntN(9)) * time.Second, AnchorCheckPeriod: time.Minute, DedupeWindow: 2 + g.rng.IntN(20)}}
	}
	return UnlockTenant{Tenant: tn}
}

func (g *gen) entry(s *State) Entry {
	e := Entry{At: int64(g.n) * 1e6, Command: g.command(s)}
	switch r := g.rng.IntN(4); {
	case r == 0 && len(g.ids) > 0:
		e.RequestID = g.ids[g.rng.IntN(len(g.ids))] // a retry, maybe of another kind
	case r == 1:
		e.RequestID = fmt.Sprint("req-", g.n)
		g.ids = append(g.ids, e.RequestID)
	}
	return e
}

// genLog generates n encoded entries against a fresh State.
func genLog(t testing.TB, seed uint64, n int) [][]byte {
	g, s := newGen(seed), NewState(Options{})
	log := make([][]byte, n)
	for i := range log {
		e := g.entry(s)
		b, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		log[i] = b
		d, _ := Decode(b)
		s.Apply(uint64(i+1), d)
	}
	return log
}

func replay(t testing.TB, s *State, log [][]byte, from int) []string {
	var out []string
	for i := from; i < len(log); i++ {
		e, err := Decode(log[i])
		if err != nil {
			t.Fatal(err)
		}
		var resp any
		res, err := s.Apply(uint64(i+1), e)
		if resp = res; err != nil {
			resp = err
		}
		b, err := EncodeResponse(resp)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// TestDeterminism: any generated log gives the same state hash, and the same
// responses, on fresh States and after a snapshot and restore at a random
// point.
func TestDeterminism(t *testing.T) {
	t.Parallel()
	for seed := range uint64(16) {
		rng := rand.New(rand.NewPCG(seed, 1))
		log := genLog(t, seed, 300)

		a, b := NewState(Options{}), NewState(Options{})
		ra, rb := replay(t, a, log, 0), replay(t, b, log, 0)
		if a.Hash() != b.Hash() {
			t.Fatalf("seed %d: hashes differ", seed)
		}

		cut := rng.IntN(len(log))
		c := NewState(Options{})
		rc := replay(t, c, log[:cut], 0)
		snap := snapshotBytes(t, c)
		// Keep applying to c while a second State restores from the snapshot.
		d := NewState(Options{})
		replay(t, d, log[:rng.IntN(len(log))], 0) // state to be discarded
		if err := d.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatalf("seed %d: restore: %v", seed, err)
		}
		if d.AppliedIndex() != uint64(cut) {
			t.Fatalf("seed %d: applied index after restore = %d, want %d", seed, d.AppliedIndex(), cut)
		}
		rd := append(rc[:cut:cut], replay(t, d, log, cut)...)
		rc = append(rc, replay(t, c, log, cut)...)
		if c.Hash() != a.Hash() || d.Hash() != a.Hash() {
			t.Fatalf("seed %d: hash after snapshot at %d differs", seed, cut)
		}
		for i := range ra {
			if ra[i] != rb[i] || ra[i] != rc[i] || ra[i] != rd[i] {
				t.Fatalf("seed %d entry %d: responses differ: %s / %s / %s / %s", seed, i+1, ra[i], rb[i], rc[i], rd[i])
			}
		}
		// And the snapshot of the end state is byte-identical across nodes.
		if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, d)) {
			t.Fatalf("seed %d: snapshots differ", seed)
		}
	}
}

// model is a naive restatement of the rules, checked against Usable.
type model struct {
	tenants map[string]*mTenant
}

type mTenant struct {
	locked, revoked, anchorDeleted bool
	l2                             uint32
	svcs                           map[string]*mService
}

type mService struct {
	revoked bool
	status  []Status // status[v-1]
}

func (m *model) apply(c Command) {
	t := func(n string) *mTenant { return m.tenants[n] }
	live := func(x *mTenant) bool { return x != nil && !x.revoked && !x.anchorDeleted }
	switch c := c.(type) {
	case CreateTenant:
		if t(c.Tenant) == nil {
			m.tenants[c.Tenant] = &mTenant{l2: 1, svcs: map[string]*mService{}}
		}
	case RotateTenantKey:
		if x := t(c.Tenant); live(x) && !x.locked && c.Version == x.l2+1 {
			x.l2++
		}
	case CreateService:
		if x := t(c.Tenant); live(x) && !x.locked && x.svcs[c.Service] == nil && c.SealedBy == x.l2 {
			x.svcs[c.Service] = &mService{status: []Status{StatusActive}}
		}
	case RotateServiceKey:
		if x := t(c.Tenant); live(x) && !x.locked && c.SealedBy == x.l2 {
			if s := x.svcs[c.Service]; s != nil && !s.revoked && int(c.Version) == len(s.status)+1 {
				if s.status[len(s.status)-1] == StatusActive {
					s.status[len(s.status)-1] = StatusDecryptOnly
				}
				s.status = append(s.status, StatusActive)
			}
		}
	case RevokeTenant:
		if x := t(c.Tenant); x != nil {
			x.revoked = true
		}
	case RevokeService:
		if x := t(c.Tenant); x != nil && !x.revoked && x.svcs[c.Service] != nil {
			x.svcs[c.Service].revoked = true
		}
	case RevokeKeyVersion:
		if x := t(c.Tenant); x != nil && !x.revoked {
			if s := x.svcs[c.Service]; s != nil && !s.revoked && c.Version >= 1 && int(c.Version) <= len(s.status) {
				s.status[c.Version-1] = StatusRevoked
			}
		}
	case LockTenant:
		if x := t(c.Tenant); live(x) {
			x.locked = true
		}
	case UnlockTenant:
		if x := t(c.Tenant); live(x) {
			x.locked = false
		}
	case DeleteAnchor:
		if x := t(c.Tenant); x != nil {
			x.anchorDeleted = true
		}
	case SetAnchor:
		// The kill switch is lifted by a pointer that needs no resealing.
		if x := t(c.Tenant); x != nil && !x.revoked && len(c.Resealed) == 0 {
			x.anchorDeleted = false
		}
	}
}

func (m *model) usable(tn, sn string, v uint32, op Op) error {
	x := m.tenants[tn]
	if x == nil {
		return ErrTenantNotFound
	}
	if x.revoked {
		return ErrRevoked
	}
	if x.anchorDeleted {
		return ErrAnchorDeleted
	}
	if x.locked {
		return ErrLocked
	}
	s := x.svcs[sn]
	if s == nil {
		return ErrServiceNotFound
	}
	if s.revoked {
		return ErrRevoked
	}
	if v == 0 && op == OpWrap {
		v = uint32(len(s.status))
	}
	if v == 0 || int(v) > len(s.status) {
		return ErrVersionNotFound
	}
	switch st := s.status[v-1]; {
	case st == StatusRevoked:
		return ErrRevoked
	case st == StatusDecryptOnly && op == OpWrap:
		return ErrDecryptOnly
	}
	return nil
}

func TestUsableAgainstModel(t *testing.T) {
	t.Parallel()
	for seed := range uint64(12) {
		g, s := newGen(seed), NewState(Options{})
		m := &model{tenants: map[string]*mTenant{}}
		for i := range 400 {
			e := g.entry(s)
			res, err := s.Apply(uint64(i+1), e)
			if err == nil && !res.Duplicate && !res.Skipped && res.EventErr == nil {
				c := e.Command
				if ev, ok := c.(ApplyGovernanceEvent); ok {
					c = ev.Event
				}
				m.apply(c)
			}
			checkInvariants(t, s)
			for _, tn := range append(g.tenants, "zz") {
				for _, sn := range append(g.svcs, "zz") {
					for v := range uint32(5) {
						for _, op := range []Op{OpWrap, OpUnwrap} {
							_, got := s.Usable(tn, sn, v, op)
							if want := m.usable(tn, sn, v, op); !errors.Is(got, want) || (want == nil) != (got == nil) {
								t.Fatalf("seed %d step %d (%s): Usable(%s,%s,%d,%d) = %v, model %v", seed, i, e.Command.Type(), tn, sn, v, op, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// checkInvariants checks what must hold after any log: versions are 1..n
// without gaps, only the current version can be ACTIVE, blobs reference
// existing L2 versions, the revocation log is numbered in log order, and the
// dedupe table is within its window.
func checkInvariants(t *testing.T, s *State) {
	t.Helper()
	for _, tn := range s.ListTenants() {
		if int(tn.CurrentL2) != len(tn.L2) {
			t.Fatalf("%s: current L2 %d of %d", tn.Name, tn.CurrentL2, len(tn.L2))
		}
		for i, l2 := range tn.L2 {
			want := StatusDecryptOnly
			if i == len(tn.L2)-1 {
				want = StatusActive
			}
			if l2.Version != uint32(i+1) || l2.Status != want {
				t.Fatalf("%s: L2 %+v at %d", tn.Name, l2, i)
			}
		}
		svcs, _ := s.ListServices(tn.Name)
		for _, sv := range svcs {
			kvs, _ := s.ListKeyVersions(tn.Name, sv.Name)
			if int(sv.Current) != len(kvs) {
				t.Fatalf("%s/%s: current %d of %d", tn.Name, sv.Name, sv.Current, len(kvs))
			}
			for i, kv := range kvs {
				if kv.Version != uint32(i+1) || kv.SealedBy == 0 || kv.SealedBy > tn.CurrentL2 {
					t.Fatalf("%s/%s: %+v at %d", tn.Name, sv.Name, kv, i)
				}
				if kv.Status == StatusActive && kv.Version != sv.Current {
					t.Fatalf("%s/%s: non-current version %d is ACTIVE", tn.Name, sv.Name, kv.Version)
				}
			}
		}
	}
	var lastIndex uint64
	for i, r := range s.RevocationLog(0) {
		if r.Seq != uint64(i+1) || r.Index < lastIndex || (r.RequestID != "" && r.Cursor != 0) {
			t.Fatalf("revocation %d: %+v", i, r)
		}
		lastIndex = r.Index
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d := s.root.dedupe; len(d.order) != len(d.ids) || len(d.order) > s.root.settings.DedupeWindow {
		t.Fatalf("dedupe: %d ids, %d in order, window %d", len(d.ids), len(d.order), s.root.settings.DedupeWindow)
	}
}
