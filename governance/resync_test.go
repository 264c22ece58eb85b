package governance_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestResyncRules: what a RESYNC_TENANT event carries, to whom it goes, and what governance
// refuses (the state machine's part).
func TestResyncRules(t *testing.T) {
	f := governance.NewFSM()
	resync := func(rid, tenant string, regions ...string) *governance.Result {
		return apply(t, f, cmd(governance.OpResync, rid, tenant, withRegions(regions...)))
	}
	mustErr(t, resync("x0", "nobody"), governance.ErrTenantNotFound)
	mustOK(t, apply(t, f, cmd(governance.OpCreateTenant, "c0", "acme", withAnchor(devAnchor), withRegions("eu", "us"))))
	for _, s := range []string{"live", "gone", "leaky"} {
		mustOK(t, apply(t, f, cmd(governance.OpCreateService, "s-"+s, "acme", withService(s, 0))))
	}
	mustOK(t, apply(t, f, cmd(governance.OpRevoke, "rv1", "acme", withService("gone", 0))))
	mustOK(t, apply(t, f, cmd(governance.OpRevoke, "rv2", "acme", withService("leaky", 2))))
	// A service governance learnt of from a region's inventory only was created in that region.
	mustOK(t, apply(t, f, &governance.Command{Op: governance.OpReport, Region: "eu", Cursor: 1, HasInventory: true,
		Inventory: []governance.KeyRef{{Tenant: "acme", Service: "local", Version: 1}}}))
	mustOK(t, apply(t, f, cmd(governance.OpRevoke, "rv3", "acme", withService("local", 1))))
	mustOK(t, apply(t, f, cmd(governance.OpSetPolicy, "p1", "acme", func(c *governance.Command) {
		c.Rules = []governance.Rule{{Caller: "spiffe://krypton/**", Service: "*", Operations: []int32{1}}}
	})))
	mustOK(t, apply(t, f, cmd(governance.OpLock, "l1", "acme")))

	all := mustOK(t, resync("r1", "acme"))
	e := all.Event
	if e.Kind != governance.KindResyncTenant || e.AnchorURI != devAnchor || !slices.Equal(e.Regions, []string{"eu", "us"}) ||
		!slices.Equal(e.Services, []string{"live"}) || !e.Locked || e.Policy == nil || e.Policy.Revision != 1 {
		t.Fatalf("resync event: %+v", e)
	}
	p := e.Proto()
	if p.GetKind() != kv1.EventKind_EVENT_KIND_RESYNC_TENANT || !slices.Equal(p.GetServices(), []string{"live"}) || !p.GetLocked() || p.GetAnchorUri() != devAnchor {
		t.Fatalf("resync event on the wire: %v", p)
	}
	// A retry returns the original event; a new request id makes a new one.
	head := f.Head()
	if r := mustOK(t, resync("r1", "acme")); r.Event.Cursor != e.Cursor || f.Head() != head {
		t.Fatalf("retry made event %d (head %d -> %d)", r.Event.Cursor, head, f.Head())
	}
	mustErr(t, apply(t, f, cmd(governance.OpResync, "r1", "acme", withRegions("eu"), func(c *governance.Command) { c.Fingerprint = "other" })),
		governance.ErrRequestIDReused)
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
	mustOK(t, apply(t, f, &governance.Command{Op: governance.OpReport, Region: "us", Cursor: head}))
	for _, l := range f.Lags() {
		if l.Region == "us" && l.Pending != 0 {
			t.Fatalf("us counts an event it is not sent: %+v", l)
		}
	}

	mustErr(t, resync("r3", "acme", "ap"), governance.ErrNotTenantRegion)
	mustErr(t, resync("r4", "acme", "us", "eu"), governance.ErrInvalidCommand) // the server sorts
	mustErr(t, resync("r5", "acme", "eu", "eu"), governance.ErrInvalidCommand)

	// The kill switch stays on: no anchor, no resync (and no region could create the tenant).
	mustOK(t, apply(t, f, cmd(governance.OpDeleteAnchor, "d1", "acme")))
	mustErr(t, resync("r6", "acme"), governance.ErrNoAnchor)
	mustOK(t, apply(t, f, cmd(governance.OpSetAnchor, "s1", "acme", withAnchor(devAnchor))))
	mustOK(t, resync("r7", "acme"))
	// Revocation is terminal: a resync never brings the tenant back.
	mustOK(t, apply(t, f, cmd(governance.OpRevoke, "rv4", "acme")))
	mustErr(t, resync("r8", "acme"), governance.ErrRevoked)
}

// TestResyncTenantAPI: the RPC's validation, errors, permissions, audit and wait.
func TestResyncTenantAPI(t *testing.T) {
	g := governancetest.Start(t, 1, governancetest.WithRegions("eu", "us", "ap"))
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu", "us")
	if _, err := op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: rid(), Tenant: "acme", Service: "billing"}); err != nil {
		t.Fatal(err)
	}
	call := func(r *kv1.ResyncTenantRequest) (*kv1.ResyncTenantResponse, error) { return op.ResyncTenant(ctx, r) }
	for _, c := range []struct {
		req  *kv1.ResyncTenantRequest
		code codes.Code
	}{
		{&kv1.ResyncTenantRequest{Tenant: "acme"}, codes.InvalidArgument},                                             // no request id
		{&kv1.ResyncTenantRequest{RequestId: rid(), Tenant: "Not A Name"}, codes.InvalidArgument},                     // bad tenant
		{&kv1.ResyncTenantRequest{RequestId: rid(), Tenant: "acme", Regions: []string{"EU!"}}, codes.InvalidArgument}, // bad region
		{&kv1.ResyncTenantRequest{RequestId: rid(), Tenant: "acme", Regions: []string{"ap"}}, codes.InvalidArgument},  // not the tenant's
		{&kv1.ResyncTenantRequest{RequestId: rid(), Tenant: "nobody"}, codes.NotFound},
	} {
		_, err := call(c.req)
		wantCode(t, err, c.code)
	}
	// Nodes may not call it.
	_, err := g.NodeClient(0, "eu", "eu-1").ResyncTenant(ctx, &kv1.ResyncTenantRequest{RequestId: rid(), Tenant: "acme"})
	wantCode(t, err, codes.PermissionDenied)

	// Duplicated and unsorted regions are normalised.
	id := rid()
	r, err := call(&kv1.ResyncTenantRequest{RequestId: id, Tenant: "acme", Regions: []string{"us", "eu", "us"}})
	if err != nil {
		t.Fatal(err)
	}
	ev := r.GetEvent()
	if ev.GetKind() != kv1.EventKind_EVENT_KIND_RESYNC_TENANT || !slices.Equal(ev.GetRegions(), []string{"eu", "us"}) ||
		!slices.Equal(ev.GetServices(), []string{"billing"}) || ev.GetAnchorUri() != devAnchor || len(r.GetRegions()) != 0 {
		t.Fatalf("resync: %v", r)
	}
	// A retry with the same id returns the same event; waiting on eu alone returns once eu reports it.
	eu := g.NodeClient(0, "eu", "eu-1")
	if _, err := eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: ev.GetCursor()}); err != nil {
		t.Fatal(err)
	}
	head := g.Nodes[0].FSM().Head()
	r2, err := call(&kv1.ResyncTenantRequest{RequestId: id, Tenant: "acme", Regions: []string{"eu", "us"}})
	if err != nil || r2.GetEvent().GetCursor() != ev.GetCursor() || g.Nodes[0].FSM().Head() != head {
		t.Fatalf("retry: %v %v", r2, err)
	}
	// With wait, a region that does not report runs the call to its deadline (the event stands).
	// The deadline leaves the write time to commit on busy cores, as in TestDryRunAndWaitDeadline.
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = op.ResyncTenant(short, &kv1.ResyncTenantRequest{RequestId: "resync-wait", Tenant: "acme", Regions: []string{"eu"}, Wait: true})
	cancel()
	wantCode(t, err, codes.DeadlineExceeded)
	cur := g.Nodes[0].FSM().Head()
	if _, err := eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: cur}); err != nil {
		t.Fatal(err)
	}
	done, err := op.ResyncTenant(ctx, &kv1.ResyncTenantRequest{RequestId: "resync-wait", Tenant: "acme", Regions: []string{"eu"}, Wait: true})
	if err != nil || done.GetEvent().GetCursor() != cur || len(done.GetRegions()) != 1 || done.GetRegions()[0].GetAppliedCursor() < cur {
		t.Fatalf("wait after eu reported: %v %v", done, err)
	}

	// Revoked: FAILED_PRECONDITION, no event.
	if _, err := op.Revoke(ctx, &kv1.RevokeRequest{RequestId: rid(), Target: &kv1.KeyScope{Tenant: "acme"}, Reason: "offboarded"}); err != nil {
		t.Fatal(err)
	}
	head = g.Nodes[0].FSM().Head()
	_, err = call(&kv1.ResyncTenantRequest{RequestId: rid(), Tenant: "acme"})
	wantCode(t, err, codes.FailedPrecondition)
	if g.Nodes[0].FSM().Head() != head {
		t.Fatal("a refused resync made an event")
	}
}
