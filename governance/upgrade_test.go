package governance_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/owner"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestGovernanceLogFormatGate: while a voter runs a release from before the log-format tag (it
// advertises none, as such a release does), a set-regions, which a node of that release could not
// decode, is refused with FAILED_PRECONDITION naming the voter, before the log, and
// `governance status` names it; the tenant is unchanged. A cluster whose voters all read the
// format takes it.
func TestGovernanceLogFormatGate(t *testing.T) {
	t.Parallel()
	var oldID string
	g := governancetest.Start(t, 3, governancetest.WithConfig(func(c *governance.Config) {
		if oldID != "" {
			return
		}
		oldID = c.NodeID // the first node plays the older release
		tune := c.Tune
		c.Tune = func(cc *cluster.Config) {
			if tune != nil {
				tune(cc)
			}
			delete(cc.Meta, "log-format")
		}
	}))
	ctx := g.Context(60 * time.Second)
	op := g.Client(g.WaitLeader())
	if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "acme", AnchorUri: devAnchor,
		Regions: []string{"eu", "us"}, HomeRegion: "eu", OwnerPublicKey: g.Owner.Public}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := range g.Nodes {
		for {
			f, who := g.Nodes[i].ClusterFormat()
			_, err := g.Client(i).GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"}) // applied here too
			if f == 0 && who == oldID && err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: voters' format %d (%q), want 0 (%s); the tenant: %v", i, f, who, oldID, err)
			}
			time.Sleep(50 * time.Millisecond) // gossip spreads the tags; polled under the deadline
		}
	}
	st, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetLogFormat() != governance.LogFormat || st.GetVotersLogFormat() != 0 || st.GetOldestVoter() != oldID {
		t.Fatalf("status: log format %d, voters %d, oldest %q; want %d, 0, %s", st.GetLogFormat(), st.GetVotersLogFormat(), st.GetOldestVoter(), governance.LogFormat, oldID)
	}
	applied := st.GetAppliedIndex()

	for i := range g.Nodes { // through every node: a follower forwards nothing it would refuse
		id := rid()
		c := g.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetRegions, Regions: "ap,eu,us", RequestID: id})
		_, err := g.Client(i).SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: id, Tenant: "acme", Regions: []string{"ap", "eu", "us"}, Consent: c})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), oldID) || !strings.Contains(err.Error(), "upgrade every governance node") {
			t.Fatalf("node %d: set-regions with a voter of an older release: %v, want FailedPrecondition naming %s", i, err, oldID)
		}
	}
	tn, err := op.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
	if err != nil || len(tn.GetRegions()) != 2 {
		t.Fatalf("the tenant after the refusals: %v, %v", tn.GetRegions(), err)
	}
	if st, err := op.Status(ctx, &kv1.GovernanceStatusRequest{}); err != nil || st.GetAppliedIndex() != applied {
		t.Fatalf("the refusals reached the log: applied index %d → %d (%v)", applied, st.GetAppliedIndex(), err)
	}

	// Every voter reads the format: the same change is taken.
	cur := governancetest.Start(t, 3)
	ctx = cur.Context(60 * time.Second)
	op = cur.Client(cur.WaitLeader())
	if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "acme", AnchorUri: devAnchor,
		Regions: []string{"eu", "us"}, HomeRegion: "eu", OwnerPublicKey: cur.Owner.Public}); err != nil {
		t.Fatal(err)
	}
	id := rid()
	c := cur.Owner.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetRegions, Regions: "ap,eu,us", RequestID: id})
	if _, err := op.SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: id, Tenant: "acme", Regions: []string{"ap", "eu", "us"}, Consent: c}); err != nil {
		t.Fatalf("set-regions with every voter upgraded: %v", err)
	}
}
