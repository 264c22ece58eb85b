package govfsm_test

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/kryptonkms/krypton/governance/govfsm"
)

// regionModel is what a region keeps of a tenant, applying governance events as the region's fsm
// does (region/feedevents.go): enough to tell whether two replays end in the same state.
type regionModel map[string]*modelTenant

type modelTenant struct {
	Anchor   string
	Deleted  bool
	Locked   bool
	Policy   uint64
	Services map[string]bool
	Revoked  map[string]bool // "" (the tenant), "svc", "svc/v"
}

func (m regionModel) apply(e *govfsm.Event) {
	t := m[e.Tenant]
	if t == nil && e.Kind != govfsm.KindCreateTenant && e.Kind != govfsm.KindResyncTenant {
		return // refused: no such tenant
	}
	switch e.Kind {
	case govfsm.KindCreateTenant:
		if t == nil {
			m[e.Tenant] = &modelTenant{Anchor: e.AnchorURI, Services: map[string]bool{}, Revoked: map[string]bool{}}
		}
	case govfsm.KindResyncTenant:
		if t == nil {
			t = &modelTenant{Anchor: e.AnchorURI, Services: map[string]bool{}, Revoked: map[string]bool{}}
			m[e.Tenant] = t
		}
		for _, s := range e.Services {
			t.Services[s] = true
		}
		if e.Policy != nil && e.Policy.Revision > t.Policy {
			t.Policy = e.Policy.Revision
		}
		t.Locked = t.Locked || e.Locked
	case govfsm.KindCreateService:
		t.Services[e.Service] = true
	case govfsm.KindSetAnchor:
		t.Anchor, t.Deleted = e.AnchorURI, false
	case govfsm.KindDeleteAnchor:
		t.Anchor, t.Deleted = "", true
	case govfsm.KindSetPolicy:
		t.Policy = max(t.Policy, e.Policy.Revision)
	case govfsm.KindLockTenant:
		t.Locked = true
	case govfsm.KindUnlockTenant:
		t.Locked = false
	case govfsm.KindRevokeTenant:
		t.Revoked[""] = true
	case govfsm.KindRevokeService:
		t.Revoked[e.Service] = true
	case govfsm.KindRevokeVersion:
		t.Revoked[fmt.Sprintf("%s/%d", e.Service, e.Version)] = true
	}
}

// replay applies f's events for region eu after cursor to m, as the feed sends them, and returns
// how many it applied per cursor (each must be once).
func replay(f *govfsm.FSM, m regionModel, after uint64, seen map[uint64]int) {
	for {
		events, head := f.EventsFor("eu", after, 7)
		for _, e := range events {
			m.apply(e)
			seen[e.Cursor]++
		}
		if head == after || head >= f.Head() {
			return
		}
		after = head
	}
}

func compactCmd(cursor uint64, retention, now int64) *govfsm.Command {
	return &govfsm.Command{Op: govfsm.OpCompact, Cursor: cursor, Retention: retention, Time: now}
}

// TestCompactionKeepsState: random logs are compacted behind the region's reported cursor, over and
// over. A region that was at any cursor when it went away and replays what the compacted log still
// holds after it ends in the same state as one that applied the whole log, every revocation
// applied exactly once; replicas compact identically (same bytes), the snapshot round-trips and
// shrinks, and revocations stay in the log, so a restore is still checked against them.
func TestCompactionKeepsState(t *testing.T) {
	for seed := range uint64(30) {
		full, a, b := govfsm.NewFSM(), govfsm.NewFSM(), govfsm.NewFSM()
		r := rand.New(rand.NewPCG(seed, 7))
		var positions []uint64 // where a region left off
		for i, c := range randomCommands(seed, 400) {
			apply(t, full, c)
			apply(t, a, c)
			apply(t, b, c)
			if i%40 == 39 {
				// Region eu reports somewhere behind the head; governance compacts behind it.
				cur := uint64(r.IntN(int(a.Head()) + 1))
				rep := &govfsm.Command{Op: govfsm.OpReport, Region: "eu", Cursor: cur, Time: c.Time}
				apply(t, full, rep)
				apply(t, a, rep)
				apply(t, b, rep)
				for _, f := range []*govfsm.FSM{a, b} {
					res := apply(t, f, compactCmd(a.Head(), 1e12, c.Time))
					if res.Err != nil || res.Recorded != f.Floor() || f.Floor() > max(cur, f.Floor()) {
						t.Fatalf("seed %d: compact: %+v floor %d cursor %d", seed, res, f.Floor(), cur)
					}
				}
				// A region that stopped at a random cursor.
				positions = append(positions, uint64(r.IntN(int(a.Head())+1)))
			}
		}
		// The whole log's state.
		want := regionModel{}
		replay(full, want, 0, map[uint64]int{})
		if a.Floor() == 0 {
			t.Fatalf("seed %d: never compacted", seed)
		}
		ea, _ := a.Encode()
		eb, _ := b.Encode()
		if !bytes.Equal(ea, eb) {
			t.Fatalf("seed %d: replicas compacted differently", seed)
		}
		ef, _ := full.Encode()
		if len(ea) >= len(ef) {
			t.Fatalf("seed %d: compacted snapshot %d bytes, whole %d", seed, len(ea), len(ef))
		}
		// A region at pos (state from the whole log up to pos) catches up from the compacted log.
		for _, pos := range positions {
			m := regionModel{}
			for c := uint64(1); c <= pos; c++ {
				if evs, _ := full.EventsFor("eu", c-1, 1); len(evs) == 1 && evs[0].Cursor == c {
					m.apply(evs[0])
				}
			}
			seen := map[uint64]int{}
			replay(a, m, pos, seen)
			if !reflect.DeepEqual(m, want) {
				t.Fatalf("seed %d: a region at %d (floor %d) caught up to\n%s\nnot\n%s", seed, pos, a.Floor(), dump(m), dump(want))
			}
			for c, n := range seen {
				if n != 1 || c <= pos {
					t.Fatalf("seed %d: event %d sent %d times to a region at %d", seed, c, n, pos)
				}
			}
		}
		// Every revocation stays, at its cursor: a restore of the whole log over the compacted one
		// (and the other way) keeps them all.
		for c := uint64(1); c <= full.Head(); c++ {
			e := full.Event(c)
			if k := e.Kind; k == govfsm.KindRevokeTenant || k == govfsm.KindRevokeService || k == govfsm.KindRevokeVersion {
				if g := a.Event(c); g == nil || g.ID != e.ID {
					t.Fatalf("seed %d: revocation %d dropped", seed, c)
				}
			}
		}
		if err := a.CheckSnapshot(ef); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := full.CheckSnapshot(ea); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		// Round trip, then both go on identically.
		c := govfsm.NewFSM()
		if err := c.Restore(io.NopCloser(bytes.NewReader(ea))); err != nil {
			t.Fatal(err)
		}
		if ec, _ := c.Encode(); !bytes.Equal(ea, ec) {
			t.Fatalf("seed %d: round trip differs", seed)
		}
		for _, cm := range randomCommands(seed+99, 50) {
			apply(t, a, cm)
			apply(t, c, cm)
		}
		ea, _ = a.Encode()
		ec, _ := c.Encode()
		if !bytes.Equal(ea, ec) {
			t.Fatalf("seed %d: restored compacted replica diverged", seed)
		}
	}
}

func dump(m regionModel) string {
	var b bytes.Buffer
	for _, n := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s: %+v\n", n, *m[n])
	}
	return b.String()
}

// TestCompactionFloorAndRetention: the floor is the lowest cursor of the regions that reported
// within the retention (by log time); a region that never reported, has been silent longer, or
// that no tenant names (a node certificate of a made-up region reporting cursor 0) does not hold
// it. A retried request whose event was dropped is answered with the event's cursor,
// id and kind. A compaction with no retention is refused.
func TestCompactionFloorAndRetention(t *testing.T) {
	f := govfsm.NewFSM()
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c", "acme", withAnchor(devAnchor), withRegions("eu", "us"))))
	for i := range 20 {
		mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, fmt.Sprintf("l%d", i), "acme", withTime(1000+int64(i)))))
	}
	rep := func(region string, cursor uint64, at int64) {
		mustOK(t, apply(t, f, &govfsm.Command{Op: govfsm.OpReport, Region: region, Cursor: cursor, Time: at}))
	}
	mustErr(t, apply(t, f, compactCmd(21, 0, 2000)), govfsm.ErrInvalidCommand)

	rep("eu", 21, 2000)
	rep("us", 5, 2000)
	if r := mustOK(t, apply(t, f, compactCmd(21, 1000, 2000))); r.Recorded != 5 || f.Floor() != 5 {
		t.Fatalf("floor %d, want 5 (us's cursor)", f.Floor())
	}
	// Time passes; eu reports again, us stays silent beyond the retention: it stops pinning.
	rep("eu", 21, 3500)
	if r := mustOK(t, apply(t, f, compactCmd(21, 1000, 3500))); r.Recorded != 21 {
		t.Fatalf("floor %d, want 21: a silent region still pins", r.Recorded)
	}
	// Only the creation and the newest lock remain.
	if f.LogLen() != 2 || f.Event(1) == nil || f.Event(21) == nil || f.Event(10) != nil {
		t.Fatalf("log holds %d events", f.LogLen())
	}
	// us comes back at 5: it has the creation; it gets the newest lock.
	evs, head := f.EventsFor("us", 5, 100)
	if len(evs) != 1 || evs[0].Cursor != 21 || head != 21 {
		t.Fatalf("us catches up with %+v (head %d)", evs, head)
	}
	// A retry of a dropped event's request answers with its cursor, id and kind.
	r := mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, "l3", "acme", withTime(4000))))
	if !r.Retry || r.Event == nil || r.Event.Cursor != 5 || r.Event.ID != "ev-l3" || r.Event.Kind != govfsm.KindLockTenant {
		t.Fatalf("retry after compaction: %+v", r.Event)
	}
	// The floor never goes down; a region never reported does not pin.
	if r := mustOK(t, apply(t, f, compactCmd(3, 1000, 4000))); r.Recorded != 21 {
		t.Fatalf("floor went to %d", r.Recorded)
	}
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c2", "beta", withAnchor(devAnchor), withRegions("ap"))))
	// A node certificate of a region no tenant names ("rogue") reports cursor 0, again and again:
	// it does not hold the floor.
	rep("rogue", 0, 4000)
	rep("eu", 22, 4000)
	if r := mustOK(t, apply(t, f, compactCmd(22, 1000, 4000))); r.Recorded != 22 {
		t.Fatalf("floor %d, want 22: ap never reported and rogue is no tenant's region, neither may pin", r.Recorded)
	}
}

// TestRestoreRefusesBadCompactedSnapshots: a compacted snapshot is refused if its cursors do not
// ascend, if the log after the floor is not gapless up to the head, if the floor is beyond the
// head, or if the state names a revocation or anchor deletion the log lacks; a good one restores.
func TestRestoreRefusesBadCompactedSnapshots(t *testing.T) {
	const tn = `"tenants":{"a":{"name":"a","regions":["eu"],"created":1,"cursor":4%s}}`
	ev := func(c int, kind int) string {
		return fmt.Sprintf(`{"cursor":%d,"id":"e%d","kind":%d,"tenant":"a","time":1}`, c, c, kind)
	}
	for name, s := range map[string]string{
		"live log with a gap":   fmt.Sprintf(`{`+tn+`,"events":[%s,%s],"head":4,"floor":2}`, "", ev(1, 9), ev(4, 4)),
		"cursors not ascending": fmt.Sprintf(`{`+tn+`,"events":[%s,%s,%s,%s],"head":4,"floor":2}`, "", ev(2, 9), ev(1, 9), ev(3, 4), ev(4, 4)),
		"floor beyond head":     fmt.Sprintf(`{`+tn+`,"events":[%s],"head":1,"floor":2}`, "", ev(1, 9)),
		"revocation dropped":    fmt.Sprintf(`{`+tn+`,"events":[%s,%s,%s],"head":4,"floor":2}`, `,"revoked":2`, ev(1, 9), ev(3, 4), ev(4, 4)),
	} {
		if err := govfsm.NewFSM().Restore(io.NopCloser(bytes.NewReader([]byte(s)))); err == nil {
			t.Errorf("%s: accepted %s", name, s)
		}
	}
	ok := fmt.Sprintf(`{`+tn+`,"events":[%s,%s,%s,%s],"head":4,"floor":2}`, `,"revoked":2`, ev(1, 9), ev(2, 1), ev(3, 5), ev(4, 4))
	f := govfsm.NewFSM()
	if err := f.Restore(io.NopCloser(bytes.NewReader([]byte(ok)))); err != nil {
		t.Fatalf("a good compacted snapshot: %v", err)
	}
	if f.Head() != 4 || f.Floor() != 2 || f.LogLen() != 4 || f.Event(2).Kind != govfsm.KindRevokeTenant {
		t.Fatalf("restored: head %d floor %d len %d", f.Head(), f.Floor(), f.LogLen())
	}
}
