package governance_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/audit"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// replicatedRecords reads governance node i's audit log as `krypton audit verify -replicated`
// does: the chain verified, then each replicated record as every node writes it.
func replicatedRecords(t *testing.T, g *governancetest.Cluster, i int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.Cfgs[i].DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(b)); err != nil {
		t.Fatalf("audit chain of %s: %v", g.Cfgs[i].NodeID, err)
	}
	events, err := audit.ReadReplicated(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var last uint64
	for _, e := range events {
		idx, _ := e.Index()
		if idx <= last {
			t.Errorf("%s: replicated record at index %d after one at %d: written twice or out of log order", g.Cfgs[i].NodeID, idx, last)
		}
		last = idx
		out = append(out, audit.FormatReplicated(e))
	}
	return out
}

func waitSameRecords(t *testing.T, g *governancetest.Cluster, nodes ...int) []string {
	t.Helper()
	var want []string
	clustertest.Eventually(t, 20*time.Second, "the same replicated audit records on every governance node", func() bool {
		want = replicatedRecords(t, g, nodes[0])
		for _, i := range nodes[1:] {
			if !slices.Equal(replicatedRecords(t, g, i), want) {
				return false
			}
		}
		return true
	})
	return want
}

func hasRecord(records []string, parts ...string) bool {
	return slices.ContainsFunc(records, func(s string) bool {
		for _, p := range parts {
			if !strings.Contains(s, p) {
				return false
			}
		}
		return true
	})
}

func followersOf(g *governancetest.Cluster, leader int) []int {
	var out []int
	for i, n := range g.Nodes {
		if n != nil && i != leader {
			out = append(out, i)
		}
	}
	return out
}

// TestAuditReplicatedOnEveryGovernanceNode (issue 16): every governance node writes the record of
// each change from the Raft log as it applies it, with the caller and request id the command
// carries, so the three nodes hold the same replicated records whichever node took each call; a
// restart's replay writes none twice; and a leader that dies right after a revocation leaves its
// record on the followers.
func TestAuditReplicatedOnEveryGovernanceNode(t *testing.T) {
	g := governancetest.Start(t, 3)
	ld := g.WaitLeader()
	followers := followersOf(g, ld)
	ctx := g.Context(60 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	if _, err := g.Client(followers[0]).CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "gs-1", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	rev := &kv1.RevokeRequest{RequestId: "gr-1", Target: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "leaked"}
	if _, err := g.Client(followers[1]).Revoke(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Client(ld).Revoke(ctx, rev); err != nil { // a retry: no change, no record
		t.Fatal(err)
	}
	all := []int{0, 1, 2}
	records := waitSameRecords(t, g, all...)
	for _, want := range [][]string{
		{"governance.tenant.create", `tenant="acme"`, `actor="spiffe://krypton/operator/`, `detail.origin="api"`},
		{"governance.service.create", `service="payments"`, `request-id="gs-1"`, `detail.proposer="` + g.Cfgs[followers[0]].NodeID + `"`},
		{"governance.revoke", `service="payments"`, `version="1"`, `reason="leaked"`, `request-id="gr-1"`, `detail.scope="acme/payments/1"`},
	} {
		if !hasRecord(records, want...) {
			t.Errorf("no replicated record with %q on every node; records:\n%s", want, strings.Join(records, "\n"))
		}
	}
	if n := len(slices.DeleteFunc(slices.Clone(records), func(s string) bool { return !strings.Contains(s, `request-id="gr-1"`) })); n != 1 {
		t.Errorf("%d records of revocation gr-1 on each node, want 1", n)
	}

	// A restart replays the log: nothing is recorded twice.
	g.Kill(followers[0])
	g.Restart(followers[0])
	if _, err := g.Client(ld).LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: "gl-1", Tenant: "acme", Reason: "audit"}); err != nil {
		t.Fatal(err)
	}
	after := waitSameRecords(t, g, all...)
	if len(after) != len(records)+1 || !slices.Equal(after[:len(records)], records) || !hasRecord(after[len(records):], "governance.tenant.lock", `request-id="gl-1"`) {
		t.Errorf("after a restart, records:\n%s\nwant the earlier ones and the lock, once each", strings.Join(after, "\n"))
	}

	// The leader dies right after the followers applied a revocation: they have its record. The
	// node that answered applied it before answering (the leader, or the node it was forwarded to
	// if leadership moved with the restart): the highest applied index covers it.
	ld = g.WaitLeader()
	if _, err := g.Client(ld).Revoke(ctx, &kv1.RevokeRequest{RequestId: "gr-2", Target: &kv1.KeyScope{Tenant: "acme"}, Reason: "compromised"}); err != nil {
		t.Fatal(err)
	}
	var index uint64
	for _, n := range g.Nodes {
		index = max(index, n.Cluster().AppliedIndex())
	}
	ld = g.WaitLeader()
	followers = followersOf(g, ld)
	clustertest.Eventually(t, 20*time.Second, "the followers applied the revocation", func() bool {
		for _, i := range followers {
			if g.Nodes[i].Cluster().AppliedIndex() < index {
				return false
			}
		}
		return true
	})
	g.Kill(ld)
	for _, i := range followers {
		if r := replicatedRecords(t, g, i); !hasRecord(r, "governance.revoke", `tenant="acme"`, `reason="compromised"`, `request-id="gr-2"`,
			`actor="spiffe://krypton/operator/`, `detail.proposer="`+g.Cfgs[ld].NodeID+`"`) {
			t.Errorf("%s has no record of the revocation it applied before the leader died; records:\n%s", g.Cfgs[i].NodeID, strings.Join(r, "\n"))
		}
	}
	waitSameRecords(t, g, followers...)
}
