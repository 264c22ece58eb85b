package cluster_test

import (
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
