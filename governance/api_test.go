package governance_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func TestPermissions(t *testing.T) {
	g := governancetest.Start(t, 1)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")

	eu := g.NodeClient(0, "eu", "eu-1")
	// A node of eu may not follow or report for us.
	s, err := eu.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "us"})
	if err == nil {
		_, err = s.Recv()
	}
	wantCode(t, err, codes.PermissionDenied)
	_, err = eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "us"})
	wantCode(t, err, codes.PermissionDenied)
	// Nor make operator calls.
	_, err = eu.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "x", AnchorUri: devAnchor, Regions: []string{"eu"}})
	wantCode(t, err, codes.PermissionDenied)
	_, err = eu.Revoke(ctx, &kv1.RevokeRequest{Target: &kv1.KeyScope{Tenant: "acme"}, DryRun: true})
	wantCode(t, err, codes.PermissionDenied)

	// A governance node's certificate follows no feed.
	cert, err := g.CA.IssueGovernance("gov-9", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := transport.Dial(ctx, g.Addr(0), transport.ClientConfig{Roots: g.CA.Pool(), Certificate: cert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindGovernance}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = kv1.NewGovernanceServiceClient(conn).ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu"})
	wantCode(t, err, codes.PermissionDenied)

	// An operator may not report for a region either.
	_, err = g.Client(0).ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu"})
	wantCode(t, err, codes.PermissionDenied)

	// A service certificate is refused by transport's policy.
	svc, err := g.CA.IssueService("acme", "billing", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn2, err := transport.Dial(ctx, g.Addr(0), transport.ClientConfig{Roots: g.CA.Pool(), Certificate: svc.TLSCertificate(), Server: pki.Identity{Kind: pki.KindGovernance}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	_, err = kv1.NewGovernanceServiceClient(conn2).GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
	wantCode(t, err, codes.PermissionDenied)

	// Reports beyond the head are out of range.
	_, err = eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 99})
	wantCode(t, err, codes.OutOfRange)
}

func TestValidation(t *testing.T) {
	g := governancetest.Start(t, 1, governancetest.WithRegions("eu", "us"))
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	create := func(r *kv1.GovernanceCreateTenantRequest) error {
		_, err := op.CreateTenant(ctx, r)
		return err
	}
	for name, r := range map[string]*kv1.GovernanceCreateTenantRequest{
		"no request id":  {Tenant: "t", AnchorUri: devAnchor, Regions: []string{"eu"}},
		"bad name":       {RequestId: rid(), Tenant: "Bad Name", AnchorUri: devAnchor, Regions: []string{"eu"}},
		"bad anchor":     {RequestId: rid(), Tenant: "t", AnchorUri: "nope://x", Regions: []string{"eu"}},
		"no regions":     {RequestId: rid(), Tenant: "t", AnchorUri: devAnchor},
		"unknown region": {RequestId: rid(), Tenant: "t", AnchorUri: devAnchor, Regions: []string{"mars"}},
	} {
		if err := create(r); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
			t.Errorf("%s: %v", name, err)
		}
	}
	wantCode(t, create(&kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "acme", AnchorUri: devAnchor, Regions: []string{"eu"}}), codes.AlreadyExists)

	rules := make([]*kv1.PolicyRule, 1001)
	for i := range rules {
		rules[i] = &kv1.PolicyRule{Caller: "spiffe://krypton/**", Service: "*", Operations: []kv1.Operation{kv1.Operation_OPERATION_WRAP}}
	}
	_, err := op.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: rid(), Policy: &kv1.Policy{Tenant: "acme", Rules: rules}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = op.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: rid(), Policy: &kv1.Policy{Tenant: "acme", Rules: []*kv1.PolicyRule{{Caller: "x", Service: "*"}}}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = op.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: rid(), Policy: &kv1.Policy{Tenant: "nobody"}})
	wantCode(t, err, codes.NotFound)
	_, err = op.Revoke(ctx, &kv1.RevokeRequest{RequestId: rid(), Target: &kv1.KeyScope{Tenant: "acme", Version: 3}, Reason: "test"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = op.Revoke(ctx, &kv1.RevokeRequest{RequestId: rid(), Target: &kv1.KeyScope{Tenant: "acme", Service: "nope"}, Reason: "test"})
	wantCode(t, err, codes.NotFound)
	_, err = op.ListTenants(ctx, &kv1.GovernanceListTenantsRequest{PageToken: "!!"})
	wantCode(t, err, codes.InvalidArgument)

	// The same request id for another request.
	_, err = op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: "same", Tenant: "acme", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: "same", Tenant: "acme", Reason: "different"})
	wantCode(t, err, codes.InvalidArgument)
}

func TestPolicyAndPages(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	for _, n := range []string{"c", "a", "b"} {
		g.CreateTenant(n, devAnchor, "eu")
	}
	p, err := op.GetPolicy(ctx, &kv1.GetPolicyRequest{Tenant: "a"})
	if err != nil || p.GetRevision() != 0 || len(p.GetRules()) != 0 {
		t.Fatalf("empty policy: %v %v", p, err)
	}
	rule := &kv1.PolicyRule{Caller: "spiffe://krypton/tenant/a/service/*", Service: "*", Operations: []kv1.Operation{kv1.Operation_OPERATION_UNWRAP, kv1.Operation_OPERATION_WRAP, kv1.Operation_OPERATION_WRAP}}
	p, err = op.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: rid(), Policy: &kv1.Policy{Tenant: "a", Rules: []*kv1.PolicyRule{rule}}})
	if err != nil || p.GetRevision() != 1 || len(p.GetRules()[0].GetOperations()) != 2 {
		t.Fatalf("set: %v %v", p, err)
	}
	_, err = op.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: rid(), Policy: &kv1.Policy{Tenant: "a"}, ExpectedRevision: 5})
	wantCode(t, err, codes.Aborted)
	got, err := op.GetPolicy(ctx, &kv1.GetPolicyRequest{Tenant: "a"})
	if err != nil || got.GetRevision() != 1 || got.GetRules()[0].GetCaller() != rule.GetCaller() {
		t.Fatalf("get: %v %v", got, err)
	}

	var names []string
	token := ""
	for {
		r, err := op.ListTenants(ctx, &kv1.GovernanceListTenantsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range r.GetTenants() {
			names = append(names, tn.GetName())
		}
		if token = r.GetNextPageToken(); token == "" {
			break
		}
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Fatalf("pages: %v", names)
	}
}

func TestDryRunAndWaitDeadline(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu", "us")
	if _, err := op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: rid(), Tenant: "acme", Service: "billing"}); err != nil {
		t.Fatal(err)
	}
	eu := g.NodeClient(0, "eu", "eu-1")
	inv := []*kv1.KeyRef{{Tenant: "acme", Service: "billing", Version: 1}, {Tenant: "acme", Service: "billing", Version: 2}}
	if _, err := eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 2, Inventory: inv, HasInventory: true}); err != nil {
		t.Fatal(err)
	}

	before, _ := g.Nodes[0].FSM().Encode()
	r, err := op.Revoke(ctx, &kv1.RevokeRequest{Target: &kv1.KeyScope{Tenant: "acme", Service: "billing"}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	b := r.GetBlastRadius()
	if r.GetEvent() != nil || len(b.GetKeyVersions()) != 2 || len(b.GetRegions()) != 2 || len(b.GetServices()) != 1 || b.GetTenants()[0] != "acme" {
		t.Fatalf("dry run: %v", r)
	}
	after, _ := g.Nodes[0].FSM().Encode()
	if string(before) != string(after) {
		t.Fatal("a dry run changed the state")
	}

	// Wait with a deadline no region meets: DEADLINE_EXCEEDED, committed. The deadline must leave
	// the write itself time to commit on busy cores (300 ms did not always): no region reports
	// here, so the call runs to it whatever it is.
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = op.DeleteAnchor(short, &kv1.DeleteAnchorRequest{RequestId: "kill", Tenant: "acme", Reason: "test", Wait: true})
	cancel()
	wantCode(t, err, codes.DeadlineExceeded)
	tn, err := op.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
	if err != nil || tn.GetAnchorUri() != "" || tn.GetAnchorDeletedAt() == nil {
		t.Fatalf("the deletion did not commit: %v %v", tn, err)
	}
	head := g.Nodes[0].FSM().Head()
	for _, region := range []string{"eu", "us"} {
		if _, err := g.NodeClient(0, region, region+"-1").ReportCursor(ctx, &kv1.ReportCursorRequest{Region: region, AppliedCursor: head}); err != nil {
			t.Fatal(err)
		}
	}
	// The retry with the same request id returns the original event, now effective.
	d, err := op.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: "kill", Tenant: "acme", Reason: "test", Wait: true})
	if err != nil || d.GetEvent().GetCursor() != head || len(d.GetRegions()) != 2 {
		t.Fatalf("retry: %v %v", d, err)
	}
	if g.Nodes[0].FSM().Head() != head {
		t.Fatal("the retry made a new event")
	}
}

// TestCloseTwice checks that Close after Close returns ErrShutdown.
func TestCloseTwice(t *testing.T) {
	g := governancetest.Start(t, 1)
	n := g.Nodes[0]
	g.Nodes[0] = nil
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err == nil || !strings.Contains(err.Error(), "shut down") {
		t.Fatalf("second Close: %v", err)
	}
}

// A report that moves nothing is not written again for a while: a quiet region's heartbeats cost
// no Raft entry each. A report that advances the cursor, or carries a new inventory, is written.
func TestQuietReportsAreNotWrittenEachTime(t *testing.T) {
	g := governancetest.Start(t, 1)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	eu := g.NodeClient(0, "eu", "eu-1")
	// report sends r and returns governance's commit index after it.
	report := func(r *kv1.ReportCursorRequest) uint64 {
		t.Helper()
		if _, err := eu.ReportCursor(ctx, r); err != nil {
			t.Fatal(err)
		}
		st, err := g.Client(0).Status(ctx, &kv1.GovernanceStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetCommitIndex()
	}
	first := report(&kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 1})
	for _, r := range []*kv1.ReportCursorRequest{
		{Region: "eu", AppliedCursor: 1},
		{Region: "eu", AppliedCursor: 1},
		{Region: "eu", AppliedCursor: 0}, // behind what is recorded
	} {
		if got := report(r); got != first {
			t.Fatalf("a report of cursor %d that moves nothing was written: commit index %d -> %d", r.GetAppliedCursor(), first, got)
		}
	}
	inv := []*kv1.KeyRef{{Tenant: "acme", Service: "pay", Version: 1}}
	withInventory := report(&kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 1, HasInventory: true, Inventory: inv})
	if withInventory <= first {
		t.Fatalf("a report with a new inventory was not written: commit index %d -> %d", first, withInventory)
	}
	// The same inventory again changes nothing: not written (a voter cannot grow the log with it).
	if again := report(&kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 1, HasInventory: true, Inventory: inv}); again != withInventory {
		t.Fatalf("a report of an unchanged inventory was written: commit index %d -> %d", withInventory, again)
	}
	g.CreateTenant("globex", devAnchor, "eu") // event 2
	before := report(&kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 1})
	if after := report(&kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 2}); after <= before {
		t.Fatalf("a report that advances the cursor was not written: commit index %d -> %d", before, after)
	}
	lags, err := g.Client(0).Status(ctx, &kv1.GovernanceStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lags.GetRegions() {
		if l.GetCursor().GetRegion() == "eu" && l.GetCursor().GetAppliedCursor() != 2 {
			t.Fatalf("eu's recorded cursor is %d, want 2", l.GetCursor().GetAppliedCursor())
		}
	}
}
