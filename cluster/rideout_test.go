package cluster_test

import (
	"slices"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
)

// TestApplyIdempotentRidesOutAFrozenLeader (issue 16): a follower forwards an Apply to the
// leader, which takes it and then answers nothing (its state machine stalls, and it is cut off
// from the others: a frozen or black-holed leader). Plain Apply waited out its whole deadline
// for that answer. ApplyIdempotent abandons the call as soon as the follower no longer knows
// that node as the leader, and sends the same command to the new leader, so it succeeds within
// the deadline. (This test FSM does not deduplicate, so the command may be applied twice here;
// the region's and governance's state machines answer a second copy with the first's result.)
func TestApplyIdempotentRidesOutAFrozenLeader(t *testing.T) {
	h := clustertest.Start(t, 3)
	old := h.WaitForLeader()
	applyN(t, h, old, "a", 1)
	oldIdx := h.Index(old)
	f := h.Followers()[0]
	var rest []int
	for i := range h.Nodes {
		if i != oldIdx {
			rest = append(rest, i)
		}
	}
	release := old.FSM.Hold("slow:")
	t.Cleanup(release) // before the harness closes

	ctx := h.Context(10 * time.Second) // an election and a resend fit well within it
	done := make(chan error, 1)
	go func() {
		_, err := f.Cluster.ApplyIdempotent(ctx, []byte("slow:x"))
		done <- err
	}()
	// The leader has the command (it committed: the follower applied it) and will not answer.
	h.Eventually(10*time.Second, "the forwarded command committed", func() bool {
		return slices.Contains(f.FSM.Entries(), "slow:x")
	})
	h.Partition([]int{oldIdx}, rest)
	t.Cleanup(h.Heal)
	if err := <-done; err != nil {
		t.Fatalf("ApplyIdempotent through a follower whose leader froze: %v (want success from the new leader)", err)
	}
	if now, _ := f.Cluster.Leader(); now == old.ID {
		t.Fatalf("the answer came from the frozen leader %s", old.ID)
	}
}
