package region_test

import (
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/anchor"
	anchorfile "github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// checksInFlight sums krypton_anchor_checks_in_flight over the region's nodes (only a leader
// checks, but leadership may move).
func checksInFlight(t *testing.T, r *regiontest.Region) float64 {
	t.Helper()
	var sum float64
	for _, n := range r.Nodes {
		if n == nil {
			continue
		}
		mfs, err := n.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "krypton_anchor_checks_in_flight" {
				for _, m := range mf.GetMetric() {
					sum += m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// One customer's KMS that hangs holds up only its own tenants' L1 checks: while every check of
// one tenant's anchor hangs (and would until a long timeout), another customer disabling its
// key still locks its tenant out on every node, and the hung check is still waiting then.
func TestHungAnchorDelaysNoOtherKillSwitch(t *testing.T) {
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) {
		c.AnchorCheckTimeout = 10 * time.Minute
	}))
	ctx := ctxT(t)
	// "aaa" sorts first: a sweep that asked one anchor after another would reach acme's only
	// after aaa's had answered or timed out.
	hungPath := filepath.Join(t.TempDir(), "hung", "root.key")
	p, err := anchor.Open(ctx, "file://"+hungPath, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	admin := r.AdminClient(r.Leader())
	for _, tn := range []struct{ tenant, uri string }{{"aaa", "file://" + hungPath}, {"acme", r.Anchor}} {
		if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "t-" + tn.tenant, Tenant: tn.tenant, AnchorUri: tn.uri}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "k-" + tn.tenant, Tenant: tn.tenant, Service: "payments"}); err != nil {
			t.Fatal(err)
		}
	}
	mustWrap(t, r, 0, "acme", "payments")

	if err := anchorfile.SetStalled(hungPath, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { anchorfile.SetStalled(hungPath, false) })
	clustertest.Eventually(t, 10*time.Second, "a check of the hung anchor in flight", func() bool {
		return checksInFlight(t, r) >= 1
	})

	if err := anchorfile.Disable(keyFile(r.Anchor)); err != nil {
		t.Fatal(err)
	}
	eachNodeAnswers(t, r, codes.FailedPrecondition, "every node refusing acme while aaa's check hangs")
	// The hung anchor is still being asked (by the same leader, or by a new one if leadership
	// moved meanwhile): the test held it throughout.
	clustertest.Eventually(t, 5*time.Second, "the hung anchor's check still in flight", func() bool {
		return checksInFlight(t, r) >= 1
	})
}
