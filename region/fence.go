package region

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The revocation fence (DESIGN.md, "The revocation fence"): fence runs on the node that made a
// revocation and waits for every voter (voters.go) to confirm it, or to have surely lost the lease
// it may serve under (lease.go); fencePeer asks one peer, whose Fence handler confirms once
// waitApplied says so; waitApplied counts an index as applied only once the node's gateways have
// acknowledged the key events up to it (keyevents.go).

// fence returns once every voter has applied index, or can no longer be serving under a lease
// granted before it (DESIGN.md, "The revocation fence"): a full lease from the fence's start at
// most, and on the leader no later than the end of the last lease it granted the voter.
func (n *Node) fence(ctx context.Context, index uint64) (*kv1.FenceResult, error) {
	start := time.Now()
	wait := n.fenceWait()
	deadline := start.Add(wait)
	voters, err := n.voters()
	if err != nil {
		return nil, ErrNoLeader
	}
	// Read after index was applied here: a grant made before it is on record (lease.go, grantLog).
	runsOut := n.leaseRunsOut(start, wait)
	var (
		mu                 sync.Mutex
		confirmed, expired []string
		wg                 sync.WaitGroup
	)
	done := func(id string, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		if ok {
			confirmed = append(confirmed, id)
		} else {
			expired = append(expired, id)
		}
	}
	// Non-voters are never granted a lease, so never serve; voters must confirm or run out.
	for _, id := range voters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id == n.cfg.NodeID {
				done(id, n.waitApplied(ctx, index, time.Until(deadline)) >= index)
				return
			}
			// A voter whose last lease surely ran out before the fence's full wait is waited for
			// only until then; one whose lease ran out already is not asked at all.
			done(id, n.fencePeer(ctx, id, index, runsOut(id)))
		}()
	}
	// A node removed lately may still hold a lease granted before its removal (this node saw it
	// gone at t, so the removal committed before t): its lease has run out by t + wait.
	for id, gone := range n.watch.departed() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done(id, n.fencePeer(ctx, id, index, gone.Add(wait)))
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		// The wait was cut short: a node that did not confirm may still be serving.
		return nil, ErrFenceTimeout
	}
	n.metrics.fenceSeconds.Observe(time.Since(start).Seconds())
	n.metrics.fenceExpired.Add(float64(len(expired)))
	return &kv1.FenceResult{Index: index, ConfirmedNodes: confirmed, LeaseExpiredNodes: expired, EffectiveAt: timestamppb.Now()}, nil
}

// fenceWait is the longest a lease granted before now may run: lease × (1 + drift), for the longer
// lease while one was in force lately.
func (n *Node) fenceWait() time.Duration {
	return n.cfg.leaseFenceWait(n.leaseBound.max(n.state.Settings().LeaseDuration))
}

// fencePeer asks one node to confirm index until the deadline; false means the deadline passed
// without a confirmation (the node's lease has run out by then).
func (n *Node) fencePeer(ctx context.Context, id string, index uint64, deadline time.Time) bool {
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 || ctx.Err() != nil {
			return false
		}
		if client, err := n.peers.node(id); err == nil {
			cctx, cancel := context.WithDeadline(ctx, deadline)
			resp, err := client.Fence(cctx, &kv1.FenceRequest{Index: index, Wait: durationpb.New(remaining)})
			cancel()
			if err == nil && resp.GetReached() {
				return true
			}
			if status.Code(err) == codes.Unavailable {
				n.peers.redial(id)
			}
		}
		t := time.NewTimer(min(50*time.Millisecond, max(remaining, 0)))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// Fence waits until this node has applied the log up to the given index. Any voter may ask: a
// revocation may be fenced by whichever node took the operator's call.
func (s *nodeService) Fence(ctx context.Context, req *kv1.FenceRequest) (*kv1.FenceResponse, error) {
	n := s.n
	if err := n.authorizeVoter(ctx, ""); err != nil {
		return nil, err
	}
	wait := req.GetWait().AsDuration()
	if d, ok := ctx.Deadline(); ok {
		// Leave time to answer before the caller gives up.
		wait = min(wait, time.Until(d)-20*time.Millisecond)
	}
	applied := n.waitApplied(ctx, req.GetIndex(), wait)
	return &kv1.FenceResponse{AppliedIndex: applied, Reached: applied >= req.GetIndex()}, nil
}

// waitApplied waits up to wait for the state machine to apply index, and returns the applied index.
// It polls: fences are rare (one per revocation) and a millisecond is well inside their budget.
func (n *Node) waitApplied(ctx context.Context, index uint64, wait time.Duration) uint64 {
	deadline := time.Now().Add(wait)
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		// Gateways watching key events must have dropped what the change revokes (keyevents.go).
		applied := n.events.settled(n.state.AppliedIndex())
		if applied >= index || !time.Now().Before(deadline) {
			return applied
		}
		select {
		case <-ctx.Done():
			return n.events.settled(n.state.AppliedIndex())
		case <-n.stop:
			return n.events.settled(n.state.AppliedIndex())
		case <-t.C:
		}
	}
}
