package region_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// replicatedRecords reads node i's audit log as `krypton audit verify -replicated` does: the chain
// verified, then each replicated record as the line every node writes alike (audit.FormatReplicated).
func replicatedRecords(t *testing.T, r *regiontest.Region, i int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.Cfgs[i].DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(b)); err != nil {
		t.Fatalf("audit chain of %s: %v", r.Cfgs[i].NodeID, err)
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
			t.Errorf("%s: replicated record at index %d after one at %d: a record written twice or out of log order", r.Cfgs[i].NodeID, idx, last)
		}
		last = idx
		out = append(out, audit.FormatReplicated(e))
	}
	return out
}

// waitSameRecords waits until every running node's audit log holds the same replicated records,
// and returns them.
func waitSameRecords(t *testing.T, r *regiontest.Region, nodes ...int) []string {
	t.Helper()
	var want []string
	clustertest.Eventually(t, 20*time.Second, "the same replicated audit records on every node", func() bool {
		want = replicatedRecords(t, r, nodes[0])
		for _, i := range nodes[1:] {
			if !slices.Equal(replicatedRecords(t, r, i), want) {
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

// TestAuditReplicatedSameOnEveryNode (issue 16): every node writes the record of each state change
// from the Raft log as it applies it, so the three nodes of a region hold the same sequence of
// replicated records, whichever node took each call, each with the caller and request id from the
// log entry. A restarted node replays its log without writing any record twice.
func TestAuditReplicatedSameOnEveryNode(t *testing.T) {
	r := setup(t) // acme and acme/payments, created through a follower
	ld := r.WaitLeader()
	follower := r.Followers()[0]
	if _, err := r.AdminClient(follower).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rep-rot", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AdminClient(ld).CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "rep-k2", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AdminClient(follower).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rep-rev",
		Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "leaked"}); err != nil {
		t.Fatal(err)
	}
	// A retry of the revocation under its request id changes nothing and adds no record.
	if _, err := r.AdminClient(ld).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rep-rev",
		Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "leaked"}); err != nil {
		t.Fatal(err)
	}

	all := []int{0, 1, 2}
	records := waitSameRecords(t, r, all...)
	for _, want := range [][]string{
		{"key.create", `tenant="acme"`, `detail.layer="L2"`, `request-id="t1"`, `detail.origin="api"`, `actor="spiffe://krypton/operator/`},
		{"key.create", `service="payments"`, `request-id="k1"`},
		{"key.rotate", `service="payments"`, `version="2"`, `request-id="rep-rot"`, `detail.proposer="` + r.Cfgs[follower].NodeID + `"`},
		{"key.create", `service="ledger"`, `request-id="rep-k2"`, `detail.proposer="` + r.Cfgs[ld].NodeID + `"`},
		{"key.revoke", `service="payments"`, `version="1"`, `reason="leaked"`, `request-id="rep-rev"`, `actor="spiffe://krypton/operator/`},
	} {
		if !hasRecord(records, want...) {
			t.Errorf("no replicated record with %q on every node; records:\n%s", want, strings.Join(records, "\n"))
		}
	}
	revokes := slices.DeleteFunc(slices.Clone(records), func(s string) bool { return !strings.Contains(s, `request-id="rep-rev"`) })
	if len(revokes) != 1 {
		t.Errorf("%d records of the revocation rep-rev on each node, want 1 (its retry changed nothing): %q", len(revokes), revokes)
	}

	// A restart replays the Raft log into a fresh state machine: the records it already holds are
	// not written again.
	r.Kill(follower)
	r.Start(follower)
	r.WaitCaughtUp(follower)
	if _, err := r.AdminClient(ld).LockTenant(ctxT(t), &kv1.LockTenantRequest{RequestId: "rep-lock", Tenant: "acme", Reason: "audit"}); err != nil {
		t.Fatal(err)
	}
	after := waitSameRecords(t, r, all...)
	if len(after) != len(records)+1 || !slices.Equal(after[:len(records)], records) || !hasRecord(after[len(records):], "tenant.lock", `request-id="rep-lock"`) {
		t.Errorf("after the restart of %s, records:\n%s\nwant the earlier ones and the lock, once each", r.Cfgs[follower].NodeID, strings.Join(after, "\n"))
	}
}

// TestAuditSurvivesLeaderDeath (issue 16): a leader that dies right after a write was applied
// leaves the write's record on the followers, which applied it from the log: before, only the node
// that took the call wrote a record, after the apply, and a leader dying in between left none.
func TestAuditSurvivesLeaderDeath(t *testing.T) {
	r := setup(t)
	ld := r.WaitLeader()
	_, err := r.AdminClient(ld).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "die-rev",
		Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "compromised"})
	if err != nil {
		t.Fatal(err)
	}
	index := r.Nodes[ld].State().AppliedIndex()
	followers := r.Followers()
	clustertest.Eventually(t, 20*time.Second, "the followers applied the revocation", func() bool {
		for _, i := range followers {
			if r.Nodes[i].State().AppliedIndex() < index {
				return false
			}
		}
		return true
	})
	r.Kill(ld) // the leader is gone; its audit log no longer matters
	for _, i := range followers {
		records := replicatedRecords(t, r, i)
		if !hasRecord(records, "key.revoke", `service="payments"`, `reason="compromised"`, `request-id="die-rev"`,
			`actor="spiffe://krypton/operator/`, `detail.origin="api"`, `detail.proposer="`+r.Cfgs[ld].NodeID+`"`) {
			t.Errorf("%s's audit log has no record of the revocation it applied before the leader died; records:\n%s",
				r.Cfgs[i].NodeID, strings.Join(records, "\n"))
		}
	}
	// The survivors elect a leader and agree.
	r.WaitLeader()
	waitSameRecords(t, r, followers...)
}
