package region

import (
	"context"
	"slices"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// leaseLoop keeps this node's serving lease fresh (DESIGN.md, "Serving leases"): every third of a
// lease period, and at once when the leader changes. The period is counted from when each request
// was sent, as the lease is, and is a third of the lease just granted: counted from the end of a
// slow or timed-out renewal, or from a lease duration read before the settings changed, one late
// renewal would let the lease lapse on a healthy node.
func (n *Node) leaseLoop() {
	defer n.wg.Done()
	kick := make(chan struct{}, 1)
	cancel := n.cl.OnLeaderChange(func(cluster.LeaderChange) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	defer cancel()
	for {
		d := n.state.Settings().LeaseDuration
		start := time.Now()
		if granted := n.renewLease(d); granted > 0 {
			d = granted
		}
		t := time.NewTimer(max(d/3-time.Since(start), 20*time.Millisecond))
		select {
		case <-n.stop:
			t.Stop()
			return
		case <-kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// renewLease asks the leader for a lease (or, on the leader, confirms leadership with a quorum).
// It returns the lease duration granted, or 0; a failure leaves the current lease to run out on
// its own.
func (n *Node) renewLease(d time.Duration) time.Duration {
	sent := n.lease.now()
	// A node that is no longer a voter gets no more grants; stop serving at once rather than at
	// the end of the lease, and keep the departures the fence must wait out.
	if voters, err := n.voters(); err == nil && !slices.Contains(voters, n.cfg.NodeID) {
		n.log.Debug("not a voter; no lease", "voters", voters)
		n.lease.drop()
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(d/3, 20*time.Millisecond))
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if n.cl.IsLeader() {
		if err := n.cl.Barrier(ctx); err != nil {
			return 0
		}
		n.lease.grant(sent, d, n.cl.Term())
		return d
	}
	client, _, err := n.peers.leader()
	if err != nil {
		n.log.Debug("no leader to renew the lease with", "err", err)
		return 0
	}
	resp, err := client.RenewLease(ctx, &kv1.RenewLeaseRequest{NodeId: n.cfg.NodeID, AppliedIndex: n.state.AppliedIndex()})
	if err != nil {
		n.log.Debug("lease renewal failed", "err", err)
		return 0
	}
	// Serve under the grant only once everything committed before it is applied here: a
	// revocation committed before the grant then already refuses its key on this node.
	if err := n.cl.WaitApplied(ctx, resp.GetCommitIndex()); err != nil {
		n.log.Debug("lease granted but the log is not applied in time", "commit-index", resp.GetCommitIndex(), "err", err)
		return 0
	}
	granted := resp.GetLeaseDuration().AsDuration()
	n.lease.grant(sent, granted, resp.GetTerm())
	return granted
}
