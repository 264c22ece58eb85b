package region

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
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

// lockPrefix marks lockouts made by the L1 check, which the check may lift again when the anchor
// answers; a lockout by an operator or governance stays until they lift it.
const lockPrefix = "L1 unavailable: "

// anchorLoop is the leader's L1 check (DESIGN.md, "L1 checks"): each period it asks every
// tenant's anchor whether the root key is usable. A definite denial locks the tenant out at once;
// transient failures lock it out after the grace period.
func (n *Node) anchorLoop() {
	defer n.wg.Done()
	failingSince := map[string]time.Time{}
	var last time.Time
	// A new leader checks at once: the customer may have pulled the plug while no one was looking.
	became := make(chan struct{}, 1)
	cancel := n.cl.OnLeaderChange(func(c cluster.LeaderChange) {
		if c.IsSelf {
			select {
			case became <- struct{}{}:
			default:
			}
		}
	})
	defer cancel()
	// Wake often and compare with the period, so that a new period set through the log takes
	// effect without waiting out the old one.
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-became:
			last = time.Time{}
		case <-t.C:
		}
		if !n.cl.IsLeader() {
			clear(failingSince)
			last = time.Time{}
			continue
		}
		if time.Since(last) < n.state.Settings().AnchorCheckPeriod {
			continue
		}
		last = time.Now()
		n.checkAnchors(failingSince)
	}
}

func (n *Node) checkAnchors(failingSince map[string]time.Time) {
	settings := n.state.Settings()
	// Tenants that share an anchor URI share the L1 key: ask it once per sweep. (100,000 tenants
	// on one development anchor spent a third of the leader's CPU re-reading its file,
	// BenchmarkScale; against a KMS it would be 100,000 calls every period.)
	checked := make(map[string]error)
	for _, t := range n.state.ListTenants() {
		if t.Status == fsm.StatusRevoked || t.AnchorDeleted {
			continue
		}
		err, ok := checked[t.Anchor]
		if !ok {
			ctx, cancel := context.WithTimeout(context.Background(), min(settings.AnchorCheckPeriod, 30*time.Second))
			err = n.checkAnchor(ctx, t.Anchor)
			cancel()
			n.countAnchor("check", err)
			checked[t.Anchor] = err
		}
		autoLocked := t.Status == fsm.StatusLocked && strings.HasPrefix(t.LockReason, lockPrefix)
		switch {
		case err == nil:
			delete(failingSince, t.Name)
			if autoLocked {
				n.log.Info("L1 answers again; lifting the lockout", "tenant", t.Name)
				n.unlockTenant(t.Name)
			}
		case anchor.IsDenied(err):
			delete(failingSince, t.Name)
			if t.Status != fsm.StatusLocked {
				reason, _ := anchor.Reason(err)
				n.lockTenant(t.Name, lockPrefix+"the root key denied access ("+reason.String()+")")
			}
		default:
			first, ok := failingSince[t.Name]
			if !ok {
				failingSince[t.Name] = time.Now()
				first = time.Now()
			}
			n.log.Warn("L1 check failed transiently", "tenant", t.Name, "failing-for", time.Since(first).Round(time.Second), "err", err)
			if time.Since(first) >= settings.AnchorGracePeriod && t.Status != fsm.StatusLocked {
				n.lockTenant(t.Name, lockPrefix+"the root key has been unreachable for longer than the grace period")
			}
		}
	}
}

func (n *Node) checkAnchor(ctx context.Context, uri string) error {
	p, err := n.anchors.get(ctx, uri)
	if err != nil {
		return err
	}
	return p.Check(ctx)
}

func (n *Node) lockTenant(tenant, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.LockTenant(ctx, "", tenant, reason); err != nil {
		n.log.Error("locking out tenant failed", "tenant", tenant, "err", err)
		return
	}
	n.metrics.lockouts.Inc()
	n.log.Warn("tenant locked out", "tenant", tenant, "reason", reason)
}

func (n *Node) unlockTenant(tenant string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.UnlockTenant(ctx, "", tenant); err != nil {
		n.log.Error("lifting lockout failed", "tenant", tenant, "err", err)
	}
}
