package governance_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

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
