package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestMultiRegionTenant is issue 20's end-to-end check: governance and three regions (eu, us, ap:
// real Raft over loopback, one L1 key every region reaches). A shared tenant with home eu and
// residency {eu, us}: a blob wrapped in eu unwraps on every node of us; ap, outside the set, holds
// nothing of it (its state, snapshot and data files); adding ap makes every ap node open the old
// blobs; a rotation in eu reaches us and ap, and ap wraps under the new version; us cannot rotate;
// a revocation at governance with wait is refused on every node of every region when it returns;
// removing ap makes every ap node refuse and its state hold nothing of the tenant.
func TestMultiRegionTenant(t *testing.T) {
	g := governancetest.Start(t, 1, governancetest.WithHeartbeat(100*time.Millisecond))
	eu := regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...))
	us := regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("us"), regiontest.WithAnchor(eu.Anchor), regiontest.WithGovernance(g.Addrs()...))
	ap := regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("ap"), regiontest.WithAnchor(eu.Anchor), regiontest.WithGovernance(g.Addrs()...))
	regions := map[string]*regiontest.Region{"eu": eu, "us": us, "ap": ap}
	p := &planes{t: t, g: g, clients: map[int]kv1.GovernanceServiceClient{}, wraps: map[string]kv1.WrapServiceClient{}}
	every := func(names []string, what string, cond func(n *region.Node) bool) {
		t.Helper()
		clustertest.Eventually(t, 60*time.Second, what, func() bool {
			for _, name := range names {
				for _, n := range regions[name].Nodes {
					if !cond(n) {
						return false
					}
				}
			}
			return true
		})
	}
	setRegions := func(set ...string) *kv1.SetTenantRegionsResponse {
		t.Helper()
		id := governancetest.RequestID()
		var resp *kv1.SetTenantRegionsResponse
		p.gov("set regions", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			var err error
			resp, err = c.SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: id, Tenant: "acme", Regions: set, Wait: true})
			return err
		})
		return resp
	}

	id := governancetest.RequestID()
	p.gov("create the shared tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: "acme", AnchorUri: eu.Anchor, Regions: []string{"eu", "us"}, HomeRegion: "eu"})
		return err
	})
	id = governancetest.RequestID()
	p.gov("create the service", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "acme", Service: "pay"})
		return err
	})
	every([]string{"eu", "us"}, "acme/pay v1 on every node of eu and us", func(n *region.Node) bool {
		_, err := n.State().Usable("acme", "pay", 1, fsm.OpUnwrap)
		return err == nil
	})

	// Wrapped in eu, unwrapped on every node of us.
	plain := bytes.Repeat([]byte{0x5a}, 32)
	var blob []byte
	euc := p.wrapClient(eu, 0, "acme", "pay")
	expectCode(t, codes.OK, "wrap in eu", func() error {
		r, err := euc.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintext: plain})
		blob = r.GetBlob()
		return err
	})
	unwrapsEverywhere := func(names []string, blob, plain []byte) {
		t.Helper()
		for _, name := range names {
			r := regions[name]
			for i := range r.Nodes {
				c := p.wrapClient(r, i, "acme", "pay")
				var got []byte
				expectCode(t, codes.OK, fmt.Sprintf("unwrap on %s/%s", name, r.Cfgs[i].NodeID), func() error {
					resp, err := c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: blob})
					got = resp.GetPlaintext()
					return err
				})
				if !bytes.Equal(got, plain) {
					t.Fatalf("%s/%s unwrapped other bytes", name, r.Cfgs[i].NodeID)
				}
			}
		}
	}
	unwrapsEverywhere([]string{"us"}, blob, plain)

	// ap is outside the residency: it never received anything of acme.
	// holdsNothing checks that no node of region name has the tenant, and that no node's state
	// snapshot holds any of blobs (or, with none given, names the tenant at all).
	holdsNothing := func(name string, files bool, blobs ...[]byte) {
		t.Helper()
		r := regions[name]
		for i, n := range r.Nodes {
			if _, err := n.State().Tenant("acme"); !errors.Is(err, fsm.ErrTenantNotFound) {
				t.Fatalf("%s/%s holds the tenant: %v", name, r.Cfgs[i].NodeID, err)
			}
			var snap bytes.Buffer
			if err := n.State().WriteSnapshot(&snap); err != nil {
				t.Fatal(err)
			}
			if len(blobs) == 0 && bytes.Contains(snap.Bytes(), []byte("acme")) {
				t.Fatalf("%s/%s: its state snapshot names the tenant", name, r.Cfgs[i].NodeID)
			}
			for _, b := range blobs {
				if bytes.Contains(snap.Bytes(), b) {
					t.Fatalf("%s/%s: its state snapshot holds a sealed key of the tenant", name, r.Cfgs[i].NodeID)
				}
			}
		}
		if !files {
			return
		}
		// Every file of every node (Raft log, snapshots, audit log): no byte of the tenant.
		err := filepath.WalkDir(r.Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(b, []byte("acme")) {
				return fmt.Errorf("%s names the tenant", path)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("region %s outside the residency: %v", name, err)
		}
	}
	refuses := func(name string) {
		t.Helper()
		r := regions[name]
		for i := range r.Nodes {
			c := p.wrapClient(r, i, "acme", "pay")
			expectCode(t, codes.NotFound, fmt.Sprintf("unwrap on %s/%s", name, r.Cfgs[i].NodeID), func() error {
				_, err := c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: blob})
				return err
			})
		}
	}
	// The files first: the refused calls below are in the audit logs, naming the caller's tenant.
	holdsNothing("ap", true)
	refuses("ap")

	// Add ap: its nodes open the blob wrapped before.
	resp := setRegions("ap", "eu", "us")
	if len(resp.GetRegions()) != 3 {
		t.Fatalf("SetTenantRegions waited for %v, want ap, eu and us", resp.GetRegions())
	}
	every([]string{"ap"}, "acme/pay v1 on every node of ap", func(n *region.Node) bool {
		_, err := n.State().Usable("acme", "pay", 1, fsm.OpUnwrap)
		return err == nil
	})
	unwrapsEverywhere([]string{"ap"}, blob, plain)

	// Rotate in eu (the home): version 2 reaches us and ap, and ap wraps under it.
	adm := eu.AdminClient(eu.WaitLeader())
	if _, err := adm.RotateKey(eu.Context(20*time.Second), &kv1.RotateKeyRequest{RequestId: "rot-2", Tenant: "acme", Service: "pay"}); err != nil {
		t.Fatalf("rotate in eu: %v", err)
	}
	every([]string{"us", "ap"}, "acme/pay v2 current in us and ap", func(n *region.Node) bool {
		v, err := n.State().Usable("acme", "pay", 0, fsm.OpWrap)
		return err == nil && v == 2
	})
	apc := p.wrapClient(ap, 1, "acme", "pay")
	plain2 := bytes.Repeat([]byte{0xa5}, 32)
	var blob2 []byte
	expectCode(t, codes.OK, "wrap in ap", func() error {
		r, err := apc.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintext: plain2})
		blob2 = r.GetBlob()
		if err == nil && r.GetKey().GetVersion() != 2 {
			return fmt.Errorf("ap wrapped under version %d, want 2", r.GetKey().GetVersion())
		}
		return err
	})
	unwrapsEverywhere([]string{"eu", "us"}, blob2, plain2)
	// Only the home region makes versions.
	expectCode(t, codes.FailedPrecondition, "rotate in us", func() error {
		_, err := us.AdminClient(us.WaitLeader()).RotateKey(us.Context(20*time.Second), &kv1.RotateKeyRequest{RequestId: "rot-us", Tenant: "acme", Service: "pay"})
		return err
	})

	// Revoke version 1 at governance, with wait: refused on every node of every region on return.
	id = governancetest.RequestID()
	var rv *kv1.RevokeResponse
	p.gov("revoke v1", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		var err error
		rv, err = c.Revoke(ctx, &kv1.RevokeRequest{RequestId: id, Target: &kv1.KeyScope{Tenant: "acme", Service: "pay", Version: 1}, Reason: "test", Wait: true})
		return err
	})
	if len(rv.GetRegions()) != 3 {
		t.Fatalf("Revoke waited for %v, want ap, eu and us", rv.GetRegions())
	}
	for name, r := range regions {
		for i, n := range r.Nodes {
			if _, err := n.State().Usable("acme", "pay", 1, fsm.OpUnwrap); !errors.Is(err, fsm.ErrRevoked) {
				t.Fatalf("%s/%s: version 1 after Revoke returned: %v", name, r.Cfgs[i].NodeID, err)
			}
			c := p.wrapClient(r, i, "acme", "pay")
			expectCode(t, codes.FailedPrecondition, "unwrap of a revoked blob on "+name, func() error {
				_, err := c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: blob})
				return err
			})
		}
	}

	// Remove ap: when SetTenantRegions returns, every ap node has wiped the tenant: none of the
	// sealed keys it held is in its state (the revocation log still names the tenant's events).
	var sealed [][]byte
	tn, err := ap.Nodes[0].State().Tenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, l2 := range tn.L2 {
		sealed = append(sealed, l2.Sealed)
	}
	kvs, err := ap.Nodes[0].State().ListKeyVersions("acme", "pay")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		sealed = append(sealed, kv.Sealed)
	}
	resp = setRegions("eu", "us")
	if len(resp.GetRegions()) != 3 {
		t.Fatalf("SetTenantRegions waited for %v, want ap, eu and us", resp.GetRegions())
	}
	holdsNothing("ap", false, sealed...)
	refuses("ap")
	unwrapsEverywhere([]string{"eu", "us"}, blob2, plain2)
}
