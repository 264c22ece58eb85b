package region_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestLogFormatGate: while one voter advertises no log format (a node of the release before it,
// mid rolling upgrade), the region writes entries it can decode: no origin, and no set-quota or
// compact-revocations command, refused with a message naming the fix. Once every voter reads the
// format (the second region), both are written.
func TestLogFormatGate(t *testing.T) {
	t.Parallel()
	old := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) {
		if c.NodeID != "node-3" {
			return
		}
		tune := c.Tune
		c.Tune = func(cc *cluster.Config) {
			if tune != nil {
				tune(cc)
			}
			delete(cc.Meta, "log-format") // as the release before the tag advertises it
		}
	}))
	cur := regiontest.Start(t, 3)

	entry := func() fsm.Entry {
		return fsm.Entry{Command: fsm.UnlockTenant{Tenant: "acme"}, Origin: fsm.Origin{Kind: fsm.OriginAPI, Actor: "spiffe://krypton/operator/x"}}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range old.Nodes {
		for {
			f, who := n.RegionFormat()
			if f == 0 && who == "node-3" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: region format %d (%s), want 0 (node-3)", n.ID(), f, who)
			}
			time.Sleep(50 * time.Millisecond) // gossip spreads the tags; polled under the deadline
		}
		e := entry()
		if err := n.GateEntry(&e); err != nil || e.Origin.Kind != "" {
			t.Fatalf("%s: with an old voter the entry keeps its origin %+v (%v)", n.ID(), e.Origin, err)
		}
		e = fsm.Entry{Command: fsm.CompactRevocations{Through: 1}}
		if err := n.GateEntry(&e); !errors.Is(err, region.ErrUpgradeInProgress) {
			t.Fatalf("%s: compact-revocations with an old voter: %v", n.ID(), err)
		}
	}
	_, err := old.AdminClient(0).SetQuota(old.Context(10*time.Second), &kv1.SetQuotaRequest{RequestId: "q1", Tenant: "acme", Quota: &kv1.Quota{Rate: 10, Burst: 10}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "upgrade every node") {
		t.Fatalf("set-quota with an old voter: %v, want FailedPrecondition naming the upgrade", err)
	}

	for _, n := range cur.Nodes {
		for {
			if f, _ := n.RegionFormat(); f == region.LogFormat {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: region format never reached %d", n.ID(), region.LogFormat)
			}
			time.Sleep(50 * time.Millisecond)
		}
		e := entry()
		if err := n.GateEntry(&e); err != nil || e.Origin.Kind != fsm.OriginAPI {
			t.Fatalf("%s: every voter current, the origin was dropped (%v)", n.ID(), err)
		}
	}
}
