package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"time"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Nemesis kinds. Each can run alone or mixed in a scenario.
const (
	KillLeader        = "kill-leader"        // SIGKILL the leader, restart it later
	KillFollower      = "kill-follower"      // SIGKILL a follower, restart it later
	KillAll           = "kill-all"           // SIGKILL every node at once, restart them all
	PauseLeader       = "pause-leader"       // SIGSTOP the leader past the election timeout and lease
	PauseFollower     = "pause-follower"     // SIGSTOP a follower likewise
	PartitionLeader   = "partition-leader"   // the leader in a minority
	PartitionFollower = "partition-follower" // one follower cut off while clients still reach it
	Bridge            = "bridge"             // two halves that only one node connects
	OneWay            = "one-way"            // the leader's packets to one follower are dropped
	Slow              = "slow"               // packet loss (and delay, with netem) on one node's link
	Member            = "member"             // a follower removed, wiped, and joined again
	Transfer          = "transfer"           // leadership transfers under load
	AnchorFlaky       = "anchor-flaky"       // a tenant's L1 fails transiently
	AnchorDead        = "anchor-dead"        // a tenant's L1 denies definitely, then returns
	AnchorHung        = "anchor-hung"        // one tenant's L1 answers nothing while another's is disabled
	// SnapshotRestore restores, on the leader, a snapshot saved early in the run once a
	// revocation it lacks was acknowledged; the region must refuse it (restore.go).
	SnapshotRestore = "snapshot-restore"

	// Disk and clock nemeses (faults.go; DESIGN.md, "Disks" and "Clocks").
	DiskFull       = "disk-full"       // one node's filesystem filled until ENOSPC, then freed
	SlowFsync      = "slow-fsync"      // one node's disk throttled to a few writes a second
	CorruptRestart = "corrupt-restart" // one node stopped, a bbolt file of its state corrupted, started: it must refuse; then reset and rejoined
	// ClockJump steps the machine's wall clock by hours (clock_settime): it moves every process's
	// wall clock at once, so it runs only in make jepsen's clock scenario, not in AllNemeses.
	ClockJump = "clock-jump"

	// Upgrade replaces the next node still on the previous release's binary (Options.OldBinary)
	// with the binary under test, and hands it the leadership over the old followers
	// (upgrade.go). Only in a scenario that lists it, never in AllNemeses.
	Upgrade = "upgrade"

	// Governance nemeses: only in a scenario with Governance set (a no-op otherwise).
	GovernanceKill      = "governance-kill"      // SIGKILL the governance leader (or its only node), restart it later
	GovernancePartition = "governance-partition" // the region's leader cut off from every governance node
	// GovernanceIsolate cuts the governance leader off from the other governance nodes (three
	// or more) while the region and the clients still reach it: it loses leadership, and a feed
	// it serves must end (StaleAfter) so that the region moves to a node that hears the leader.
	GovernanceIsolate = "governance-isolate"
	// GovernanceKillSwitch deletes a tenant's anchor pointer at governance (DeleteAnchor with
	// wait: every region applied and fenced it), holds, and sets it again (SetAnchor).
	GovernanceKillSwitch = "governance-kill-switch"
)

// AllNemeses lists every kind.
var AllNemeses = []string{KillLeader, KillFollower, KillAll, PauseLeader, PauseFollower, PartitionLeader,
	PartitionFollower, Bridge, OneWay, Slow, Member, Transfer, AnchorFlaky, AnchorDead, AnchorHung, SnapshotRestore,
	DiskFull, SlowFsync, CorruptRestart}

// GovernanceNemeses lists the governance kinds (not in AllNemeses: the mixed scenarios run
// without governance).
var GovernanceNemeses = []string{GovernanceKill, GovernancePartition, GovernanceIsolate, GovernanceKillSwitch}

// needsNetwork are the kinds that need the netns network.
var needsNetwork = map[string]bool{PartitionLeader: true, PartitionFollower: true, Bridge: true, OneWay: true, Slow: true,
	GovernancePartition: true, GovernanceIsolate: true, RegionGovernancePartition: true, RegionsPartition: true}

// Fault is one injected fault, as the report shows it.
type Fault struct {
	Kind   string `json:"kind"`
	Start  int64  `json:"start-ns"`
	End    int64  `json:"end-ns"`
	Detail string `json:"detail"`
	// Governance kill switch only: when DeleteAnchor (with wait) was acknowledged, and when the
	// first SetAnchor that lifted it was invoked; 0 if that did not happen.
	Acked  int64 `json:"acked-ns,omitempty"`
	Lifted int64 `json:"lifted-ns,omitempty"`
	// Snapshot restore only: what the region did with the old snapshot (RestoreRefused, ...)
	// and the acknowledged revocation (op id) the snapshot lacks.
	Restore    string `json:"restore,omitempty"`
	Revocation int    `json:"revocation,omitempty"`
	// Disk and clock nemeses: the node hit, and what went wrong (the disk-faults checker).
	Node    string `json:"node,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// nemesis injects faults into a cluster.
type nemesis struct {
	c    *cluster
	cs   *conns
	h    *history
	r    *rand.Rand
	logf func(string, ...any)

	mu     sync.Mutex // guards faults and active, which the progress line reads, and snap
	faults []Fault
	active string         // the fault now in force
	snap   *savedSnapshot // the backup SnapshotRestore restores (restore.go)
	// rec, when set, records this nemesis's faults instead (a second region's nemesis records
	// into the first's: one list of faults for the run, multiregion.go).
	rec *nemesis
}

// recorder is the nemesis that records nm's faults.
func (nm *nemesis) recorder() *nemesis {
	if nm.rec != nil {
		return nm.rec
	}
	return nm
}

// begin starts recording a fault of kind; finish ends it.
func (nm *nemesis) begin(kind string) *Fault {
	nm.setActive(kind)
	return &Fault{Kind: kind, Start: nm.h.now()}
}

func (nm *nemesis) finish(f *Fault) {
	f.End = nm.h.now()
	r := nm.recorder()
	r.mu.Lock()
	r.faults = append(r.faults, *f)
	r.active = ""
	r.mu.Unlock()
	nm.logf("nemesis: %s healed (%s)", f.Kind, f.Detail)
}

func (nm *nemesis) setActive(kind string) {
	nm = nm.recorder()
	nm.mu.Lock()
	defer nm.mu.Unlock()
	nm.active = kind
}

// status returns the fault in force and how many have been injected.
func (nm *nemesis) status() (string, int) {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return nm.active, len(nm.faults)
}

// injected returns the faults so far.
func (nm *nemesis) injected() []Fault {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return append([]Fault(nil), nm.faults...)
}

// leader asks every running node and returns the index of the node that says it leads in the
// highest term, or -1.
func (nm *nemesis) leader(ctx context.Context) int {
	best, term := -1, uint64(0)
	for i := range nm.c.nodes {
		if !nm.c.running(i) {
			continue
		}
		a, err := nm.cs.admin(i)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := a.Status(cctx, &kv1.StatusRequest{})
		cancel()
		if err == nil && st.GetRaftState() == kv1.RaftState_RAFT_STATE_LEADER && st.GetTerm() >= term {
			best, term = i, st.GetTerm()
		}
	}
	return best
}

// waitLeader waits up to d for a leader.
func (nm *nemesis) waitLeader(ctx context.Context, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		if l := nm.leader(ctx); l >= 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return l
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// follower picks a running node other than the leader l.
func (nm *nemesis) follower(l int) int {
	var fs []int
	for i := range nm.c.nodes {
		if i != l && nm.c.running(i) {
			fs = append(fs, i)
		}
	}
	if len(fs) == 0 {
		return -1
	}
	return fs[nm.r.IntN(len(fs))]
}

// hold is how long a fault lasts: past the election timeout and, usually, past the serving
// lease, so that leases really expire.
func (nm *nemesis) hold() time.Duration {
	t := nm.c.timing
	base := max(3*t.Election, t.Lease+t.Lease/4)
	return base + time.Duration(nm.r.IntN(2500))*time.Millisecond
}

// partition cuts every pair of the region's nodes (indices in c.nodes) in different groups,
// both ways.
func (nm *nemesis) partition(groups ...[]int) error {
	hosts := make([][]int, len(groups))
	for gi, g := range groups {
		for _, i := range g {
			hosts[gi] = append(hosts[gi], nm.c.host(i))
		}
	}
	return nm.partitionHosts(hosts...)
}

// partitionHosts cuts every pair of network hosts (region nodes: c.host(i); governance nodes:
// c.govBase+j) in different groups, both ways.
func (nm *nemesis) partitionHosts(groups ...[]int) error {
	for gi, g := range groups {
		for gj, h := range groups {
			if gi == gj {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					if err := nm.c.net.drop(a, b); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func (nm *nemesis) ids(is []int) string {
	var s []string
	for _, i := range is {
		s = append(s, nm.c.nodes[i].id)
	}
	return strings.Join(s, ",")
}

// inject runs one fault of kind from start to heal; it returns when the fault is healed.
func (nm *nemesis) inject(ctx context.Context, kind string) error {
	c := nm.c
	n := len(c.nodes)
	f := nm.begin(kind)
	defer func() { nm.finish(f) }()

	l := nm.leader(ctx)
	hold := nm.hold()
	switch kind {
	case KillLeader, KillFollower, PauseLeader, PauseFollower:
		target := l
		if kind == KillFollower || kind == PauseFollower || l < 0 {
			target = nm.follower(l)
		}
		if target < 0 {
			f.Detail = "no target"
			return nil
		}
		f.Detail = c.nodes[target].id
		nm.logf("nemesis: %s %s for %s", kind, c.nodes[target].id, hold)
		if strings.HasPrefix(kind, "kill") {
			c.kill(target)
			sleep(ctx, hold)
			return c.start(target, false)
		}
		c.signal(target, syscall.SIGSTOP)
		sleep(ctx, hold)
		c.signal(target, syscall.SIGCONT)
		return nil
	case KillAll:
		f.Detail = "all"
		nm.logf("nemesis: kill-all for %s", hold)
		for i := range n {
			c.kill(i)
		}
		sleep(ctx, hold)
		for i := range n {
			if err := c.start(i, false); err != nil {
				return err
			}
		}
		return nil
	case PartitionLeader, PartitionFollower, Bridge, OneWay, Slow:
		defer c.net.heal()
		var err error
		switch kind {
		case PartitionLeader:
			if l < 0 {
				l = 0
			}
			minority := []int{l}
			var rest []int
			for i := range n {
				if i != l {
					rest = append(rest, i)
				}
			}
			nm.r.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
			for len(minority) < (n-1)/2 {
				minority, rest = append(minority, rest[0]), rest[1:]
			}
			f.Detail = nm.ids(minority) + " | " + nm.ids(rest)
			err = nm.partition(minority, rest)
		case PartitionFollower:
			fo := nm.follower(l)
			if fo < 0 {
				fo = 0
			}
			var rest []int
			for i := range n {
				if i != fo {
					rest = append(rest, i)
				}
			}
			f.Detail = nm.ids([]int{fo}) + " | " + nm.ids(rest)
			err = nm.partition([]int{fo}, rest)
		case Bridge:
			perm := nm.r.Perm(n)
			half := n / 2
			a, b, bridge := perm[:half], perm[half+1:], perm[half]
			if n == 3 {
				a, b, bridge = perm[:1], perm[2:], perm[1]
			}
			f.Detail = nm.ids(a) + " <" + c.nodes[bridge].id + "> " + nm.ids(b)
			err = nm.partition(a, b)
		case OneWay:
			if l < 0 {
				l = 0
			}
			fo := nm.follower(l)
			if fo < 0 {
				fo = (l + 1) % n
			}
			f.Detail = c.nodes[l].id + " -/-> " + c.nodes[fo].id
			err = c.net.drop(c.host(l), c.host(fo))
		case Slow:
			t := nm.r.IntN(n)
			loss := 10 + nm.r.IntN(30)
			f.Detail = fmt.Sprintf("%s loss %d%%, slow link", c.nodes[t].id, loss)
			err = c.net.slow(c.host(t), loss, 50)
		}
		if err != nil {
			return err
		}
		nm.logf("nemesis: %s %s for %s", kind, f.Detail, hold)
		sleep(ctx, hold)
		return nil
	case Member:
		return nm.member(ctx, l, f)
	case DiskFull:
		return nm.diskFull(ctx, l, hold, f)
	case SlowFsync:
		return nm.slowFsync(ctx, l, hold, f)
	case CorruptRestart:
		return nm.corruptRestart(ctx, l, f)
	case ClockJump:
		return nm.clockJump(ctx, l, hold, f)
	case SnapshotRestore:
		return nm.restore(ctx, f)
	case Upgrade:
		return nm.upgrade(ctx, l, hold, f)
	case GovernanceKill:
		if len(c.gov) == 0 {
			f.Detail = "no governance"
			return nil
		}
		g := nm.govLeader(ctx)
		if g < 0 {
			g = nm.r.IntN(len(c.gov))
		}
		f.Detail = c.gov[g].id
		nm.logf("nemesis: %s %s for %s", kind, f.Detail, hold)
		killNode(c.gov[g])
		sleep(ctx, hold)
		return c.startGov(g, false)
	case GovernancePartition:
		if len(c.gov) == 0 {
			f.Detail = "no governance"
			return nil
		}
		defer c.net.heal()
		if l < 0 {
			l = 0
		}
		var gs []int
		for j := range c.gov {
			gs = append(gs, c.govBase+j)
		}
		// The leader's feed is cut, and so is any new leader's if it moves back; the other
		// region nodes keep their links to governance, so a leader elected among them (after a
		// region fault) follows the feed again.
		f.Detail = c.nodes[l].id + " | governance"
		if err := nm.partitionHosts([]int{c.host(l)}, gs); err != nil {
			return err
		}
		nm.logf("nemesis: %s %s for %s", kind, f.Detail, hold)
		sleep(ctx, hold)
		return nil
	case GovernanceIsolate:
		if len(c.gov) < 3 {
			f.Detail = "needs three governance nodes"
			return nil
		}
		defer c.net.heal()
		g := nm.govLeader(ctx)
		if g < 0 {
			g = nm.r.IntN(len(c.gov))
		}
		var rest []int
		for j := range c.gov {
			if j != g {
				rest = append(rest, c.govBase+j)
			}
		}
		f.Detail = c.gov[g].id + " | other governance nodes"
		if err := nm.partitionHosts([]int{c.govBase + g}, rest); err != nil {
			return err
		}
		nm.logf("nemesis: %s %s for %s", kind, f.Detail, hold)
		sleep(ctx, hold)
		return nil
	case GovernanceKillSwitch:
		if len(c.gov) == 0 {
			f.Detail = "no governance"
			return nil
		}
		return nm.killSwitch(ctx, hold, f)
	case Transfer:
		f.Detail = "transfers"
		deadline := time.Now().Add(hold)
		count := 0
		for time.Now().Before(deadline) && ctx.Err() == nil {
			l := nm.leader(ctx)
			if l < 0 {
				sleep(ctx, 200*time.Millisecond)
				continue
			}
			target := nm.follower(l)
			a, err := nm.cs.admin(l)
			if err == nil && target >= 0 {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = a.TransferLeadership(cctx, &kv1.TransferLeadershipRequest{RequestId: fmt.Sprintf("jepsen-transfer-%d", nm.h.now()), TargetId: c.nodes[target].id})
				cancel()
				if err == nil {
					count++
				}
			}
			sleep(ctx, time.Duration(300+nm.r.IntN(700))*time.Millisecond)
		}
		f.Detail = fmt.Sprintf("%d transfers", count)
		return nil
	case AnchorFlaky, AnchorDead:
		t := nm.r.IntN(len(c.anchors))
		mode := "unavailable"
		if kind == AnchorDead {
			mode = "disabled"
		}
		f.Detail = fmt.Sprintf("tenant t%d %s", t+1, mode)
		nm.logf("nemesis: anchor of t%d %s for %s", t+1, mode, hold)
		if err := c.setAnchor(t, mode); err != nil {
			return err
		}
		sleep(ctx, hold)
		return c.setAnchor(t, "ok")
	case AnchorHung:
		// A customer's KMS that hangs must not delay another customer's kill switch: the
		// disabled tenant is measured by the kill-switch checker like anchor-dead's.
		if len(c.anchors) < 2 {
			f.Detail = "fewer than two tenants"
			return nil
		}
		hung := nm.r.IntN(len(c.anchors))
		dead := (hung + 1 + nm.r.IntN(len(c.anchors)-1)) % len(c.anchors)
		f.Detail = fmt.Sprintf("tenant t%d disabled while t%d hung", dead+1, hung+1)
		nm.logf("nemesis: anchor of t%d hung and of t%d disabled for %s", hung+1, dead+1, hold)
		if err := c.setAnchor(hung, "stalled"); err != nil {
			return err
		}
		if err := c.setAnchor(dead, "disabled"); err != nil {
			return err
		}
		sleep(ctx, hold)
		if err := c.setAnchor(dead, "ok"); err != nil {
			return err
		}
		return c.setAnchor(hung, "ok")
	}
	return fmt.Errorf("jepsen: unknown nemesis %q", kind)
}

// healAll undoes every fault: network rules, paused and stopped nodes, anchors.
func (nm *nemesis) healAll() {
	c := nm.c
	c.net.heal()
	for _, d := range c.disks {
		d.heal()
	}
	restoreClock()
	for t := range c.anchors {
		c.setAnchor(t, "ok")
	}
	for i := range c.nodes {
		c.signal(i, syscall.SIGCONT)
		if !c.running(i) {
			c.start(i, false)
		}
	}
	for j, nd := range c.gov {
		signalNode(nd, syscall.SIGCONT)
		if !runningNode(nd) {
			c.startGov(j, false)
		}
	}
}
