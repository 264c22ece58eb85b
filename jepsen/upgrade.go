package jepsen

import (
	"context"
	"fmt"
	"time"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The upgrade scenario (DESIGN.md, "Rolling upgrades"): the region starts on the previous
// release's binary (Options.OldBinary), and the upgrade nemesis replaces its nodes one at a
// time with the binary under test, as an operator's rolling upgrade does: stop the node
// (SIGTERM), start the new binary on the same data directory, wait until it has caught up.
// After each replacement the leadership is handed to the upgraded node, so that a leader of the
// new release writes the log that old followers must decode — the case that breaks when a
// release writes what the previous one cannot read (docs/operations.md, "Upgrades and
// compatibility"). Every other checker runs as in any scenario.

// oldNodes counts the nodes still on the old binary.
func (c *cluster) oldNodes() int {
	k := 0
	for _, nd := range c.nodes {
		nd.mu.Lock()
		if c.oldBin != "" && nd.bin == c.oldBin {
			k++
		}
		nd.mu.Unlock()
	}
	return k
}

func (c *cluster) isOld(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return c.oldBin != "" && nd.bin == c.oldBin
}

// upgrade replaces the next old node (a follower while there is one, the leader last), then
// moves the leadership to it while other nodes still run the old binary, and holds.
func (nm *nemesis) upgrade(ctx context.Context, l int, hold time.Duration, f *Fault) error {
	c := nm.c
	target := -1
	for i := range c.nodes {
		if c.isOld(i) && i != l {
			target = i
			break
		}
	}
	if target < 0 && l >= 0 && c.isOld(l) {
		target = l
	}
	if target < 0 {
		f.Detail = "every node upgraded"
		sleep(ctx, hold)
		return nil
	}
	nd := c.nodes[target]
	f.Node = nd.id
	nm.logf("nemesis: upgrade %s (%d node(s) on the old binary)", nd.id, c.oldNodes())
	c.stop(target, 20*time.Second)
	nd.mu.Lock()
	nd.bin = c.bin
	nd.mu.Unlock()
	if err := c.start(target, false); err != nil {
		return err
	}
	// Caught up: the node answers Status and has applied the leader's commit index as it was
	// when the node came back.
	caught := nm.waitCaughtUp(ctx, target, 30*time.Second)
	if !caught {
		f.Problem = fmt.Sprintf("%s did not catch up within 30 s of its start on the new binary", nd.id)
	}
	f.Detail = nd.id + " upgraded"
	if c.oldNodes() > 0 && caught {
		if l = nm.leader(ctx); l >= 0 && l != target {
			if a, err := nm.cs.admin(l); err == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = a.TransferLeadership(cctx, &kv1.TransferLeadershipRequest{RequestId: fmt.Sprintf("jepsen-upgrade-%d", nm.h.now()), TargetId: nd.id})
				cancel()
				if err == nil {
					f.Detail += ", leads old followers"
				} else {
					f.Detail += fmt.Sprintf(", transfer to it failed: %v", err)
				}
			}
		} else if l == target {
			f.Detail += ", leads old followers"
		}
	}
	nm.logf("nemesis: %s; holding %s", f.Detail, hold)
	sleep(ctx, hold)
	return nil
}

// waitCaughtUp waits up to d until node i answers Status with an applied index at or past the
// commit index the leader reported when the wait began.
func (nm *nemesis) waitCaughtUp(ctx context.Context, i int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	var want uint64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if want == 0 {
			if l := nm.leader(ctx); l >= 0 && l != i {
				if st := nm.nodeStatus(ctx, l); st != nil {
					want = st.GetCommitIndex()
				}
			}
		}
		if st := nm.nodeStatus(ctx, i); st != nil && want > 0 && st.GetAppliedIndex() >= want {
			return true
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return false
}

func (nm *nemesis) nodeStatus(ctx context.Context, i int) *kv1.StatusResponse {
	a, err := nm.cs.admin(i)
	if err != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := a.Status(cctx, &kv1.StatusRequest{})
	if err != nil {
		return nil
	}
	return st
}

// checkUpgrade: every node runs the new binary at the end, and every upgraded node caught up.
// What an old follower that cannot decode the new leader's log does — stops applying, or exits
// — is for state-converged, acked-writes-durable and no-crash.
func checkUpgrade(c *cluster, faults []Fault) *Verdict {
	v := newVerdict("upgrade")
	n := 0
	for _, f := range faults {
		if f.Kind != Upgrade || f.Node == "" {
			continue
		}
		n++
		if f.Problem != "" {
			v.problem("%s", f.Problem)
		}
	}
	if old := c.oldNodes(); old > 0 {
		v.problem("%d node(s) still run the old binary at the end (the scenario is too short for its node count)", old)
	}
	v.Detail = fmt.Sprintf("%d of %d nodes upgraded under load", n, len(c.nodes))
	return v
}
