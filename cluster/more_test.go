package cluster_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := clustertest.Start(t, 1, clustertest.WithConfig(func(c *cluster.Config) {
		c.BootstrapExpect = 1
		c.Registerer = reg
	}))
	nd := h.WaitForLeader()
	applyN(t, h, nd, "m", 3)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetGauge().GetValue()
		}
	}
	if got["krypton_cluster_raft_is_leader"] != 1 || got["krypton_cluster_raft_state/Leader"] != 1 ||
		got["krypton_cluster_raft_state/Follower"] != 0 {
		t.Errorf("leader metrics: %v", got)
	}
	if got["krypton_cluster_raft_applied_index"] < 3 || got["krypton_cluster_raft_commit_index"] < got["krypton_cluster_raft_applied_index"] ||
		got["krypton_cluster_raft_term"] < 1 {
		t.Errorf("index metrics: %v", got)
	}
	// Collectors are unregistered at shutdown, so a restart in the same
	// process registers again.
	h.Kill(0)
	h.Restart(0)
	h.WaitForLeader()
}

func TestPartitionedLeaderIsReplaced(t *testing.T) {
	h := clustertest.Start(t, 3)
	old := h.WaitForLeader()
	applyN(t, h, old, "a", 2)
	oldIdx := h.Index(old)
	var rest []int
	for i := range h.Nodes {
		if i != oldIdx {
			rest = append(rest, i)
		}
	}
	h.Partition([]int{oldIdx}, rest)

	var leader *clustertest.Node
	h.Eventually(10*time.Second, "the majority to elect a new leader", func() bool {
		for _, i := range rest {
			if h.Nodes[i].Cluster.IsLeader() {
				leader = h.Nodes[i]
				return true
			}
		}
		return false
	})
	applyN(t, h, h.Nodes[rest[0]], "b", 2)
	// The isolated old leader cannot commit.
	ctx := h.Context(time.Second)
	if _, err := old.Cluster.Apply(ctx, []byte("lost")); err == nil {
		t.Error("isolated old leader committed a write")
	}
	// Nor can it serve a linearizable read: VerifyLeader needs a quorum.
	if err := old.Cluster.Barrier(h.Context(time.Second)); err == nil {
		t.Error("isolated old leader passed a read barrier")
	}
	h.Heal()
	h.WaitForLeader()
	// Whatever happened to "lost", every node ends with the same log.
	applyN(t, h, old, "c", 1)
	h.Eventually(10*time.Second, "convergence", func() bool {
		want := leader.FSM.Entries()
		for _, nd := range h.Running() {
			if strings.Join(nd.FSM.Entries(), ",") != strings.Join(want, ",") {
				return false
			}
		}
		return len(want) >= 5
	})
	for _, e := range leader.FSM.Entries() {
		if e == "lost" {
			t.Error("a write the isolated leader could not commit was applied")
		}
	}
}

// TestCatchUpBySnapshot restarts a follower after the leader has compacted
// the entries it missed, so it must install a snapshot. The snapshot ends
// in entries the FSM never sees (a new leader's no-op and barrier), and no
// write follows: the read barrier must still pass, which needs the
// snapshot's Raft index, not just its last command's.
func TestCatchUpBySnapshot(t *testing.T) {
	h := clustertest.Start(t, 3, clustertest.WithConfig(func(c *cluster.Config) {
		c.SnapshotThreshold = 1 << 20 // only the explicit snapshot below
		c.TrailingLogs = 4
	}))
	leader := h.WaitForLeader()
	f := h.Followers()[0]
	fIdx := h.Index(f)
	applyN(t, h, leader, "a", 2)
	waitConverged(t, h, 2)
	before := f.Cluster.Stats()["last_log_index"]
	h.Kill(fIdx)
	applyN(t, h, leader, "b", 30)

	ctx := h.Context(15 * time.Second)
	next := h.Followers()[0]
	if err := leader.Cluster.TransferLeadership(ctx, next.ID); err != nil {
		t.Fatal(err)
	}
	h.Eventually(5*time.Second, next.ID+" to lead", next.Cluster.IsLeader)
	// Snapshot runs a barrier first, so the new leader has committed its
	// own no-op and barrier entries; the snapshot compacts the log.
	if err := next.Cluster.Snapshot(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}
	h.Restart(fIdx)
	f = h.Nodes[fIdx]
	if err := f.Cluster.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.FSM.Len(); n != 32 {
		t.Fatalf("after barrier the restarted follower has %d entries, want 32", n)
	}
	// Whether the follower needed the snapshot depends on how far the log
	// was compacted when it reconnected; say which path the run took.
	t.Logf("follower last log index before kill %s, after catch-up: last snapshot %s, last log %s",
		before, f.Cluster.Stats()["last_snapshot_index"], f.Cluster.Stats()["last_log_index"])
	applyN(t, h, f, "c", 1)
	waitConverged(t, h, 33)
}
