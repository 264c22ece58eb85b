package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	anchorfile "github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// threeRegions is governance (one node) and three regions of three nodes (eu, us, ap) following
// it. Each region has its own file:// root key (Region.Anchor) unless sameAnchor, in which case us
// and ap use eu's.
type threeRegions struct {
	*planes
	byName map[string]*regiontest.Region
	names  []string
}

func startThreeRegions(t *testing.T, sameAnchor bool) *threeRegions {
	g := governancetest.Start(t, 1, governancetest.WithHeartbeat(100*time.Millisecond))
	opts := func(name string, more ...regiontest.Option) []regiontest.Option {
		return append([]regiontest.Option{regiontest.WithCA(g.CA), regiontest.WithRegion(name), regiontest.WithGovernance(g.Addrs()...)}, more...)
	}
	eu := regiontest.Start(t, 3, opts("eu")...)
	var more []regiontest.Option
	if sameAnchor {
		more = append(more, regiontest.WithAnchor(eu.Anchor))
	}
	us := regiontest.Start(t, 3, opts("us", more...)...)
	ap := regiontest.Start(t, 3, opts("ap", more...)...)
	p := &planes{t: t, g: g, eu: eu, us: us, clients: map[int]kv1.GovernanceServiceClient{}, wraps: map[string]kv1.WrapServiceClient{}}
	return &threeRegions{planes: p, byName: map[string]*regiontest.Region{"eu": eu, "us": us, "ap": ap}, names: []string{"ap", "eu", "us"}}
}

// every waits until cond holds on every node of every region.
func (x *threeRegions) every(what string, cond func(n *region.Node) bool) {
	x.t.Helper()
	clustertest.Eventually(x.t, 60*time.Second, what, func() bool {
		for _, name := range x.names {
			for _, n := range x.byName[name].Nodes {
				if !cond(n) {
					return false
				}
			}
		}
		return true
	})
}

// wrapIn wraps plain as tenant/service on node i of region name.
func (x *threeRegions) wrapIn(name string, i int, tenant, service string, plain []byte) []byte {
	x.t.Helper()
	c := x.wrapClient(x.byName[name], i, tenant, service)
	var blob []byte
	expectCode(x.t, codes.OK, "wrap in "+name, func() error {
		r, err := c.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: tenant, Service: service}, Plaintext: plain})
		blob = r.GetBlob()
		return err
	})
	return blob
}

// unwrapsEverywhere checks that every node of every region opens blob to plain (waiting for a
// node that is still catching up or relocking).
func (x *threeRegions) unwrapsEverywhere(tenant, service string, blob, plain []byte) {
	x.t.Helper()
	for _, name := range x.names {
		r := x.byName[name]
		for i := range r.Nodes {
			c := x.wrapClient(r, i, tenant, service)
			var got []byte
			var err error
			// A minute: nine nodes and governance share the test's two cores with the rest of the
			// suite, and a node between serving leases answers Unavailable meanwhile.
			for deadline := time.Now().Add(time.Minute); ; {
				var resp *kv1.UnwrapResponse
				resp, err = c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: blob})
				got = resp.GetPlaintext()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					x.t.Fatalf("unwrap on %s/%s: still failing after a minute: %v", name, r.Cfgs[i].NodeID, err)
				}
				time.Sleep(20 * time.Millisecond) // polled under the deadline
			}
			if !bytes.Equal(got, plain) {
				x.t.Fatalf("%s/%s unwrapped other bytes", name, r.Cfgs[i].NodeID)
			}
		}
	}
}

// allRefuse polls every node of every region with an unwrap of blob until each has answered
// FailedPrecondition, and returns how long after start the last one did. A node that refused is
// asked once more at the end: the lockout must hold. With atOnce (after a call with -wait
// returned) every node must refuse the first time it is asked.
func (x *threeRegions) allRefuse(tenant, service string, blob []byte, start time.Time, want string, atOnce ...bool) time.Duration {
	x.t.Helper()
	type node struct {
		name string
		i    int
	}
	refusedAt := map[node]time.Duration{}
	clustertest.Eventually(x.t, 60*time.Second, "every node of every region refusing "+tenant, func() bool {
		all := true
		for _, name := range x.names {
			r := x.byName[name]
			for i := range r.Nodes {
				k := node{name, i}
				if _, ok := refusedAt[k]; ok {
					continue
				}
				_, err := x.wrapClient(r, i, tenant, service).Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: blob})
				if status.Code(err) == codes.FailedPrecondition {
					refusedAt[k] = time.Since(start)
					continue
				}
				if len(atOnce) > 0 && atOnce[0] {
					x.t.Fatalf("%s/%s still serves %s after the call with wait returned: %v", name, r.Cfgs[i].NodeID, tenant, err)
				}
				all = false
			}
		}
		return all
	})
	var last time.Duration
	for k, d := range refusedAt {
		last = max(last, d)
		r := x.byName[k.name]
		_, err := x.wrapClient(r, k.i, tenant, service).Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: blob})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), want) {
			x.t.Fatalf("%s/%s: unwrap after the kill switch: %v (want FailedPrecondition naming %q)", k.name, r.Cfgs[k.i].NodeID, err, want)
		}
	}
	return last
}

// TestMultiRegionKillSwitch: a shared tenant in three regions (eu home, us, ap: nine nodes on one
// root key). Deleting the anchor at governance stops every node of every region, and so does the
// customer disabling the root key; each is lifted again (the anchor set back with the owner's
// consent; the key enabled) and every blob opens. The time from the call returning (or the key
// being disabled) to the last node refusing is logged, for the record, never asserted.
func TestMultiRegionKillSwitch(t *testing.T) {
	x := startThreeRegions(t, true)
	eu := x.byName["eu"]
	id := governancetest.RequestID()
	x.gov("create the shared tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: "acme", AnchorUri: eu.Anchor,
			Regions: []string{"ap", "eu", "us"}, HomeRegion: "eu", OwnerPublicKey: x.g.Owner.Public})
		return err
	})
	id = governancetest.RequestID()
	x.gov("create the service", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "acme", Service: "pay"})
		return err
	})
	x.every("acme/pay v1 on every node of every region", func(n *region.Node) bool {
		_, err := n.State().Usable("acme", "pay", 1, fsm.OpUnwrap)
		return err == nil
	})
	plain := bytes.Repeat([]byte{0x3c}, 32)
	blob := x.wrapIn("eu", 0, "acme", "pay", plain)
	x.unwrapsEverywhere("acme", "pay", blob, plain)

	// 1. The operator's kill switch, with -wait: every node refuses when it returns.
	id = governancetest.RequestID()
	var called, returned time.Time
	x.gov("delete the anchor", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		called = time.Now()
		resp, err := c.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: id, Tenant: "acme", Reason: "customer pulled the plug", Wait: true})
		returned = time.Now()
		if err == nil && len(resp.GetRegions()) != 3 {
			return fmt.Errorf("DeleteAnchor waited for %v, want ap, eu and us", resp.GetRegions())
		}
		return err
	})
	last := x.allRefuse("acme", "pay", blob, returned, "anchor", true)
	t.Logf("DeleteAnchor -wait: call took %v; last of 9 nodes in 3 regions refusing %v after it returned",
		returned.Sub(called).Round(time.Millisecond), last.Round(time.Millisecond))

	// Lifted with the owner's consent: every blob opens again everywhere.
	id = governancetest.RequestID()
	x.gov("set the anchor back", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: id, Tenant: "acme", AnchorUri: eu.Anchor,
			Consent: x.g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: eu.Anchor, RequestID: id})})
		return err
	})
	x.unwrapsEverywhere("acme", "pay", blob, plain)

	// 2. The customer's kill switch: the root key disabled. Every region's leader finds out in its
	// L1 check and locks the tenant out on every node of its region.
	keyPath := strings.TrimPrefix(eu.Anchor, "file://")
	start := time.Now()
	if err := anchorfile.Disable(keyPath); err != nil {
		t.Fatal(err)
	}
	last = x.allRefuse("acme", "pay", blob, start, "L1 unavailable")
	t.Logf("root key disabled: last of 9 nodes in 3 regions refusing %v after (L1 check period 200ms, lease %v)",
		last.Round(time.Millisecond), regiontest.LeaseDuration)
	if err := anchorfile.Enable(keyPath); err != nil {
		t.Fatal(err)
	}
	x.unwrapsEverywhere("acme", "pay", blob, plain)
}

// regionLog reads governance's event log as region name's feed sees it, up to head.
func (x *threeRegions) regionLog(name string, head uint64) []*kv1.RevocationEvent {
	x.t.Helper()
	var events []*kv1.RevocationEvent
	c := x.g.NodeClient(x.g.WaitLeader(), name, x.byName[name].Cfgs[0].NodeID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: name})
	if err != nil {
		x.t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			x.t.Fatalf("reading governance's log for %s: %v", name, err)
		}
		events = append(events, msg.GetEvents()...)
		if msg.GetHeadCursor() >= head {
			return events
		}
	}
}

// setAnchor sets the tenant's anchor (region empty) or one region's own, with the owner's
// consent naming the region.
func (x *threeRegions) setAnchor(tenant, region, uri string) {
	x.t.Helper()
	id := governancetest.RequestID()
	x.gov("set the anchor of "+region, func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: id, Tenant: tenant, AnchorUri: uri, Region: region,
			Consent: x.g.Owner.Consent(x.t, owner.Statement{Tenant: tenant, Op: owner.OpSetAnchor, Anchor: uri, Region: region, RequestID: id})})
		return err
	})
}

// TestMultiRegionPerRegionAnchors: a shared tenant whose L1 is one key per region (three file://
// root keys: eu's is the tenant's anchor, us and ap have their own). The home region seals L2
// once under each region's anchor; each region receives only its own pointer and its own sealed
// L2, and every blob opens everywhere. The customer disabling one region's key stops that region
// only; the kill switch (DeleteAnchor) stops all three. Lifting it takes each region's pointer
// again, each with the owner's consent naming the region (one naming no region is refused), and
// a rotation after it reaches every region sealed under its own anchor.
func TestMultiRegionPerRegionAnchors(t *testing.T) {
	x := startThreeRegions(t, false)
	eu, us, ap := x.byName["eu"], x.byName["us"], x.byName["ap"]
	anchors := map[string]string{"eu": eu.Anchor, "us": us.Anchor, "ap": ap.Anchor}
	id := governancetest.RequestID()
	x.gov("create the shared tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: "acme", AnchorUri: eu.Anchor,
			Regions: []string{"ap", "eu", "us"}, HomeRegion: "eu", OwnerPublicKey: x.g.Owner.Public,
			RegionAnchors: map[string]string{"us": us.Anchor, "ap": ap.Anchor}})
		return err
	})
	id = governancetest.RequestID()
	x.gov("create the service", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "acme", Service: "pay"})
		return err
	})
	x.every("acme/pay v1 on every node of every region", func(n *region.Node) bool {
		_, err := n.State().Usable("acme", "pay", 1, fsm.OpUnwrap)
		return err == nil
	})
	plain := bytes.Repeat([]byte{0x11}, 32)
	blob := x.wrapIn("eu", 0, "acme", "pay", plain)
	x.unwrapsEverywhere("acme", "pay", blob, plain)

	// Each region holds its own pointer, and its L2 opens under its own root key only.
	for name, r := range x.byName {
		tn, err := r.Nodes[0].State().Tenant("acme")
		if err != nil {
			t.Fatal(err)
		}
		if tn.Anchor != anchors[name] {
			t.Fatalf("%s holds anchor %s, want its own %s", name, tn.Anchor, anchors[name])
		}
	}
	// The customer disables us's key: us stops, eu and ap go on.
	usKey := strings.TrimPrefix(us.Anchor, "file://")
	if err := anchorfile.Disable(usKey); err != nil {
		t.Fatal(err)
	}
	x.names = []string{"us"}
	x.allRefuse("acme", "pay", blob, time.Now(), "L1 unavailable")
	x.names = []string{"ap", "eu"}
	x.unwrapsEverywhere("acme", "pay", blob, plain)
	x.names = []string{"ap", "eu", "us"}
	if err := anchorfile.Enable(usKey); err != nil {
		t.Fatal(err)
	}
	x.unwrapsEverywhere("acme", "pay", blob, plain)

	// The kill switch covers every region's pointer.
	id = governancetest.RequestID()
	var returned time.Time
	x.gov("delete the anchor", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: id, Tenant: "acme", Reason: "customer pulled the plug", Wait: true})
		returned = time.Now()
		return err
	})
	last := x.allRefuse("acme", "pay", blob, returned, "anchor", true)
	t.Logf("per-region anchors: DeleteAnchor -wait -> last of 9 nodes refusing %v after it returned", last.Round(time.Millisecond))
	var gt *kv1.GovernanceTenant
	x.gov("describe", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		var err error
		gt, err = c.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
		return err
	})
	if gt.GetAnchorUri() != "" || gt.GetRegionAnchors()["us"] != "" || gt.GetRegionAnchors()["ap"] != "" {
		t.Fatalf("after the kill switch governance still holds pointers: %q %v", gt.GetAnchorUri(), gt.GetRegionAnchors())
	}

	// Lifting: the tenant's anchor brings eu back; us and ap (their keys are others) stay out.
	x.setAnchor("acme", "", eu.Anchor)
	x.names = []string{"eu"}
	x.unwrapsEverywhere("acme", "pay", blob, plain)
	x.names = []string{"ap", "us"}
	x.allRefuse("acme", "pay", blob, time.Now(), "anchor")
	// A consent that does not name the region does not move the region's pointer.
	id = governancetest.RequestID()
	x.gov("set us's anchor with a consent naming no region", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: id, Tenant: "acme", AnchorUri: us.Anchor, Region: "us",
			Consent: x.g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: us.Anchor, RequestID: id})})
		if status.Code(err) != codes.PermissionDenied {
			return fmt.Errorf("want PermissionDenied, got %v", err)
		}
		return nil
	})
	x.setAnchor("acme", "us", us.Anchor)
	x.setAnchor("acme", "ap", ap.Anchor)
	x.names = []string{"ap", "eu", "us"}
	x.unwrapsEverywhere("acme", "pay", blob, plain)

	// A rotation in eu reaches us and ap, sealed under their own keys.
	adm := eu.AdminClient(eu.WaitLeader())
	if _, err := adm.RotateKey(eu.Context(20*time.Second), &kv1.RotateKeyRequest{RequestId: "rot-2", Tenant: "acme", Service: "pay"}); err != nil {
		t.Fatalf("rotate in eu: %v", err)
	}
	x.every("acme/pay v2 current everywhere", func(n *region.Node) bool {
		v, err := n.State().Usable("acme", "pay", 0, fsm.OpWrap)
		return err == nil && v == 2
	})
	plain2 := bytes.Repeat([]byte{0x22}, 32)
	blob2 := x.wrapIn("ap", 1, "acme", "pay", plain2)
	x.unwrapsEverywhere("acme", "pay", blob2, plain2)

	// Each region's feed carried only its own pointer, throughout (the lifting too).
	head := x.head()
	for _, name := range x.names {
		for _, ev := range x.regionLog(name, head) {
			if ev.GetTarget().GetTenant() != "acme" {
				continue
			}
			for other, u := range anchors {
				if other != name && ev.GetAnchorUri() == u {
					t.Fatalf("region %s received %s's anchor in event %d (%v)", name, other, ev.GetCursor(), ev.GetKind())
				}
			}
			for _, k := range ev.GetKeys().GetL2() {
				if k.GetRegion() != name || k.GetAnchorUri() != "" {
					t.Fatalf("region %s received an L2 sealed for %s (anchor %q)", name, k.GetRegion(), k.GetAnchorUri())
				}
			}
		}
	}

}
