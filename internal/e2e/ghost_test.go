package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// A node removed from its region (a "ghost" whose certificate has not expired) tries to tell
// governance that the region has caught up while an event is pending, to wipe the region's
// inventory, to teach governance a configuration naming only itself, and to follow the feed: every
// call is PERMISSION_DENIED, governance's state and audit log do not change, and the remaining
// voters' reports are still accepted (the pending event is reported once it applies).
func TestRemovedNodeCannotReportForItsRegion(t *testing.T) {
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(100*time.Millisecond))
	eu := regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...),
		regiontest.WithConfig(func(c *region.Config) { c.GovernanceAnchorWait = 10 * time.Minute }))
	g.CreateTenant("acme", eu.Anchor, "eu")

	// euLag returns what governance's leader says of eu.
	euLag := func() *kv1.RegionLag {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := g.Client(g.WaitLeader()).Status(ctx, &kv1.GovernanceStatusRequest{})
		if err != nil {
			return nil
		}
		for _, l := range st.GetRegions() {
			if l.GetCursor().GetRegion() == "eu" {
				return l
			}
		}
		return nil
	}
	clustertest.Eventually(t, time.Minute, "eu reports its three voters, caught up", func() bool {
		l := euLag()
		return l != nil && len(l.GetCursor().GetVoters()) == 3 && l.GetPendingEvents() == 0
	})

	// Remove a follower and stop it; its certificate is all the ghost keeps.
	ghost := eu.Followers()[0]
	ghostID, ghostCert := eu.Cfgs[ghost].NodeID, eu.Cfgs[ghost].Certificate
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := eu.AdminClient(eu.WaitLeader()).RemovePeer(ctx, &kv1.RemovePeerRequest{RequestId: "rm-ghost", NodeId: ghostID}); err != nil {
		t.Fatal(err)
	}
	eu.Kill(ghost)
	clustertest.Eventually(t, time.Minute, "governance learns the configuration without "+ghostID, func() bool {
		l := euLag()
		return l != nil && len(l.GetCursor().GetVoters()) == 2 && !slices.Contains(l.GetCursor().GetVoters(), ghostID)
	})

	// An event eu cannot apply yet: a tenant whose root key does not answer.
	keyPath := filepath.Join(t.TempDir(), "stuck.key")
	pv, err := anchor.Open(ctx, "file://"+keyPath, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	pv.Close()
	marker := keyPath + file.UnavailableSuffix
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stuck := g.CreateTenant("stuck", "file://"+keyPath, "eu")
	clustertest.Eventually(t, time.Minute, "eu has the event pending", func() bool {
		l := euLag()
		return l != nil && l.GetPendingEvents() > 0
	})

	// Governance's state and audit log on every node, before the attack.
	states := func() (out [][]byte) {
		for _, n := range g.Nodes {
			b, err := n.FSM().Encode()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	audits := func() (out [][]byte) {
		for _, c := range g.Cfgs {
			b, err := os.ReadFile(filepath.Join(c.DataDir, "audit.log"))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	waitAuditSynced := func() {
		// The audit log syncs on its own 100 ms tick: wait until the files have not changed for
		// several ticks.
		prev, since := audits(), time.Now()
		clustertest.Eventually(t, 30*time.Second, "audit logs settle", func() bool {
			cur := audits()
			if !slices.EqualFunc(prev, cur, bytes.Equal) {
				prev, since = cur, time.Now()
			}
			return time.Since(since) > 500*time.Millisecond
		})
	}
	waitAuditSynced()
	beforeState, beforeAudit := states(), audits()

	cfg := transport.ClientConfig{Roots: g.CA.Pool(), Certificate: ghostCert, Server: pki.Identity{Kind: pki.KindGovernance}}
	for i := range g.Nodes {
		conn, err := transport.Dial(ctx, g.Addr(i), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := kv1.NewGovernanceServiceClient(conn)
		for name, req := range map[string]*kv1.ReportCursorRequest{
			"caught up":       {Region: "eu", AppliedCursor: stuck.GetCursor()},
			"empty inventory": {Region: "eu", AppliedCursor: stuck.GetCursor(), HasInventory: true},
			"a configuration of its own": {Region: "eu", AppliedCursor: stuck.GetCursor(), HasInventory: true,
				ConfigurationIndex: 1 << 40, CommitIndex: 1 << 40, Voters: []string{ghostID}},
		} {
			if _, err := c.ReportCursor(ctx, req); status.Code(err) != codes.PermissionDenied {
				t.Errorf("node %d: the removed node's report (%s): %v, want PermissionDenied", i, name, err)
			}
		}
		stream, err := c.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "eu"})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("node %d: the removed node follows the feed: %v, want PermissionDenied", i, err)
		}
		conn.Close()
	}
	waitAuditSynced()
	if after := states(); !slices.EqualFunc(beforeState, after, bytes.Equal) {
		t.Fatal("the removed node's reports changed governance's state")
	}
	// The ghost's calls left only their refusals in the audit log: no decision, no subscription.
	for i, after := range audits() {
		if !bytes.HasPrefix(after, beforeAudit[i]) {
			t.Fatalf("governance node %d: the audit log was rewritten", i)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(after[len(beforeAudit[i]):]), []byte("\n")) {
			var rec struct{ Kind, Actor string }
			if len(line) == 0 {
				continue
			}
			if err := json.Unmarshal(line, &rec); err != nil {
				t.Fatal(err)
			}
			// The region's own leader may reconnect meanwhile (its feed retries the stuck event).
			if rec.Actor == "spiffe://krypton/region/eu/node/"+ghostID && rec.Kind != "call.refused" {
				t.Fatalf("governance node %d: the ghost's calls left an audit record other than their refusal: %s", i, line)
			}
		}
	}
	if l := euLag(); l.GetPendingEvents() == 0 || l.GetCursor().GetAppliedCursor() >= stuck.GetCursor() {
		t.Fatalf("governance says eu has caught up while the event is pending: %v", l)
	}

	// The remaining voters' reports are accepted: once the key answers, eu applies the event and
	// governance records it.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 2*time.Minute, "eu reports the event applied", func() bool {
		l := euLag()
		return l != nil && l.GetPendingEvents() == 0 && l.GetCursor().GetAppliedCursor() >= stuck.GetCursor()
	})
}
