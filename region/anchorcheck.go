package region

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
)

// lockPrefix marks lockouts made by the L1 check, which the check may lift again when the anchor
// answers; a lockout by an operator or governance stays until they lift it.
const lockPrefix = "L1 unavailable: "

// anchorChecker runs the leader's L1 checks (DESIGN.md, "L1 checks"). Each period it starts a
// round: every distinct anchor URI of the tenants that can still be locked out is checked once
// (tenants on one URI share the key), at most Config.AnchorCheckConcurrency at a time, each
// bounded by Config.AnchorCheckTimeout. A round does not wait for the checks of an earlier one: an
// anchor still being checked is skipped, so a customer's KMS that hangs holds one slot until its
// timeout while every other anchor is still asked each period — one hung KMS delays no other
// customer's kill switch. A round that cannot start because the previous one is still handing
// out its checks (more anchors than the concurrency gets through in a period) is counted in
// krypton_anchor_check_rounds_late_total.
//
// Owner: anchorLoop, which starts rounds while the node leads and, on losing leadership or
// stopping, cancels them and waits for the round and every check it started.
type anchorChecker struct {
	n     *Node
	slots chan struct{} // one token per check in flight, Config.AnchorCheckConcurrency
	wg    sync.WaitGroup

	mu           sync.Mutex
	inFlight     map[string]bool      // anchor URIs being checked
	dispatching  bool                 // a round is still starting its checks
	failingSince map[string]time.Time // tenant -> first transient failure, this leadership
}

func newAnchorChecker(n *Node) *anchorChecker {
	return &anchorChecker{
		n:            n,
		slots:        make(chan struct{}, n.cfg.anchorCheckConcurrency()),
		inFlight:     make(map[string]bool),
		failingSince: make(map[string]time.Time),
	}
}

// inFlightCount is the number of checks running now (a metric).
func (c *anchorChecker) inFlightCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inFlight)
}

// anchorLoop is the leader's L1 check loop; see anchorChecker.
func (n *Node) anchorLoop() {
	defer n.wg.Done()
	c := n.anchorChecks
	// A new leader checks at once: the customer may have pulled the plug while no one was looking.
	became := make(chan struct{}, 1)
	cancel := n.cl.OnLeaderChange(func(lc cluster.LeaderChange) {
		if lc.IsSelf {
			select {
			case became <- struct{}{}:
			default:
			}
		}
	})
	defer cancel()
	var last time.Time
	// lead's context ends with this node's leadership; nil while not leading.
	var lead *leadership
	stopLeading := func() {
		if lead == nil {
			return
		}
		lead.cancel()
		c.wg.Wait()
		c.mu.Lock()
		clear(c.failingSince)
		c.mu.Unlock()
		lead, last = nil, time.Time{}
	}
	defer stopLeading()
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
			stopLeading()
			continue
		}
		if lead == nil {
			lead = new(leadership)
			lead.ctx, lead.cancel = context.WithCancel(context.Background())
		}
		if time.Since(last) < n.state.Settings().AnchorCheckPeriod {
			continue
		}
		last = time.Now()
		if !c.startRound(lead.ctx) {
			n.metrics.anchorRoundsLate.Inc()
			n.log.Warn("L1 check round due while the previous one is still starting its checks; raise the anchor check concurrency",
				"concurrency", cap(c.slots))
		}
	}
}

// leadership is a context that ends when the node stops leading.
type leadership struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// startRound starts a round of checks on its own goroutine, unless the previous round is still
// starting its checks (then it returns false). ctx ends with the node's leadership.
func (c *anchorChecker) startRound(ctx context.Context) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dispatching {
		return false
	}
	c.dispatching = true
	c.wg.Add(1)
	go c.round(ctx)
	return true
}

// round groups the tenants by anchor URI and starts a check of each URI not already being
// checked, waiting for a free slot before each.
func (c *anchorChecker) round(ctx context.Context) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		c.dispatching = false
		c.mu.Unlock()
	}()
	byAnchor := make(map[string][]string)
	var order []string // URIs in the order of their first tenant (tenants are sorted by name)
	for _, t := range c.n.state.ListTenants() {
		if t.Status == fsm.StatusRevoked || t.AnchorDeleted {
			continue
		}
		if _, ok := byAnchor[t.Anchor]; !ok {
			order = append(order, t.Anchor)
		}
		byAnchor[t.Anchor] = append(byAnchor[t.Anchor], t.Name)
	}
	for _, uri := range order {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c.mu.Lock()
		busy := c.inFlight[uri]
		if !busy {
			c.inFlight[uri] = true
		}
		c.mu.Unlock()
		if busy {
			<-c.slots
			continue
		}
		c.wg.Add(1)
		go c.check(ctx, uri, byAnchor[uri])
	}
}

// check asks one anchor whether its key is usable and acts on the answer for each of tenants.
func (c *anchorChecker) check(ctx context.Context, uri string, tenants []string) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		delete(c.inFlight, uri)
		c.mu.Unlock()
		<-c.slots
	}()
	cctx, cancel := context.WithTimeout(ctx, c.n.cfg.anchorCheckTimeout())
	err := c.n.checkAnchor(cctx, uri)
	cancel()
	if ctx.Err() != nil {
		return // no longer the leader, or stopping: the next leader checks again at once
	}
	c.n.countAnchor("check", err)
	if err != nil && !anchor.IsDenied(err) {
		c.n.log.Warn("L1 check failed transiently", "anchor", anchor.Redact(uri), "tenants", len(tenants), "err", err)
	}
	for _, name := range tenants {
		c.decide(ctx, name, err)
	}
}

// decide locks tenant out, or lifts the L1 check's own lockout, after its anchor answered err.
// It reads the tenant's state now, not as the round found it: the check may have taken a while.
func (c *anchorChecker) decide(ctx context.Context, tenant string, err error) {
	t, lookErr := c.n.state.Tenant(tenant)
	if lookErr != nil || t.Status == fsm.StatusRevoked || t.AnchorDeleted {
		return
	}
	autoLocked := t.Status == fsm.StatusLocked && strings.HasPrefix(t.LockReason, lockPrefix)
	switch {
	case err == nil:
		c.mu.Lock()
		delete(c.failingSince, tenant)
		c.mu.Unlock()
		if autoLocked {
			c.n.log.Info("L1 answers again; lifting the lockout", "tenant", tenant)
			c.n.unlockTenant(ctx, tenant)
		}
	case anchor.IsDenied(err):
		c.mu.Lock()
		delete(c.failingSince, tenant)
		c.mu.Unlock()
		if t.Status != fsm.StatusLocked {
			reason, _ := anchor.Reason(err)
			c.n.lockTenant(ctx, tenant, lockPrefix+"the root key denied access ("+reason.String()+")")
		}
	default:
		now := time.Now()
		c.mu.Lock()
		first, ok := c.failingSince[tenant]
		if !ok {
			c.failingSince[tenant], first = now, now
		}
		c.mu.Unlock()
		if now.Sub(first) >= c.n.state.Settings().AnchorGracePeriod && t.Status != fsm.StatusLocked {
			c.n.lockTenant(ctx, tenant, lockPrefix+"the root key has been unreachable for longer than the grace period")
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

func (n *Node) lockTenant(ctx context.Context, tenant, reason string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := n.LockTenant(ctx, "", tenant, reason); err != nil {
		n.log.Error("locking out tenant failed", "tenant", tenant, "err", err)
		return
	}
	n.metrics.lockouts.Inc()
	n.log.Warn("tenant locked out", "tenant", tenant, "reason", reason)
}

func (n *Node) unlockTenant(ctx context.Context, tenant string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := n.UnlockTenant(ctx, "", tenant); err != nil {
		n.log.Error("lifting lockout failed", "tenant", tenant, "err", err)
	}
}
