package govfsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/govfsm"
)

// cmd builds a write command the way the server does (time and event id chosen by the proposer,
// fingerprint from the parameters).
func cmd(op govfsm.Op, rid, tenant string, mod ...func(*govfsm.Command)) *govfsm.Command {
	c := &govfsm.Command{Op: op, RequestID: rid, Fingerprint: "fp-" + string(op) + tenant, EventID: "ev-" + rid, Time: 1000, Tenant: tenant}
	for _, m := range mod {
		m(c)
	}
	return c
}

func apply(t *testing.T, f *govfsm.FSM, c *govfsm.Command) *govfsm.Result {
	t.Helper()
	// Every command goes through its log encoding, as under Raft.
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := govfsm.DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	return f.ApplyCommand(d)
}

func mustOK(t *testing.T, r *govfsm.Result) *govfsm.Result {
	t.Helper()
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	return r
}

func mustErr(t *testing.T, r *govfsm.Result, want error) {
	t.Helper()
	if !errors.Is(r.Err, want) {
		t.Fatalf("got %v, want %v", r.Err, want)
	}
}

func withAnchor(u string) func(*govfsm.Command) {
	return func(c *govfsm.Command) { c.AnchorURI = u }
}
func withRegions(r ...string) func(*govfsm.Command) {
	return func(c *govfsm.Command) { c.Regions = r }
}
func withService(s string, v uint32) func(*govfsm.Command) {
	return func(c *govfsm.Command) { c.Service, c.Version = s, v }
}
func withTime(ns int64) func(*govfsm.Command) { return func(c *govfsm.Command) { c.Time = ns } }

func TestStateRules(t *testing.T) {
	f := govfsm.NewFSM()
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "r1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustErr(t, apply(t, f, cmd(govfsm.OpCreateTenant, "r2", "acme", withAnchor(devAnchor), withRegions("eu"))), govfsm.ErrTenantExists)
	mustErr(t, apply(t, f, cmd(govfsm.OpLockTenant, "r3", "nobody")), govfsm.ErrTenantNotFound)

	// The kill switch: deleting twice returns the original event; unlock needs an anchor;
	// set-anchor restores it.
	del := mustOK(t, apply(t, f, cmd(govfsm.OpDeleteAnchor, "d1", "acme")))
	if del.Tenant.AnchorURI != "" || del.Tenant.AnchorDeletedAt == 0 || governance.TenantProto(del.Tenant).GetState().String() != "TENANT_STATE_LOCKED" {
		t.Fatalf("after delete: %+v", del.Tenant)
	}
	again := mustOK(t, apply(t, f, cmd(govfsm.OpDeleteAnchor, "d2", "acme")))
	if again.Event.Cursor != del.Event.Cursor {
		t.Fatalf("second delete made event %d, want the original %d", again.Event.Cursor, del.Event.Cursor)
	}
	mustErr(t, apply(t, f, cmd(govfsm.OpUnlockTenant, "u1", "acme")), govfsm.ErrNoAnchor)
	set := mustOK(t, apply(t, f, cmd(govfsm.OpSetAnchor, "s1", "acme", withAnchor(devAnchor))))
	if set.Tenant.AnchorURI != devAnchor || set.Tenant.AnchorDeletedAt != 0 || governance.TenantProto(set.Tenant).GetState().String() != "TENANT_STATE_ACTIVE" {
		t.Fatalf("after set-anchor: %+v", set.Tenant)
	}
	// A new delete after a set is a new event.
	if d := mustOK(t, apply(t, f, cmd(govfsm.OpDeleteAnchor, "d3", "acme"))); d.Event.Cursor == del.Event.Cursor {
		t.Fatal("delete after set-anchor returned the old event")
	}
	mustOK(t, apply(t, f, cmd(govfsm.OpSetAnchor, "s2", "acme", withAnchor(devAnchor))))

	// Lock and unlock.
	if r := mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, "l1", "acme"))); !r.Tenant.Locked {
		t.Fatal("not locked")
	}
	if r := mustOK(t, apply(t, f, cmd(govfsm.OpUnlockTenant, "u2", "acme"))); r.Tenant.Locked {
		t.Fatal("still locked")
	}

	// Services and revocations.
	mustErr(t, apply(t, f, cmd(govfsm.OpRevoke, "v0", "acme", withService("billing", 0))), govfsm.ErrServiceNotFound)
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateService, "c1", "acme", withService("billing", 0))))
	mustErr(t, apply(t, f, cmd(govfsm.OpCreateService, "c2", "acme", withService("billing", 0))), govfsm.ErrServiceExists)
	v3 := mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "v1", "acme", withService("billing", 3))))
	if v3.Event.Kind != govfsm.KindRevokeVersion {
		t.Fatal(v3.Event.Kind)
	}
	if r := mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "v2", "acme", withService("billing", 3)))); r.Event.Cursor != v3.Event.Cursor {
		t.Fatal("revoking a revoked version made a new event")
	}
	svc := mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "v3", "acme", withService("billing", 0))))
	if r := mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "v4", "acme", withService("billing", 5)))); r.Event.Cursor != svc.Event.Cursor {
		t.Fatal("a version of a revoked service is covered by the service's event")
	}
	ten := mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "v5", "acme")))
	if !ten.Tenant.Revoked {
		t.Fatal("not revoked")
	}
	for _, op := range []govfsm.Op{govfsm.OpLockTenant, govfsm.OpUnlockTenant} {
		mustErr(t, apply(t, f, cmd(op, "x"+string(op), "acme")), govfsm.ErrRevoked)
	}
	mustErr(t, apply(t, f, cmd(govfsm.OpSetAnchor, "x1", "acme", withAnchor(devAnchor))), govfsm.ErrRevoked)
	mustErr(t, apply(t, f, cmd(govfsm.OpCreateService, "x2", "acme", withService("new", 0))), govfsm.ErrRevoked)
	if r := mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "v6", "acme", withService("billing", 0)))); r.Event.Cursor != ten.Event.Cursor {
		t.Fatal("a service of a revoked tenant is covered by the tenant's event")
	}

	// Policy revisions.
	rules := []govfsm.Rule{{Caller: "spiffe://krypton/tenant/acme/service/*", Service: "*", Operations: []int32{1, 2}}}
	f2 := govfsm.NewFSM()
	mustOK(t, apply(t, f2, cmd(govfsm.OpCreateTenant, "p0", "acme", withAnchor(devAnchor), withRegions("eu"))))
	p1 := mustOK(t, apply(t, f2, cmd(govfsm.OpSetPolicy, "p1", "acme", func(c *govfsm.Command) { c.Rules = rules })))
	if p1.Policy.Revision != 1 || p1.Event.Policy == nil || len(p1.Event.Policy.Rules) != 1 {
		t.Fatalf("policy: %+v", p1)
	}
	mustErr(t, apply(t, f2, cmd(govfsm.OpSetPolicy, "p2", "acme", func(c *govfsm.Command) { c.ExpectedRevision = 7 })), govfsm.ErrRevisionMismatch)
	if p := mustOK(t, apply(t, f2, cmd(govfsm.OpSetPolicy, "p3", "acme", func(c *govfsm.Command) { c.ExpectedRevision = 1 }))); p.Policy.Revision != 2 {
		t.Fatal(p.Policy.Revision)
	}
	bad := []govfsm.Rule{{Caller: "a**b", Service: "*", Operations: []int32{1}}}
	mustErr(t, apply(t, f2, cmd(govfsm.OpSetPolicy, "p4", "acme", func(c *govfsm.Command) { c.Rules = bad })), govfsm.ErrInvalidCommand)
}

func TestIdempotency(t *testing.T) {
	f := govfsm.NewFSM()
	first := mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "r1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	lock := mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, "lock-1", "acme")))
	head := f.Head()
	// A retry (same id, same parameters, another time and event id) returns the original event and
	// appends nothing.
	retry := mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, "lock-1", "acme", withTime(5000), func(c *govfsm.Command) { c.EventID = "other" })))
	if retry.Event.Cursor != lock.Event.Cursor || retry.Event.ID != lock.Event.ID || f.Head() != head {
		t.Fatalf("retry: %+v, head %d -> %d", retry.Event, head, f.Head())
	}
	if r := mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "r1", "acme", withAnchor(devAnchor), withRegions("eu")))); r.Event.Cursor != first.Event.Cursor {
		t.Fatal("create retry returned another event")
	}
	// The same id for another request is refused.
	mustErr(t, apply(t, f, cmd(govfsm.OpLockTenant, "lock-1", "acme", func(c *govfsm.Command) { c.Fingerprint = "different" })), govfsm.ErrRequestIDReused)
}

func TestReports(t *testing.T) {
	f := govfsm.NewFSM()
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "r1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, "r2", "acme")))
	rep := func(cursor uint64) *govfsm.Result {
		return apply(t, f, &govfsm.Command{Op: govfsm.OpReport, Region: "eu", Cursor: cursor, Time: 2000})
	}
	if r := mustOK(t, rep(2)); r.Recorded != 2 {
		t.Fatal(r.Recorded)
	}
	if r := mustOK(t, rep(1)); r.Recorded != 2 {
		t.Fatalf("a report going backwards moved the cursor to %d", r.Recorded)
	}
	mustErr(t, rep(3), govfsm.ErrCursorAhead)
	lags := f.Lags()
	if len(lags) != 1 || lags[0].Region != "eu" || lags[0].Pending != 0 || lags[0].ReportedAt != 2000 {
		t.Fatalf("lags: %+v", lags)
	}
	mustOK(t, apply(t, f, cmd(govfsm.OpUnlockTenant, "r3", "acme", withTime(3000))))
	if l := f.Lags()[0]; l.Pending != 1 || l.OldestPending != 3000 {
		t.Fatalf("lag: %+v", l)
	}
}

// TestReportConfigBound: a reported configuration index beyond the report's commit index is refused
// by the state machine itself (a configuration takes effect at a log index the node has); without
// the bound, index 2^64-1 would outrank every later report and pin the voter list for good. A liar
// within the bound still pins it: the operator's reset forgets it, and the next report (the real
// voters') teaches the configuration again.
func TestReportConfigBound(t *testing.T) {
	f := govfsm.NewFSM()
	rep := func(node string, index, commit uint64, voters ...string) *govfsm.Result {
		return apply(t, f, &govfsm.Command{Op: govfsm.OpReport, Region: "eu", Time: 2000, Node: node,
			ConfigIndex: index, CommitIndex: commit, Voters: voters})
	}
	mustOK(t, rep("n1", 5, 5, "n1", "n2", "n3"))
	mustErr(t, rep("n2", math.MaxUint64, 10, "n2"), govfsm.ErrInvalidCommand)
	mustErr(t, rep("n2", 11, 10, "n2"), govfsm.ErrInvalidCommand)
	if r := f.Report("eu"); r.ConfigIndex != 5 || !slices.Equal(r.Voters, []string{"n1", "n2", "n3"}) {
		t.Fatalf("a report beyond its commit index changed the configuration: %+v", r)
	}

	// Within the bound, a liar inflating both pins the list; the real voters are refused.
	mustOK(t, rep("n2", math.MaxUint64, math.MaxUint64, "n2"))
	mustErr(t, rep("n1", 6, 6, "n1", "n3"), govfsm.ErrNotRegionVoter)

	reset := cmd(govfsm.OpResetVoters, "reset-1", "", func(c *govfsm.Command) { c.Region, c.Reason = "eu", "n2 lied" })
	noReason := cmd(govfsm.OpResetVoters, "reset-2", "", func(c *govfsm.Command) { c.Region = "eu" })
	mustErr(t, apply(t, f, noReason), govfsm.ErrInvalidCommand)
	mustOK(t, apply(t, f, reset))
	if r := f.Report("eu"); r.ConfigIndex != 0 || len(r.Voters) != 0 || r.Cursor != 0 {
		t.Fatalf("after the reset: %+v", r)
	}
	mustOK(t, rep("n1", 6, 6, "n1", "n3"))
	if r := mustOK(t, apply(t, f, reset)); !r.Retry {
		t.Fatal("a retried reset was applied again")
	}
	if r := f.Report("eu"); r.ConfigIndex != 6 || !slices.Equal(r.Voters, []string{"n1", "n3"}) {
		t.Fatalf("a retried reset forgot the configuration again: %+v", r)
	}
	mustErr(t, rep("n2", 7, 7, "n2"), govfsm.ErrNotRegionVoter)
}

// randomCommands returns a reproducible mix of valid and invalid commands.
func randomCommands(seed uint64, n int) []*govfsm.Command {
	r := rand.New(rand.NewPCG(seed, 1))
	tenants := []string{"a", "b", "c"}
	var out []*govfsm.Command
	for i := range n {
		tn := tenants[r.IntN(len(tenants))]
		rid := fmt.Sprintf("r%d", r.IntN(n))  // ids repeat: retries and reuse
		tm := int64(1000 + i*10 - r.IntN(50)) // clocks jitter backwards
		var c *govfsm.Command
		switch r.IntN(10) {
		case 0:
			c = cmd(govfsm.OpCreateTenant, rid, tn, withAnchor(devAnchor), withRegions("eu"))
		case 1:
			c = cmd(govfsm.OpCreateService, rid, tn, withService([]string{"x", "y"}[r.IntN(2)], 0))
		case 2:
			c = cmd(govfsm.OpSetAnchor, rid, tn, withAnchor(devAnchor))
		case 3:
			c = cmd(govfsm.OpDeleteAnchor, rid, tn)
		case 4:
			c = cmd(govfsm.OpSetPolicy, rid, tn, func(c *govfsm.Command) {
				c.Rules = []govfsm.Rule{{Caller: "spiffe://krypton/**", Service: "*", Operations: []int32{1}}}
			})
		case 5:
			c = cmd(govfsm.OpLockTenant, rid, tn)
		case 6:
			c = cmd(govfsm.OpUnlockTenant, rid, tn)
		case 7:
			c = cmd(govfsm.OpRevoke, rid, tn, withService([]string{"", "x", "y"}[r.IntN(3)], uint32(r.IntN(3))))
			if c.Service == "" {
				c.Version = 0
			}
		case 9:
			c = cmd(govfsm.OpResyncTenant, rid, tn, withRegions([][]string{nil, {"eu"}, {"us"}}[r.IntN(3)]...))
		case 8:
			c = &govfsm.Command{Op: govfsm.OpReport, Region: "eu", Cursor: uint64(r.IntN(i + 1)), HasInventory: r.IntN(2) == 0,
				Inventory: []govfsm.KeyRef{{Tenant: tn, Service: "y", Version: 1}}}
		}
		c.Time = tm
		c.EventID = fmt.Sprintf("e%d", i)
		out = append(out, c)
	}
	return out
}

// TestLogProperties applies random command sequences and checks the log's invariants, determinism
// across replicas, and snapshot round trips.
func TestLogProperties(t *testing.T) {
	for seed := range uint64(20) {
		cmds := randomCommands(seed, 300)
		a, b := govfsm.NewFSM(), govfsm.NewFSM()
		var lastTime int64
		for i, c := range cmds {
			before := a.Head()
			ra := apply(t, a, c)
			rb := apply(t, b, c)
			if (ra.Err == nil) != (rb.Err == nil) {
				t.Fatalf("seed %d cmd %d: replicas disagree", seed, i)
			}
			if d := a.Head() - before; d > 1 {
				t.Fatalf("seed %d cmd %d: head moved by %d", seed, i, d)
			}
			if ra.Err == nil && ra.Event != nil && a.Head() > before && ra.Event.Cursor != a.Head() {
				t.Fatalf("seed %d cmd %d: new event has cursor %d, head %d", seed, i, ra.Event.Cursor, a.Head())
			}
		}
		for c := uint64(1); c <= a.Head(); c++ {
			e := a.Event(c)
			if e == nil || e.Cursor != c {
				t.Fatalf("seed %d: cursor %d missing", seed, c)
			}
			if e.Time < lastTime {
				t.Fatalf("seed %d: event time went backwards at %d", seed, c)
			}
			lastTime = e.Time
		}
		ea, _ := a.Encode()
		eb, _ := b.Encode()
		if !bytes.Equal(ea, eb) {
			t.Fatalf("seed %d: replicas' snapshots differ", seed)
		}
		// Snapshot round trip: restore into a fresh FSM, encode the same.
		c := govfsm.NewFSM()
		if err := c.Restore(io.NopCloser(bytes.NewReader(ea))); err != nil {
			t.Fatal(err)
		}
		if ec, _ := c.Encode(); !bytes.Equal(ea, ec) {
			t.Fatalf("seed %d: snapshot round trip differs", seed)
		}
		// And the restored state goes on exactly as the original.
		more := randomCommands(seed+1000, 50)
		for _, cm := range more {
			apply(t, a, cm)
			apply(t, c, cm)
		}
		ea, _ = a.Encode()
		ec, _ := c.Encode()
		if !bytes.Equal(ea, ec) {
			t.Fatalf("seed %d: restored replica diverged", seed)
		}
	}
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	for _, s := range []string{
		`{"events":[{"cursor":2,"tenant":"a"}]}`,
		`{"tenants":{"a":{"name":"b"}}}`,
		`{"regions":{"eu":{"cursor":5}}}`,
		`not json`,
	} {
		if err := govfsm.NewFSM().Restore(io.NopCloser(bytes.NewReader([]byte(s)))); err == nil {
			t.Errorf("accepted %s", s)
		}
	}
}

func TestBlast(t *testing.T) {
	f := govfsm.NewFSM()
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "r1", "acme", withAnchor(devAnchor), withRegions("eu", "us"))))
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateService, "r2", "acme", withService("billing", 0))))
	mustOK(t, apply(t, f, &govfsm.Command{Op: govfsm.OpReport, Region: "eu", HasInventory: true, Inventory: []govfsm.KeyRef{
		{Tenant: "acme", Service: "billing", Version: 1}, {Tenant: "acme", Service: "billing", Version: 2}, {Tenant: "acme", Service: "mail", Version: 1}}}))
	before, _ := f.Encode()
	b, err := f.Blast("acme", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Services) != 2 || len(b.KeyVersions) != 3 || len(b.Regions) != 2 {
		t.Fatalf("tenant blast: %+v", b)
	}
	if b, _ = f.Blast("acme", "billing", 2); len(b.KeyVersions) != 1 || b.KeyVersions[0].Version != 2 {
		t.Fatalf("version blast: %+v", b)
	}
	if _, err := f.Blast("acme", "nope", 0); !errors.Is(err, govfsm.ErrServiceNotFound) {
		t.Fatal(err)
	}
	after, _ := f.Encode()
	if !bytes.Equal(before, after) {
		t.Fatal("Blast changed the state")
	}
	// A service known only from an inventory can be revoked.
	mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "r3", "acme", withService("mail", 0))))
}

// devAnchor is a development anchor URI; the state machine stores it and never opens it.
const devAnchor = "file:///tmp/governance-test/root.key"
