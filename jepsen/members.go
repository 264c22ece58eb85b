package jepsen

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// member removes a follower from the configuration while it is down, wipes its data and starts it
// again as a new node that joins the region.
func (nm *nemesis) member(ctx context.Context, l int, f *Fault) error {
	c := nm.c
	if l < 0 {
		f.Detail = "no leader"
		return nil
	}
	target := nm.follower(l)
	if target < 0 {
		f.Detail = "no follower"
		return nil
	}
	id := c.nodes[target].id
	f.Detail = id
	// Half the time the node is removed while it still runs, cut off from the others, so that it
	// cannot learn of its removal: it may hold a lease granted just before, which the fence of
	// any revocation in the next lease periods must wait out (region/DESIGN.md, "The revocation
	// fence"); clients still reach it. Otherwise it is killed first.
	running := c.net.canPartition() && nm.r.IntN(2) == 0
	if running {
		var rest []int
		for i := range c.nodes {
			if i != target {
				rest = append(rest, i)
			}
		}
		if err := nm.partition([]int{target}, rest); err != nil {
			return err
		}
		f.Detail = id + " (removed while running, cut off)"
	} else {
		c.kill(target)
	}
	nm.logf("nemesis: member: removing, wiping and re-adding %s", f.Detail)
	// Remove through whichever node answers (writes are forwarded to the leader).
	removed := false
	for attempt := 0; attempt < 20 && !removed && ctx.Err() == nil; attempt++ {
		for i := range c.nodes {
			if i == target || !c.running(i) {
				continue
			}
			a, err := nm.cs.admin(i)
			if err != nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = a.RemovePeer(cctx, &kv1.RemovePeerRequest{RequestId: fmt.Sprintf("jepsen-remove-%s-%d", id, nm.h.now()), NodeId: id})
			cancel()
			if err == nil || strings.Contains(err.Error(), "NotFound") {
				removed = true
				break
			}
		}
		if !removed {
			sleep(ctx, 500*time.Millisecond)
		}
	}
	sleep(ctx, nm.hold())
	if running {
		c.kill(target)
		c.net.heal()
	}
	if err := c.wipe(target); err != nil {
		return err
	}
	sleep(ctx, nm.c.timing.Election)
	if err := c.start(target, false); err != nil {
		return err
	}
	return nm.ensureVoter(ctx, target, 30*time.Second)
}

// ensureVoter waits until node i is a voter again, asking the region to add it (Join) meanwhile.
func (nm *nemesis) ensureVoter(ctx context.Context, i int, d time.Duration) error {
	c := nm.c
	deadline := time.Now().Add(d)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if slices.Contains(nm.voters(ctx), c.nodes[i].id) {
			return nil
		}
		for j := range c.nodes {
			if j == i || !c.running(j) {
				continue
			}
			a, err := nm.cs.admin(j)
			if err != nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = a.Join(cctx, &kv1.JoinRequest{RequestId: fmt.Sprintf("jepsen-join-%s-%d", c.nodes[i].id, nm.h.now()), NodeId: c.nodes[i].id, RaftAddress: c.addr(c.host(i), 1)})
			cancel()
			if err == nil {
				break
			}
		}
		sleep(ctx, 500*time.Millisecond)
	}
	if slices.Contains(nm.voters(ctx), c.nodes[i].id) {
		return nil
	}
	return fmt.Errorf("jepsen: %s did not become a voter again within %s", c.nodes[i].id, d)
}

// voters is the Raft configuration as the leader reports it.
func (nm *nemesis) voters(ctx context.Context) []string {
	l := nm.leader(ctx)
	if l < 0 {
		return nil
	}
	a, err := nm.cs.admin(l)
	if err != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := a.ListPeers(cctx, &kv1.ListPeersRequest{})
	if err != nil {
		return nil
	}
	var ids []string
	for _, p := range resp.GetPeers() {
		if p.GetSuffrage() == kv1.Suffrage_SUFFRAGE_VOTER {
			ids = append(ids, p.GetNodeId())
		}
	}
	sort.Strings(ids)
	return ids
}
