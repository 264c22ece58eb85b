package cluster_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
)

// inConfig reports whether nd's latest Raft configuration lists id.
func inConfig(t *testing.T, nd *clustertest.Node, id string) bool {
	t.Helper()
	peers, err := nd.Cluster.Peers()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(peers, func(p cluster.Peer) bool { return p.ID == id })
}

// removedOn reports whether nd's replicated state holds a tombstone for id.
func removedOn(nd *clustertest.Node, id string) bool {
	list, err := nd.Cluster.Removed()
	return err == nil && slices.ContainsFunc(list, func(tb cluster.Tombstone) bool { return tb.ID == id })
}

// neverFor polls bad every 10 ms for d and fails the test the first time it holds: an
// observation window, not a wait for a condition.
func neverFor(t *testing.T, d time.Duration, what string, bad func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	end := time.After(d)
	for {
		if bad() {
			t.Fatalf("%s", what)
		}
		select {
		case <-end:
			return
		case <-tick.C:
		}
	}
}

// leaderAmong waits until exactly one of the nodes nodes() returns leads and the others follow
// it (the removed node, still running, follows no one of theirs), and returns it.
func leaderAmong(t *testing.T, h *clustertest.Harness, nodes func() []*clustertest.Node) *clustertest.Node {
	t.Helper()
	var leader *clustertest.Node
	h.Eventually(15*time.Second, "a leader the remaining members agree on", func() bool {
		leader = nil
		for _, nd := range nodes() {
			if nd.Cluster.IsLeader() {
				if leader != nil {
					return false
				}
				leader = nd
			}
		}
		if leader == nil {
			return false
		}
		for _, nd := range nodes() {
			if id, _ := nd.Cluster.Leader(); id != leader.ID {
				return false
			}
		}
		return true
	})
	return leader
}

// window is how long each observation lasts: several of the leader's reconcile rounds and gossip
// probe rounds.
var window = 8 * clustertest.Config().ReconcileInterval

// TestRemovedNodeStaysRemovedAcrossLeaders (issue 16): a node removed while it stays alive (in
// gossip, its process running and still reaching the others) is not added back by any later
// leader — one that took over by transfer, one elected after the leader was killed — nor by the
// node itself, restarted on its data dir or on an empty one. Every node, the new leaders among
// them, holds the removal's tombstone from the replicated log (a leader that did not make the
// removal knows of it), and `Members` marks it removed. An operator's explicit join readmits it
// and lifts the tombstone everywhere.
func TestRemovedNodeStaysRemovedAcrossLeaders(t *testing.T) {
	h := clustertest.Start(t, 4)
	first := h.WaitForLeader()
	applyN(t, h, first, "a", 2)
	victim := h.Followers()[0]
	ctx := h.Context(30 * time.Second)
	if err := first.Cluster.Remove(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}
	others := func() []*clustertest.Node {
		var out []*clustertest.Node
		for _, nd := range h.Running() {
			if nd != victim {
				out = append(out, nd)
			}
		}
		return out
	}
	for _, nd := range others() {
		h.Eventually(10*time.Second, nd.ID+" to apply the removal's tombstone", func() bool {
			return removedOn(nd, victim.ID) && !inConfig(t, nd, victim.ID)
		})
	}
	readded := func() bool {
		for _, nd := range others() {
			if inConfig(t, nd, victim.ID) {
				return true
			}
		}
		return false
	}

	// A new leader by transfer: it did not make the removal, and sees the victim alive in gossip.
	var next *clustertest.Node
	for _, nd := range others() {
		if nd != first {
			next = nd
			break
		}
	}
	if err := first.Cluster.TransferLeadership(ctx, next.ID); err != nil {
		t.Fatal(err)
	}
	h.Eventually(10*time.Second, next.ID+" to lead", func() bool { return next.Cluster.IsLeader() })
	h.Eventually(10*time.Second, next.ID+" to see the removed node alive in gossip, marked removed", func() bool {
		members, _ := next.Cluster.Members()
		return slices.ContainsFunc(members, func(m cluster.Member) bool {
			return m.ID == victim.ID && m.Status == cluster.StatusAlive && m.Removed
		})
	})
	neverFor(t, window, "a leader that took over by transfer re-added the removed node", readded)

	// A new leader by election: the leader is killed.
	h.Kill(h.Index(next))
	third := leaderAmong(t, h, others)
	if victim.Cluster.IsLeader() {
		t.Fatal("the removed node leads")
	}
	if !removedOn(third, victim.ID) {
		t.Fatalf("the elected leader %s has no tombstone for %s", third.ID, victim.ID)
	}
	neverFor(t, window, "a leader elected after a kill re-added the removed node", readded)
	h.Restart(h.Index(next))

	// The removed node tries on its own: writes through the cluster are refused, and restarts
	// (on its data dir: Raft state naming the old configuration; on an empty one: the bootstrap
	// loop, with BootstrapExpect as at the start) do not bring it back.
	if _, err := victim.Cluster.Apply(h.Context(5*time.Second), []byte("from-removed")); err == nil {
		t.Fatal("the removed node's write was applied")
	}
	vi := h.Index(victim)
	h.Kill(vi)
	h.Restart(vi)
	neverFor(t, window, "the removed node came back by restarting on its data dir", readded)
	h.Kill(vi)
	if err := os.RemoveAll(victim.Config.DataDir); err != nil {
		t.Fatal(err)
	}
	h.Restart(vi)
	neverFor(t, window, "the removed node came back by restarting on an empty data dir", readded)
	for _, nd := range others() {
		if !removedOn(nd, victim.ID) {
			t.Errorf("%s lost the tombstone of %s", nd.ID, victim.ID)
		}
		for _, e := range nd.FSM.Entries() {
			if e == "from-removed" {
				t.Errorf("%s applied the removed node's write", nd.ID)
			}
			if strings.Contains(e, `"op":"remove"`) {
				t.Errorf("%s handed the cluster's tombstone entry to the caller's FSM: %s", nd.ID, e)
			}
		}
	}

	// An operator's explicit join readmits it, and lifts the tombstone on every node.
	leader := leaderAmong(t, h, others)
	if err := leader.Cluster.Join(ctx, victim.ID, victim.Config.RaftAddr); err != nil {
		t.Fatalf("operator's join of the removed node: %v", err)
	}
	for _, nd := range h.Running() {
		h.Eventually(10*time.Second, nd.ID+" to list the readmitted node and no tombstone", func() bool {
			return inConfig(t, nd, victim.ID) && !removedOn(nd, victim.ID)
		})
	}
	applyN(t, h, victim, "b", 1)
}

// TestStaleJoinDoesNotUndoRemoval: a join asked while the node was not removed (or under an older
// removal), arriving at the leader after a removal, is refused and changes nothing; a join asked
// knowing of the removal readmits the node.
func TestStaleJoinDoesNotUndoRemoval(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	nd := h.AddNode()
	ctx := h.Context(30 * time.Second)
	if err := leader.Cluster.Remove(ctx, nd.ID); err != nil {
		t.Fatal(err)
	}
	follower := h.Followers()[0]
	if follower == nd {
		follower = h.Followers()[1]
	}
	err := follower.Cluster.JoinAsOf(ctx, nd.ID, nd.Config.RaftAddr, 0)
	if !errors.Is(err, cluster.ErrRejected) || !strings.Contains(err.Error(), "after this join was asked") {
		t.Fatalf("stale join: %v, want ErrRejected saying the node was removed after", err)
	}
	if inConfig(t, leader, nd.ID) || !removedOn(leader, nd.ID) {
		t.Fatal("a stale join changed the configuration or the tombstone")
	}
	if err := follower.Cluster.Join(ctx, nd.ID, nd.Config.RaftAddr); err != nil {
		t.Fatalf("operator's join: %v", err)
	}
	h.Eventually(10*time.Second, "the node readmitted", func() bool { return inConfig(t, leader, nd.ID) && !removedOn(leader, nd.ID) })
}

// TestTombstoneInSnapshots: the tombstones travel in snapshots. A node restarted on a snapshot
// taken after a removal (its log after the snapshot holds no tombstone entry) still holds it;
// an operator's snapshot file carries it and SnapshotFSMData still returns the FSM's data; an
// operator's restore of a backup taken before the removal keeps the cluster's tombstone (Raft
// keeps the configuration across a restore, and the tombstones go with it); and a snapshot file
// in the older format (a bare 8-byte index before the FSM's data) still restores.
func TestTombstoneInSnapshots(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	applyN(t, h, leader, "a", 2)
	ctx := h.Context(30 * time.Second)
	var before bytes.Buffer
	if err := leader.Cluster.Snapshot(ctx, &before); err != nil {
		t.Fatal(err)
	}
	nd := h.AddNode()
	if err := leader.Cluster.Remove(ctx, nd.ID); err != nil {
		t.Fatal(err)
	}
	applyN(t, h, leader, "b", 1)

	// A follower snapshots (Snapshot takes a Raft snapshot on the node it runs on), restarts,
	// and restores from it.
	f := h.Followers()[0]
	if f == nd {
		f = h.Followers()[1]
	}
	var after bytes.Buffer
	if err := f.Cluster.Snapshot(ctx, &after); err != nil {
		t.Fatal(err)
	}
	fi := h.Index(f)
	h.Kill(fi)
	h.Restart(fi)
	if !removedOn(f, nd.ID) {
		t.Fatalf("%s restarted on its snapshot without the tombstone of %s", f.ID, nd.ID)
	}
	data, err := cluster.SnapshotFSMData(after.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != `["YTA=","YTE=","YjA="]` {
		t.Errorf("FSM data in a snapshot with a tombstone = %s", got)
	}

	// Restoring the backup from before the removal keeps the removal.
	leader = h.WaitForLeader()
	if err := leader.Cluster.Restore(ctx, bytes.NewReader(before.Bytes())); err != nil {
		t.Fatal(err)
	}
	for _, x := range h.Running() {
		if x == nd {
			continue
		}
		h.Eventually(10*time.Second, x.ID+" to restore the backup", func() bool { return fmt.Sprint(x.FSM.Entries()) == "[a0 a1]" })
		if !removedOn(x, nd.ID) {
			t.Errorf("%s lost the tombstone of %s in the restore", x.ID, nd.ID)
		}
	}

	// A file of the older format: the FSM data behind a bare index.
	old := oldFormatSnapshot(t, 7, []byte(`["b2xk"]`+"\n"))
	if got, err := cluster.SnapshotFSMData(old); err != nil || string(got) != `["b2xk"]`+"\n" {
		t.Fatalf("SnapshotFSMData of an old-format file: %q, %v", got, err)
	}
	if err := leader.Cluster.Restore(ctx, bytes.NewReader(old)); err != nil {
		t.Fatalf("restore of an old-format file: %v", err)
	}
	h.Eventually(10*time.Second, "the old-format snapshot restored", func() bool { return fmt.Sprint(leader.FSM.Entries()) == "[old]" })
	if !removedOn(leader, nd.ID) {
		t.Error("restoring an old-format file lifted the tombstone")
	}
}

// oldFormatSnapshot writes an operator snapshot file as versions before tombstones did.
func oldFormatSnapshot(t *testing.T, index uint64, fsmData []byte) []byte {
	t.Helper()
	body := binary.BigEndian.AppendUint64(nil, index)
	body = append(body, fsmData...)
	var b bytes.Buffer
	b.WriteString("KRYSNAP1")
	for _, v := range []uint64{index, 1, uint64(len(body))} {
		b.Write(binary.BigEndian.AppendUint64(nil, v))
	}
	b.Write(body)
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}
