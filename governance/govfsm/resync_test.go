package govfsm_test

import (
	"slices"
	"testing"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/govfsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestResyncRules: what a RESYNC_TENANT event carries, to whom it goes, and what governance refuses
// (the state machine's part).
func TestResyncRules(t *testing.T) {
	f := govfsm.NewFSM()
	resync := func(rid, tenant string, regions ...string) *govfsm.Result {
		return apply(t, f, cmd(govfsm.OpResyncTenant, rid, tenant, withRegions(regions...)))
	}
	mustErr(t, resync("x0", "nobody"), govfsm.ErrTenantNotFound)
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c0", "acme", withAnchor(devAnchor), withRegions("eu", "us"))))
	for _, s := range []string{"live", "gone", "leaky"} {
		mustOK(t, apply(t, f, cmd(govfsm.OpCreateService, "s-"+s, "acme", withService(s, 0))))
	}
	mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "rv1", "acme", withService("gone", 0))))
	mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "rv2", "acme", withService("leaky", 2))))
	// A service governance learnt of from a region's inventory only was created in that region.
	mustOK(t, apply(t, f, &govfsm.Command{Op: govfsm.OpReport, Region: "eu", Cursor: 1, HasInventory: true,
		Inventory: []govfsm.KeyRef{{Tenant: "acme", Service: "local", Version: 1}}}))
	mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "rv3", "acme", withService("local", 1))))
	mustOK(t, apply(t, f, cmd(govfsm.OpSetPolicy, "p1", "acme", func(c *govfsm.Command) {
		c.Rules = []govfsm.Rule{{Caller: "spiffe://krypton/**", Service: "*", Operations: []int32{1}}}
	})))
	mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, "l1", "acme")))
	// The quotas travel too: the tenant's and its live services'.
	tq, sq := govfsm.Quota{Rate: 100, Burst: 200}, govfsm.Quota{Concurrency: 3}
	mustOK(t, apply(t, f, cmd(govfsm.OpSetQuota, "q1", "acme", func(c *govfsm.Command) { c.Quota = &tq })))
	mustOK(t, apply(t, f, cmd(govfsm.OpSetQuota, "q2", "acme", withService("live", 0), func(c *govfsm.Command) { c.Quota = &sq })))

	all := mustOK(t, resync("r1", "acme"))
	if q := all.Event.Quota; q == nil || *q != tq || !slices.Equal(all.Event.ServiceQuotas, []govfsm.ServiceQuota{{Service: "live", Quota: sq}}) {
		t.Fatalf("resync event's quotas: %+v %+v", all.Event.Quota, all.Event.ServiceQuotas)
	}
	if p := governance.EventProto(all.Event); p.GetQuota().GetRate() != 100 || len(p.GetServiceQuotas()) != 1 ||
		p.GetServiceQuotas()[0].GetService() != "live" || p.GetServiceQuotas()[0].GetQuota().GetConcurrency() != 3 {
		t.Fatalf("resync event's quotas on the wire: %v", p)
	}
	e := all.Event
	if e.Kind != govfsm.KindResyncTenant || e.AnchorURI != devAnchor || !slices.Equal(e.Regions, []string{"eu", "us"}) ||
		!slices.Equal(e.Services, []string{"live"}) || !e.Locked || e.Policy == nil || e.Policy.Revision != 1 {
		t.Fatalf("resync event: %+v", e)
	}
	p := governance.EventProto(e)
	if p.GetKind() != kv1.EventKind_EVENT_KIND_RESYNC_TENANT || !slices.Equal(p.GetServices(), []string{"live"}) || !p.GetLocked() || p.GetAnchorUri() != devAnchor {
		t.Fatalf("resync event on the wire: %v", p)
	}
	// A retry returns the original event; a new request id makes a new one.
	head := f.Head()
	if r := mustOK(t, resync("r1", "acme")); r.Event.Cursor != e.Cursor || f.Head() != head {
		t.Fatalf("retry made event %d (head %d -> %d)", r.Event.Cursor, head, f.Head())
	}
	mustErr(t, apply(t, f, cmd(govfsm.OpResyncTenant, "r1", "acme", withRegions("eu"), func(c *govfsm.Command) { c.Fingerprint = "other" })),
		govfsm.ErrRequestIDReused)
	eu := mustOK(t, resync("r2", "acme", "eu"))
	if eu.Event.Cursor != head+1 || !slices.Equal(eu.Event.Regions, []string{"eu"}) {
		t.Fatalf("eu resync: %+v", eu.Event)
	}
	// The subset's event goes to eu only; us does not count it pending.
	euEvents, _ := f.EventsFor("eu", head, 100)
	usEvents, usHead := f.EventsFor("us", head, 100)
	if len(euEvents) != 1 || euEvents[0].Cursor != eu.Event.Cursor || len(usEvents) != 0 || usHead != f.Head() {
		t.Fatalf("eu sees %v, us sees %v up to %d", euEvents, usEvents, usHead)
	}
	mustOK(t, apply(t, f, &govfsm.Command{Op: govfsm.OpReport, Region: "us", Cursor: head}))
	for _, l := range f.Lags() {
		if l.Region == "us" && l.Pending != 0 {
			t.Fatalf("us counts an event it is not sent: %+v", l)
		}
	}

	mustErr(t, resync("r3", "acme", "ap"), govfsm.ErrNotTenantRegion)
	mustErr(t, resync("r4", "acme", "us", "eu"), govfsm.ErrInvalidCommand) // the server sorts
	mustErr(t, resync("r5", "acme", "eu", "eu"), govfsm.ErrInvalidCommand)

	// The kill switch stays on: no anchor, no resync (and no region could create the tenant).
	mustOK(t, apply(t, f, cmd(govfsm.OpDeleteAnchor, "d1", "acme")))
	mustErr(t, resync("r6", "acme"), govfsm.ErrNoAnchor)
	mustOK(t, apply(t, f, cmd(govfsm.OpSetAnchor, "s1", "acme", withAnchor(devAnchor))))
	mustOK(t, resync("r7", "acme"))
	// Revocation is terminal: a resync never brings the tenant back.
	mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "rv4", "acme")))
	mustErr(t, resync("r8", "acme"), govfsm.ErrRevoked)
}
