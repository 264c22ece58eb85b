package cluster_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
)

func TestBootstrapApplyForward(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	ctx := h.Context(10 * time.Second)

	peers, err := leader.Cluster.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 {
		t.Fatalf("peers = %+v, want 3", peers)
	}
	nLeaders := 0
	for _, p := range peers {
		if p.Suffrage != "Voter" {
			t.Errorf("%s is %s", p.ID, p.Suffrage)
		}
		if p.Leader {
			nLeaders++
		}
	}
	if nLeaders != 1 {
		t.Errorf("%d peers flagged leader", nLeaders)
	}

	// Apply on a follower is forwarded, and the response comes back.
	f := h.Followers()[0]
	resp, err := f.Cluster.Apply(ctx, []byte("from-follower"))
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := resp.([]byte); !ok || string(b) != "from-follower" {
		t.Errorf("response = %#v", resp)
	}
	// An FSM error response crosses the wire as a RemoteError.
	resp, err = f.Cluster.Apply(ctx, []byte("err:nope"))
	if err != nil {
		t.Fatal(err)
	}
	var re *cluster.RemoteError
	if e, ok := resp.(error); !ok || !errors.As(e, &re) || re.Msg != "nope" {
		t.Errorf("error response = %#v", resp)
	}
	// On the leader the FSM's own value is returned.
	resp, err = leader.Cluster.Apply(ctx, []byte("err:local"))
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := resp.(error); !ok || e.Error() != "local" {
		t.Errorf("local error response = %#v", resp)
	}
	for i := 0; i < 5; i++ {
		n := h.Followers()[i%2]
		if _, err := n.Cluster.Apply(ctx, []byte(fmt.Sprint("x", i))); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"from-follower", "x0", "x1", "x2", "x3", "x4"}
	for _, nd := range h.Nodes {
		h.Eventually(5*time.Second, nd.ID+" applies all", func() bool { return nd.FSM.Len() == len(want) })
		if got := nd.FSM.Entries(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s entries = %v, want %v", nd.ID, got, want)
		}
	}

	members, err := f.Cluster.Members()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 3 {
		t.Fatalf("members = %+v", members)
	}
	for _, m := range members {
		if m.Status != cluster.StatusAlive || m.RaftAddr == "" || m.Meta["grpc"] == "" {
			t.Errorf("member %+v", m)
		}
	}
	if st := f.Cluster.State(); st != raft.Follower {
		t.Errorf("follower state %v", st)
	}
}

func applyN(t *testing.T, h *clustertest.Harness, via *clustertest.Node, prefix string, n int) {
	t.Helper()
	ctx := h.Context(10 * time.Second)
	for i := 0; i < n; i++ {
		if _, err := via.Cluster.Apply(ctx, []byte(fmt.Sprint(prefix, i))); err != nil {
			t.Fatalf("apply %s%d via %s: %v", prefix, i, via.ID, err)
		}
	}
}

func waitConverged(t *testing.T, h *clustertest.Harness, n int) {
	t.Helper()
	for _, nd := range h.Running() {
		h.Eventually(10*time.Second, fmt.Sprintf("%s to apply %d entries", nd.ID, n), func() bool { return nd.FSM.Len() == n })
	}
	want := fmt.Sprint(h.Running()[0].FSM.Entries())
	for _, nd := range h.Running()[1:] {
		if got := fmt.Sprint(nd.FSM.Entries()); got != want {
			t.Errorf("%s diverged: %s, want %s", nd.ID, got, want)
		}
	}
}

func TestKillLeaderAndRestart(t *testing.T) {
	h := clustertest.Start(t, 3)
	old := h.WaitForLeader()
	applyN(t, h, old, "a", 5)
	oldIdx := h.Index(old)
	h.Kill(oldIdx)

	leader := h.WaitForLeader()
	if leader == old {
		t.Fatal("killed node still leads")
	}
	applyN(t, h, h.Followers()[0], "b", 5)

	h.Restart(oldIdx)
	restarted := h.Nodes[oldIdx]
	waitConverged(t, h, 10)
	peers, err := restarted.Cluster.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 {
		t.Errorf("peers after restart = %+v", peers)
	}
	// The restarted node follows the leader it found; it did not start a
	// cluster of its own.
	if id, _ := restarted.Cluster.Leader(); id != leader.ID {
		t.Errorf("restarted node follows %q, want %q", id, leader.ID)
	}
	applyN(t, h, restarted, "c", 2)
	waitConverged(t, h, 12)
}

func TestWholeClusterRestartKeepsState(t *testing.T) {
	h := clustertest.Start(t, 3)
	applyN(t, h, h.WaitForLeader(), "a", 3)
	waitConverged(t, h, 3)
	for i := range h.Nodes {
		h.Kill(i)
	}
	for i := range h.Nodes {
		h.Restart(i)
	}
	leader := h.WaitForLeader()
	// State comes back from the log alone: nothing re-bootstrapped, and
	// the configuration is the original one.
	waitConverged(t, h, 3)
	peers, err := leader.Cluster.Peers()
	if err != nil || len(peers) != 3 {
		t.Fatalf("peers = %+v, %v", peers, err)
	}
	applyN(t, h, h.Followers()[0], "b", 1)
	waitConverged(t, h, 4)
}

func TestJoinAndRemove(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	applyN(t, h, leader, "a", 3)

	nd := h.AddNode()
	h.Eventually(10*time.Second, "the new node to become a voter", func() bool {
		peers, err := leader.Cluster.Peers()
		if err != nil {
			return false
		}
		for _, p := range peers {
			if p.ID == nd.ID && p.Suffrage == "Voter" {
				return true
			}
		}
		return false
	})
	waitConverged(t, h, 3)
	applyN(t, h, nd, "b", 2) // the new node forwards too
	waitConverged(t, h, 5)

	ctx := h.Context(10 * time.Second)
	if err := h.Followers()[0].Cluster.Remove(ctx, nd.ID); err != nil {
		t.Fatal(err)
	}
	peers, err := leader.Cluster.Peers()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.ID == nd.ID {
			t.Fatalf("%s still in configuration: %+v", nd.ID, peers)
		}
	}
	// The removed node is still alive in gossip; the leader must not add
	// it back.
	time.Sleep(3 * clustertest.Config().ReconcileInterval)
	peers, _ = leader.Cluster.Peers()
	if len(peers) != 3 {
		t.Fatalf("removed node re-added: %+v", peers)
	}
	h.Kill(h.Index(nd))
	applyN(t, h, leader, "c", 1)
}

func TestLeaveLeaderHandsOver(t *testing.T) {
	h := clustertest.Start(t, 3)
	old := h.WaitForLeader()
	var changes []cluster.LeaderChange
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	cancel := h.Followers()[0].Cluster.OnLeaderChange(func(c cluster.LeaderChange) {
		<-mu
		changes = append(changes, c)
		mu <- struct{}{}
	})
	defer cancel()

	ctx := h.Context(15 * time.Second)
	if err := old.Cluster.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	oldIdx := h.Index(old)
	if _, err := old.Cluster.Apply(ctx, []byte("x")); !errors.Is(err, cluster.ErrShutdown) {
		t.Errorf("apply after leave: %v, want ErrShutdown", err)
	}
	h.Nodes[oldIdx].Cluster = nil

	leader := h.WaitForLeader()
	peers, err := leader.Cluster.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Fatalf("peers after leave = %+v", peers)
	}
	for _, p := range peers {
		if p.ID == old.ID {
			t.Fatalf("left node still a peer")
		}
	}
	h.Eventually(5*time.Second, "gossip to show the node as left", func() bool {
		ms, _ := leader.Cluster.Members()
		t.Logf("members: %+v", ms)
		for _, m := range ms {
			if m.ID == old.ID {
				return m.Status == cluster.StatusLeft
			}
		}
		return false
	})
	applyN(t, h, h.Followers()[0], "after", 2)
	waitConverged(t, h, 2)
	<-mu
	saw := false
	for _, c := range changes {
		if c.LeaderID != "" && c.LeaderID != old.ID {
			saw = true
		}
	}
	mu <- struct{}{}
	if !saw {
		t.Errorf("observer saw no new leader: %+v", changes)
	}
}

func TestBarrierSeesPrecedingWrite(t *testing.T) {
	h := clustertest.Start(t, 3)
	h.WaitForLeader()
	ctx := h.Context(20 * time.Second)
	for i := 0; i < 30; i++ {
		writer := h.Running()[i%3]
		reader := h.Running()[(i+1)%3]
		cmd := fmt.Sprint("w", i)
		if _, err := writer.Cluster.Apply(ctx, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		if err := reader.Cluster.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		if e := reader.FSM.Entries(); len(e) != i+1 || e[i] != cmd {
			t.Fatalf("after barrier %s sees %d entries, last %q; want %q", reader.ID, len(e), e[len(e)-1], cmd)
		}
	}
}

func TestShutdownTwice(t *testing.T) {
	h := clustertest.Start(t, 1, clustertest.WithConfig(func(c *cluster.Config) { c.BootstrapExpect = 1 }))
	nd := h.WaitForLeader()
	c := nd.Cluster
	if err := c.Shutdown(); err != nil {
		t.Fatalf("first shutdown: %v", err)
	}
	nd.Cluster = nil
	ctx := h.Context(time.Second)
	checks := map[string]error{
		"Shutdown": c.Shutdown(),
		"Barrier":  c.Barrier(ctx),
		"Join":     c.Join(ctx, "x", "127.0.0.1:1"),
		"Remove":   c.Remove(ctx, "x"),
		"Leave":    c.Leave(ctx),
		"Transfer": c.TransferLeadership(ctx, ""),
		"Snapshot": c.Snapshot(ctx, &bytes.Buffer{}),
		"Restore":  c.Restore(ctx, &bytes.Buffer{}),
	}
	_, checks["Apply"] = c.Apply(ctx, []byte("x"))
	_, checks["Peers"] = c.Peers()
	_, checks["Members"] = c.Members()
	_, checks["WaitForLeader"] = c.WaitForLeader(ctx)
	for name, err := range checks {
		if !errors.Is(err, cluster.ErrShutdown) {
			t.Errorf("%s after shutdown: %v, want ErrShutdown", name, err)
		}
	}
}

func TestSnapshotRestore(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	applyN(t, h, leader, "a", 3)
	ctx := h.Context(20 * time.Second)
	var snap bytes.Buffer
	// Taken on a follower: the barrier inside makes it include all three.
	if err := h.Followers()[0].Cluster.Snapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	applyN(t, h, leader, "b", 2)
	waitConverged(t, h, 5)

	// The FSM's own snapshot can be inspected before a restore.
	data, err := cluster.SnapshotFSMData(snap.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != `["YTA=","YTE=","YTI="]` {
		t.Errorf("FSM data in snapshot = %s", got)
	}

	// Damaged snapshots are refused whole.
	bad := bytes.Clone(snap.Bytes())
	bad[len(bad)/2] ^= 1
	if _, err := cluster.SnapshotFSMData(bad); !errors.Is(err, cluster.ErrBadSnapshot) {
		t.Errorf("SnapshotFSMData of a corrupt file: %v", err)
	}
	if err := leader.Cluster.Restore(ctx, bytes.NewReader(bad)); !errors.Is(err, cluster.ErrBadSnapshot) {
		t.Fatalf("corrupt restore: %v, want ErrBadSnapshot", err)
	}
	if err := leader.Cluster.Restore(ctx, bytes.NewReader(snap.Bytes()[:snap.Len()-1])); !errors.Is(err, cluster.ErrBadSnapshot) {
		t.Fatalf("truncated restore: %v, want ErrBadSnapshot", err)
	}
	if err := h.Followers()[0].Cluster.Restore(ctx, bytes.NewReader(snap.Bytes())); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("restore on follower: %v, want ErrNotLeader", err)
	}

	if err := leader.Cluster.Restore(ctx, bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, h, 3)
	if got := fmt.Sprint(leader.FSM.Entries()); got != "[a0 a1 a2]" {
		t.Fatalf("after restore: %s", got)
	}
	// Writes and read barriers work after the restore, on every node.
	applyN(t, h, h.Followers()[1], "c", 1)
	for _, nd := range h.Running() {
		if err := nd.Cluster.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(nd.FSM.Entries()); got != "[a0 a1 a2 c0]" {
			t.Errorf("%s after restore and write: %s", nd.ID, got)
		}
	}
}
