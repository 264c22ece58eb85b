package e2e

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/region"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestMakePerRegionTenantShared is issue 20's migration: a tenant created before shared tenants,
// in eu and us with keys of their own (each on its own root key: eu's is the tenant's anchor, us
// has its own pointer), each region having rotated on its own (eu to pay v2, us to v3). Made
// shared with home eu, each region keeps its own versions, so every blob wrapped before opens
// where it was wrapped; the shared versions are numbered above both regions' own (v4), made in eu
// and imported in us, and a blob wrapped under them in one region opens in the other. ap, added
// afterwards, opens the shared blobs too (its numbers below the shared ones are its own), and a
// rotation in eu reaches us and ap.
func TestMakePerRegionTenantShared(t *testing.T) {
	x := startThreeRegions(t, false)
	eu, us := x.byName["eu"], x.byName["us"]
	id := governancetest.RequestID()
	x.gov("create the per-region tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: "acme", AnchorUri: eu.Anchor,
			Regions: []string{"eu", "us"}, OwnerPublicKey: x.g.Owner.Public, RegionAnchors: map[string]string{"us": us.Anchor}})
		return err
	})
	id = governancetest.RequestID()
	x.gov("create the service", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "acme", Service: "pay"})
		return err
	})
	x.names = []string{"eu", "us"}
	x.every("acme/pay v1 in eu and us", func(n *region.Node) bool {
		_, err := n.State().Usable("acme", "pay", 1, fsm.OpUnwrap)
		return err == nil
	})
	rotate := func(name, rid string) {
		t.Helper()
		r := x.byName[name]
		if _, err := r.AdminClient(r.WaitLeader()).RotateKey(r.Context(20*time.Second), &kv1.RotateKeyRequest{RequestId: rid, Tenant: "acme", Service: "pay"}); err != nil {
			t.Fatalf("rotate in %s: %v", name, err)
		}
	}
	rotate("eu", "eu-2")
	rotate("us", "us-2")
	rotate("us", "us-3")
	for name, want := range map[string]uint32{"eu": 2, "us": 3} {
		x.names = []string{name}
		x.every(name+" at its own pay version", func(n *region.Node) bool {
			v, err := n.State().Usable("acme", "pay", 0, fsm.OpWrap)
			return err == nil && v == want
		})
	}
	plainEU, plainUS := bytes.Repeat([]byte{0xe0}, 32), bytes.Repeat([]byte{0x05}, 32)
	oldEU := x.wrapIn("eu", 0, "acme", "pay", plainEU)
	oldUS := x.wrapIn("us", 0, "acme", "pay", plainUS)

	// Make it shared, home eu.
	id = governancetest.RequestID()
	x.gov("make the tenant shared", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: id, Tenant: "acme", Regions: []string{"eu", "us"}, HomeRegion: "eu", Wait: true,
			Consent: x.g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetRegions, Regions: "eu,us", Region: "eu", RequestID: id})})
		return err
	})
	x.every("the shared pay v4 in eu and us", func(n *region.Node) bool {
		v, err := n.State().Usable("acme", "pay", 0, fsm.OpWrap)
		return err == nil && v == 4
	})
	x.gov("describe", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		tn, err := c.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
		if err == nil && (tn.GetHomeRegion() != "eu" || len(tn.GetFloorPending()) != 0) {
			return fmt.Errorf("governance's tenant after the shared versions: home %q, waiting for %v", tn.GetHomeRegion(), tn.GetFloorPending())
		}
		return err
	})
	// Each region's own versions stay: its old blob opens there.
	x.names = []string{"eu"}
	x.unwrapsEverywhere("acme", "pay", oldEU, plainEU)
	x.names = []string{"us"}
	x.unwrapsEverywhere("acme", "pay", oldUS, plainUS)
	// The shared versions open in both, whichever region wrapped.
	x.names = []string{"eu", "us"}
	plain4 := bytes.Repeat([]byte{0x44}, 32)
	x.unwrapsEverywhere("acme", "pay", x.wrapIn("us", 1, "acme", "pay", plain4), plain4)
	x.unwrapsEverywhere("acme", "pay", x.wrapIn("eu", 2, "acme", "pay", plain4), plain4)
	// Only the home makes versions now.
	expectCode(t, codes.FailedPrecondition, "rotate in us", func() error {
		_, err := us.AdminClient(us.WaitLeader()).RotateKey(us.Context(20*time.Second), &kv1.RotateKeyRequest{RequestId: "us-after", Tenant: "acme", Service: "pay"})
		return err
	})

	// ap joins: it opens the shared blobs.
	id = governancetest.RequestID()
	x.gov("add ap", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: id, Tenant: "acme", Regions: []string{"ap", "eu", "us"}, Wait: true,
			Consent: x.g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetRegions, Regions: "ap,eu,us", RequestID: id})})
		return err
	})
	x.names = []string{"ap", "eu", "us"}
	x.every("the shared pay v4 everywhere", func(n *region.Node) bool {
		v, err := n.State().Usable("acme", "pay", 0, fsm.OpWrap)
		return err == nil && v == 4
	})
	x.unwrapsEverywhere("acme", "pay", x.wrapIn("ap", 0, "acme", "pay", plain4), plain4)

	// A rotation in eu reaches us and ap.
	rotate("eu", "eu-5")
	x.every("pay v5 everywhere", func(n *region.Node) bool {
		v, err := n.State().Usable("acme", "pay", 0, fsm.OpWrap)
		return err == nil && v == 5
	})
	plain5 := bytes.Repeat([]byte{0x55}, 32)
	x.unwrapsEverywhere("acme", "pay", x.wrapIn("us", 2, "acme", "pay", plain5), plain5)
}
