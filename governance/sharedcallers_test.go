package governance_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestSharedTenantCallsCheckTheCaller: the calls of a shared tenant's home region
// (PublishTenantKeys, TenantAnchors) are refused, before the log, to every node certificate but a
// current voter of the tenant's home region: a node removed from the home region (once governance
// knows the region's voters), a node of another region of the tenant's set, a node of a region
// outside its residency (which learns nothing, not even that the tenant exists), an operator. A
// node of region X cannot publish as region Y. The home region's voters are served.
func TestSharedTenantCallsCheckTheCaller(t *testing.T) {
	g := governancetest.Start(t, 1)
	ctx := g.Context(60 * time.Second)
	op := g.Client(0)
	if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "acme", AnchorUri: devAnchor,
		Regions: []string{"eu", "us"}, HomeRegion: "eu", RegionAnchors: map[string]string{"us": devAnchor + "-us"},
		OwnerPublicKey: g.Owner.Public}); err != nil {
		t.Fatal(err)
	}
	// eu's leader reports eu's voters: eu-3 is not one of them (removed).
	eu1, eu3 := g.NodeClient(0, "eu", "eu-1"), g.NodeClient(0, "eu", "eu-3")
	us1, ap1 := g.NodeClient(0, "us", "us-1"), g.NodeClient(0, "ap", "ap-1")
	if _, err := eu1.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", ConfigurationIndex: 5, CommitIndex: 5, Voters: []string{"eu-1", "eu-2"}}); err != nil {
		t.Fatal(err)
	}
	keys := func(v uint32) *kv1.TenantKeys {
		return &kv1.TenantKeys{
			L2: []*kv1.SealedTenantKey{{Region: "us", Version: v, Sealed: []byte("planted L2"), AnchorUri: devAnchor + "-us"}},
			L3: []*kv1.SealedServiceKey{{Service: "billing", Version: v, SealedBy: v, Sealed: []byte("planted L3")}},
		}
	}
	govStatus := func() *kv1.GovernanceStatusResponse {
		t.Helper()
		st, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := govStatus()

	for _, c := range []struct {
		name   string
		client kv1.GovernanceServiceClient
		region string
		code   codes.Code
	}{
		{"a node removed from the home region", eu3, "eu", codes.PermissionDenied},
		{"a node of another region of the set", us1, "us", codes.PermissionDenied},
		{"a node of us claiming to be eu", us1, "eu", codes.PermissionDenied},
		{"a node of a region outside the set", ap1, "ap", codes.PermissionDenied},
		{"an operator", op, "eu", codes.PermissionDenied},
	} {
		for v := uint32(1); v <= 5; v++ { // each a different request: none may reach the log
			_, err := c.client.PublishTenantKeys(ctx, &kv1.PublishTenantKeysRequest{Region: c.region, Tenant: "acme", Keys: keys(v)})
			if got := status.Code(err); got != c.code {
				t.Fatalf("%s: PublishTenantKeys: %v, want %v", c.name, err, c.code)
			}
		}
		_, err := c.client.TenantAnchors(ctx, &kv1.TenantAnchorsRequest{Region: c.region, Tenant: "acme"})
		if got := status.Code(err); got != c.code {
			t.Fatalf("%s: TenantAnchors: %v, want %v", c.name, err, c.code)
		}
	}
	// A removed node of the home region reports no floor either.
	_, err := eu3.PublishTenantKeys(ctx, &kv1.PublishTenantKeysRequest{Region: "eu", Tenant: "acme", Floor: &kv1.TenantFloor{L2: 7}})
	wantCode(t, err, codes.PermissionDenied)

	// A region outside the residency cannot tell the tenant from one that does not exist.
	_, errAcme := ap1.TenantAnchors(ctx, &kv1.TenantAnchorsRequest{Region: "ap", Tenant: "acme"})
	_, errGhost := ap1.TenantAnchors(ctx, &kv1.TenantAnchorsRequest{Region: "ap", Tenant: "ghost"})
	if status.Code(errAcme) != status.Code(errGhost) || errAcme.Error() != errGhost.Error() {
		t.Fatalf("outside the residency: acme %v, an unknown tenant %v: want the same answer", errAcme, errGhost)
	}

	after := govStatus()
	if after.GetHeadCursor() != before.GetHeadCursor() {
		t.Fatalf("head cursor %d -> %d: a refused publish made an event", before.GetHeadCursor(), after.GetHeadCursor())
	}
	// 26 refused calls: none is a write (a stray compaction may add one entry).
	if grew := after.GetCommitIndex() - before.GetCommitIndex(); grew > 2 {
		t.Fatalf("the refused calls wrote %d Raft entries, want none", grew)
	}

	// The home region's voter is served.
	ta, err := eu1.TenantAnchors(ctx, &kv1.TenantAnchorsRequest{Region: "eu", Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if ta.GetAnchors()["us"] != devAnchor+"-us" || ta.GetAnchors()["eu"] != devAnchor {
		t.Fatalf("TenantAnchors for eu-1: %v", ta.GetAnchors())
	}
	resp, err := eu1.PublishTenantKeys(ctx, &kv1.PublishTenantKeysRequest{Region: "eu", Tenant: "acme", Keys: keys(1)})
	if err != nil || resp.GetCursor() <= before.GetHeadCursor() {
		t.Fatalf("PublishTenantKeys from eu-1: %v %v", resp, err)
	}
}
