package region

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// lease is this node's serving lease (see DESIGN.md, "Serving leases"). It is read on every wrap,
// so it is lock-free: the deadline is kept as nanoseconds on the process's monotonic clock, which
// wall-clock jumps cannot move. A lease is only ever extended once the node has applied the log up
// to the commit index its grant carries (leaseLoop), so holding one means being current.
type lease struct {
	epoch time.Time    // process start; the origin of the monotonic readings below
	until atomic.Int64 // nanoseconds since epoch when the lease runs out; 0 = no lease
	term  atomic.Uint64

	mu    sync.Mutex // serialises grant and drop (never taken by check)
	drops uint64     // how many times the lease was dropped; guarded by mu
}

func newLease() *lease { return &lease{epoch: time.Now()} }

// now reads the monotonic clock as nanoseconds since epoch.
func (l *lease) now() int64 { return int64(time.Since(l.epoch)) }

// dropped returns how many times the lease has been dropped: a renewal reads it before it sends
// its request and hands it to grant.
func (l *lease) dropped() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.drops
}

// grant extends the lease to sentAt+d, where sentAt is when the renewal request was sent (a
// monotonic reading from now()), so that network delay only ever shortens a lease. A grant never
// shortens a lease already held, and is ignored if the lease was dropped since drops was read
// (before the request was sent): renewals overlap, and one sent before the node learnt it was no
// longer a voter must not make it serve again after it stopped.
func (l *lease) grant(drops uint64, sentAt int64, d time.Duration, term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drops != drops {
		return
	}
	if term > l.term.Load() {
		l.term.Store(term)
	}
	if until := sentAt + int64(d); until > l.until.Load() {
		l.until.Store(until)
	}
}

// drop ends the lease at once: on shutdown, or when the node learns it may be stale.
func (l *lease) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drops++
	l.until.Store(0)
}

// check reports whether the node may serve now.
func (l *lease) check() error {
	if unsafeServeWithoutLease {
		return nil
	}
	until := l.until.Load()
	if until == 0 || l.now() >= until {
		return ErrNoLease
	}
	return nil
}

// expiresIn is how long the lease has left; zero or negative when there is none.
func (l *lease) expiresIn() time.Duration {
	until := l.until.Load()
	if until == 0 {
		return 0
	}
	return time.Duration(until - l.now())
}

// leaseLoop keeps this node's serving lease fresh (DESIGN.md, "Serving leases"): it starts a
// renewal every third of a lease period, and at once when the leader changes, without waiting for
// the renewals still under way. Each may take up to a whole lease period: a grant is counted from
// when its request was sent, so a late answer only ever shortens it, and one that comes back
// within a period still extends the lease. A loaded node or leader (a node serving 10,000
// connections on a starved machine answered a renewal in over a third of a period) then keeps
// serving as long as renewals take less than two thirds of a period, where a renewal that had to
// finish within the third before the next lapsed the lease.
//
// The period is a third of the shorter of the duration in force here and the one last granted,
// counted from when the last renewal started, and is worked out again as each renewal ends: the
// two durations differ while a settings change replicates, and a period read from the longer one
// would let a shorter grant run out before the next renewal.
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
	// ended receives each renewal's grant (0: none); its room means a renewal never waits to
	// send, also once this loop has returned.
	ended := make(chan time.Duration, maxRenewalsInFlight)
	inFlight := 0
	var granted time.Duration // the duration last granted; 0 before the first grant
	var started time.Time     // when the last renewal started
	for {
		// A period's renewals, plus one the leader's change asked for, are all that may be under
		// way: more would only mean that renewals never return, which the lease already shows.
		// At the limit, the next starts as soon as one ends (the timer below has run out by then).
		if inFlight < maxRenewalsInFlight {
			d := n.state.Settings().LeaseDuration
			inFlight++
			started = time.Now()
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				ended <- n.renewLease(d)
			}()
		}
	wait:
		for {
			var next <-chan time.Time
			var t *time.Timer
			if inFlight < maxRenewalsInFlight {
				period := n.state.Settings().LeaseDuration
				if granted > 0 {
					period = min(period, granted)
				}
				t = time.NewTimer(max(period/3-time.Since(started), 20*time.Millisecond))
				next = t.C
			}
			select {
			case <-n.stop:
				stopTimer(t)
				return
			case <-kick:
				stopTimer(t)
				break wait
			case <-next:
				break wait
			case g := <-ended:
				inFlight--
				if g > 0 {
					granted = g
				}
			}
			stopTimer(t)
		}
	}
}

// stopTimer stops t, if there is one.
func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// maxRenewalsInFlight bounds the lease renewals under way at once: the three of a lease period,
// each of which may take the whole period, and one started when the leader changed.
const maxRenewalsInFlight = 4

// renewLease asks the leader for a lease (or, on the leader, confirms leadership with a quorum),
// giving it up to d, the lease duration: a grant that came later would have run out already. It
// returns the lease duration granted, or 0; a failure leaves the current lease to run out on its
// own.
func (n *Node) renewLease(d time.Duration) time.Duration {
	drops := n.lease.dropped()
	if n.shut.Load() {
		return 0 // shutdown sets shut before it drops the lease: drops may be read after the drop
	}
	sent := n.lease.now()
	// A node that is no longer a voter gets no more grants; stop serving at once rather than at
	// the end of the lease, and keep the departures the fence must wait out.
	if voters, err := n.voters(); err == nil && !slices.Contains(voters, n.cfg.NodeID) {
		n.log.Debug("not a voter; no lease", "voters", voters)
		n.lease.drop()
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(d, 20*time.Millisecond))
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
		n.leadingSince() // the start of this term's leadership, on record for the fence
		n.lease.grant(drops, sent, d, n.cl.Term())
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
	n.lease.grant(drops, sent, granted, resp.GetTerm())
	return granted
}

// RenewLease grants a serving lease, but only after confirming with a quorum that this node still
// leads (the read barrier's VerifyLeader): a deposed leader cannot grant (DESIGN.md).
func (s *nodeService) RenewLease(ctx context.Context, req *kv1.RenewLeaseRequest) (*kv1.RenewLeaseResponse, error) {
	n := s.n
	if err := n.authorizeVoter(ctx, req.GetNodeId()); err != nil {
		return nil, err
	}
	if !n.cl.IsLeader() {
		return nil, ErrNotLeader
	}
	if err := n.cl.Barrier(ctx); err != nil {
		return nil, ErrNotLeader
	}
	// On record before the commit index is read: a grant that carries an index below a
	// revocation's is then on record for that revocation's fence (grantLog).
	n.grants.granted(req.GetNodeId())
	// Read after the barrier: any revocation committed before this grant is at or below it.
	return &kv1.RenewLeaseResponse{
		Term:          n.cl.Term(),
		CommitIndex:   n.cl.CommitIndex(),
		LeaseDuration: durationpb.New(n.state.Settings().LeaseDuration),
	}, nil
}

// leaseBound remembers a longer lease duration that was in force until lately. Grants made under
// it may still run after the region's lease was shortened (a node cut off at the time keeps its
// grant), so a revocation fence must wait for the longer of the two until such grants have surely
// run out (DESIGN.md, "The revocation fence").
type leaseBound struct {
	mu      sync.Mutex    // guards the fields below
	inForce time.Duration // the lease duration as this node last applied it; 0 before the first
	longer  time.Duration // a longer duration in force until lately
	until   time.Time     // when grants made under longer have run out
}

// note records the lease duration now in force (on every settings change and restore). drift is
// Config.ClockDrift.
func (b *leaseBound) note(d time.Duration, drift float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	prev := b.inForce
	if prev == 0 {
		// Replaying the log from the start: the defaults were in force before.
		prev = fsm.DefaultSettings().LeaseDuration
	}
	b.inForce = d
	if prev > d {
		// A grant made under prev was requested before this change committed, so before now.
		until := time.Now().Add(time.Duration(float64(prev) * (1 + drift)))
		if prev > b.longer || time.Now().After(b.until) {
			b.longer = prev
		}
		if until.After(b.until) {
			b.until = until
		}
	}
}

// max returns the longest lease a node may still hold, given the one in force now.
func (b *leaseBound) max(current time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.longer > current && time.Now().Before(b.until) {
		return b.longer
	}
	return current
}

// grantLog is the leader's record of the serving leases it granted (DESIGN.md, "The revocation
// fence"), so that a fence need not wait a full lease for a voter that went silent long before.
// For each voter it keeps when this node last granted it a lease, read after the request arrived
// (so at or after the voter's own lease start, its send time) and before the grant's commit index
// is read; and when this node first saw itself lead in its current term.
//
// A fence on this node, leading in term T, at index I: a lease a voter may still serve under
// without having applied I comes from a grant whose commit index is below I. A grant by a leader
// of a later term carries I (Raft's leader completeness: I was committed by T), and a leader of an
// earlier term granted before this node was elected (a deposed leader cannot pass the barrier
// afterwards), so before since. This node's own grants are on record: one whose commit index is
// below I read it before I was committed here, and was recorded before that, so before the fence
// reads the record. Hence every such lease has run out by max(last grant, since) + the fence's
// full wait (lease × (1 + drift), the longer lease while leaseBound holds one); and a voter with
// no grant on record needs waiting out only until since + that wait.
type grantLog struct {
	mu    sync.Mutex           // guards the fields below
	last  map[string]time.Time // node ID -> when this node last granted it a lease
	term  uint64               // the term since belongs to
	since time.Time            // when this node first saw itself lead in term
}

// granted records a grant to id now (monotonic time).
func (g *grantLog) granted(id string) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[string]time.Time{}
	}
	if now.After(g.last[id]) {
		g.last[id] = now
	}
}

// lastGrant returns when this node last granted id a lease; zero if never.
func (g *grantLog) lastGrant(id string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last[id]
}

// leading records that this node leads in term as of now, and returns when it first saw itself
// lead in term.
func (g *grantLog) leading(term uint64, now time.Time) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.term != term {
		g.term, g.since = term, now
	}
	return g.since
}

// leadingSince returns when this node first saw itself lead in the term it leads now; false if it
// does not lead (its fences then wait a full lease for every voter that does not confirm). The
// term is read on both sides of the state so that the two belong together.
func (n *Node) leadingSince() (time.Time, bool) {
	term := n.cl.Term()
	if !n.cl.IsLeader() || n.cl.Term() != term {
		return time.Time{}, false
	}
	return n.grants.leading(term, time.Now()), true
}

// leaseRunsOut returns, for a fence that began at start and waits wait at most, a function giving
// when a voter's lease granted before the fence has surely run out: start + wait on a node that
// does not lead, and no later than max(last grant, since) + wait on the leader (grantLog).
func (n *Node) leaseRunsOut(start time.Time, wait time.Duration) func(id string) time.Time {
	full := start.Add(wait)
	since, ok := n.leadingSince()
	if !ok {
		return func(string) time.Time { return full }
	}
	return func(id string) time.Time {
		from := since
		if last := n.grants.lastGrant(id); last.After(from) {
			from = last
		}
		if end := from.Add(wait); end.Before(full) {
			return end
		}
		return full
	}
}
