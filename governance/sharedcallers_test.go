package governance_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
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
	// A service's certificate (and a gateway's, which is a server certificate only) can neither
	// change the residency nor act as a node; nor can a node change the residency.
	svcCert, err := g.CA.IssueService("acme", "billing", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gwCert, err := g.CA.IssueGateway("acme", "gw-1", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*pki.Certificate{"a service": svcCert, "a gateway": gwCert} {
		conn, err := transport.Dial(ctx, g.Addr(0), transport.ClientConfig{Roots: g.CA.Pool(), Certificate: cert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindGovernance}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := kv1.NewGovernanceServiceClient(conn)
		if _, err := c.SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: rid(), Tenant: "acme", Regions: []string{"ap", "eu", "us"}}); err == nil {
			t.Fatalf("%s's certificate changed the residency", name)
		}
		if _, err := c.PublishTenantKeys(ctx, &kv1.PublishTenantKeysRequest{Region: "eu", Tenant: "acme", Keys: keys(1)}); err == nil {
			t.Fatalf("%s's certificate published keys", name)
		}
		if _, err := c.TenantAnchors(ctx, &kv1.TenantAnchorsRequest{Region: "eu", Tenant: "acme"}); err == nil {
			t.Fatalf("%s's certificate read the anchors", name)
		}
	}
	_, err = eu1.SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: rid(), Tenant: "acme", Regions: []string{"ap", "eu", "us"}})
	wantCode(t, err, codes.PermissionDenied)

	// A removed node of the home region reports no floor either.
	_, err = eu3.PublishTenantKeys(ctx, &kv1.PublishTenantKeysRequest{Region: "eu", Tenant: "acme", Floor: &kv1.TenantFloor{L2: 7}})
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

	// The feed: us gets the TENANT_KEYS event with its own L2 only; ap, outside the residency,
	// gets nothing of the tenant (its first message, up to the head, holds no event).
	us, err := us1.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "us"})
	if err != nil {
		t.Fatal(err)
	}
	var tk *kv1.RevocationEvent
	for _, e := range recvEvents(t, us, 2) {
		if e.GetKeys() != nil {
			tk = e
		}
	}
	if tk == nil || len(tk.GetKeys().GetL2()) != 1 || tk.GetKeys().GetL2()[0].GetRegion() != "us" || tk.GetAnchorUri() != devAnchor+"-us" {
		t.Fatalf("us's TENANT_KEYS event: %v", tk)
	}
	ap, err := ap1.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "ap"})
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ap); len(m.GetEvents()) != 0 || m.GetHeadCursor() < resp.GetCursor() {
		t.Fatalf("ap, outside acme's residency, is sent %v (head %d)", m.GetEvents(), m.GetHeadCursor())
	}
}

// TestOperatorAloneCannotWidenResidency: adding a region to a shared tenant's set, or making a
// tenant shared (choosing the home region that makes every region's keys), needs the tenant
// owner's consent to exactly that set, home and request id, as moving its anchor does: otherwise
// an operator alone could spread the tenant's keys to a region the customer never chose, or, by
// removing a region with an anchor of its own and adding it back, move that region onto the
// tenant's anchor. Removing a region needs none (it only takes access away); a tenant without an
// owner key takes the change on the operator's word.
func TestOperatorAloneCannotWidenResidency(t *testing.T) {
	g := governancetest.Start(t, 1)
	ctx := g.Context(60 * time.Second)
	op := g.Client(0)
	create := func(tenant, home, ownerPub string) {
		t.Helper()
		if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: tenant, AnchorUri: devAnchor,
			Regions: []string{"eu", "us"}, HomeRegion: home, RegionAnchors: map[string]string{"us": devAnchor + "-us"}, OwnerPublicKey: ownerPub}); err != nil {
			t.Fatal(err)
		}
	}
	create("acme", "eu", g.Owner.Public)
	setRegions := func(tenant, id, home, consent string, regions ...string) (*kv1.SetTenantRegionsResponse, error) {
		return op.SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: id, Tenant: tenant, Regions: regions, HomeRegion: home, Consent: consent})
	}
	consent := func(tenant, id, home string, regions ...string) string {
		return g.Owner.Consent(t, owner.Statement{Tenant: tenant, Op: owner.OpSetRegions, Regions: strings.Join(regions, ","), Region: home, RequestID: id})
	}
	regionsOf := func(tenant string) []string {
		t.Helper()
		tn, err := op.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		return tn.GetRegions()
	}

	// The operator alone, or with a consent to something else, adds no region.
	id := rid()
	for name, c := range map[string]string{
		"no consent":             "",
		"another region set":     consent("acme", id, "", "ap", "eu", "us", "za"),
		"another request id":     consent("acme", rid(), "", "ap", "eu", "us"),
		"another tenant":         consent("other", id, "", "ap", "eu", "us"),
		"an anchor move consent": g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: devAnchor, RequestID: id}),
		"the operator's own key": ownertest.New(t).Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetRegions, Regions: "ap,eu,us", RequestID: id}),
	} {
		if _, err := setRegions("acme", id, "", c, "ap", "eu", "us"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("adding ap with %s: %v, want PermissionDenied", name, err)
		}
	}
	if got := regionsOf("acme"); !slices.Equal(got, []string{"eu", "us"}) {
		t.Fatalf("regions after the refused additions: %v", got)
	}

	// Removing us needs no consent; adding it back (onto the tenant's anchor, its own was
	// dropped) does.
	if _, err := setRegions("acme", rid(), "", "", "eu"); err != nil {
		t.Fatalf("removing us: %v", err)
	}
	_, err := setRegions("acme", rid(), "", "", "eu", "us")
	wantCode(t, err, codes.PermissionDenied)
	_, err = setRegions("acme", rid(), "", consent("acme", "x", "", "eu"), "eu")
	wantCode(t, err, codes.InvalidArgument) // a narrowing takes no consent

	// The owner's consent adds exactly what it names, once.
	id = rid()
	c := consent("acme", id, "", "eu", "us")
	if _, err := setRegions("acme", id, "", c, "eu", "us"); err != nil {
		t.Fatalf("adding us with the owner's consent: %v", err)
	}
	if got := regionsOf("acme"); !slices.Equal(got, []string{"eu", "us"}) {
		t.Fatalf("regions after the consented addition: %v", got)
	}

	// The home does not move, consent or not.
	id = rid()
	_, err = setRegions("acme", id, "us", consent("acme", id, "us", "eu", "us"), "eu", "us")
	wantCode(t, err, codes.InvalidArgument)

	// Making a per-region tenant shared chooses who makes every region's keys: consent too.
	create("solo", "", g.Owner.Public)
	id = rid()
	_, err = setRegions("solo", id, "eu", "", "eu", "us")
	wantCode(t, err, codes.PermissionDenied)
	_, err = setRegions("solo", id, "eu", consent("solo", id, "us", "eu", "us"), "eu", "us")
	wantCode(t, err, codes.PermissionDenied) // consent to another home
	if _, err := setRegions("solo", id, "eu", consent("solo", id, "eu", "eu", "us"), "eu", "us"); err != nil {
		t.Fatalf("making solo shared with the owner's consent: %v", err)
	}

	// A tenant without an owner key: on the operator's word, as its first owner key is.
	create("keyless", "eu", "")
	if _, err := setRegions("keyless", rid(), "", "", "ap", "eu", "us"); err != nil {
		t.Fatalf("adding ap to a tenant without an owner key: %v", err)
	}
}
