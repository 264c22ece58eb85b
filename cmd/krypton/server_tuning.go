package main

import (
	"flag"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/internal/gcfloor"
)

// raftTuning are the server's Raft timing and snapshot flags; zero keeps cluster.DefaultConfig's
// value. Operators rarely need them (the defaults suit a region spread over zones); tests and the
// chaos suite (jepsen/) set short timings and tiny snapshot thresholds so that elections and
// snapshot installs happen within seconds.
type raftTuning struct {
	heartbeat, election, leaderLease, snapshotInterval time.Duration
	snapshotThreshold, trailingLogs                    uint64
}

func (t *raftTuning) declare(fs *flag.FlagSet) {
	d := cluster.DefaultConfig()
	fs.DurationVar(&t.heartbeat, "raft-heartbeat-timeout", 0, "Raft heartbeat timeout: a follower calls an election after 1 to 2 times this without word from the leader (0: "+d.HeartbeatTimeout.String()+")")
	fs.DurationVar(&t.election, "raft-election-timeout", 0, "Raft election timeout, at least the heartbeat timeout (0: "+d.ElectionTimeout.String()+")")
	fs.DurationVar(&t.leaderLease, "raft-leader-lease-timeout", 0, "Raft leader lease timeout, at most the heartbeat timeout: the leader steps down after this long without a quorum (0: "+d.LeaderLeaseTimeout.String()+")")
	fs.DurationVar(&t.snapshotInterval, "raft-snapshot-interval", 0, "how often Raft checks whether to snapshot (0: 2m)")
	fs.Uint64Var(&t.snapshotThreshold, "raft-snapshot-threshold", 0, "log entries since the last snapshot that trigger a new one (0: 8192)")
	fs.Uint64Var(&t.trailingLogs, "raft-trailing-logs", 0, "log entries kept after a snapshot for lagging followers (0: 10240)")
}

// apply is region.Config.Tune: cluster.Config.Validate checks the result.
func (t *raftTuning) apply(c *cluster.Config) {
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	set(&c.HeartbeatTimeout, t.heartbeat)
	set(&c.ElectionTimeout, t.election)
	set(&c.LeaderLeaseTimeout, t.leaderLease)
	set(&c.SnapshotInterval, t.snapshotInterval)
	if t.snapshotThreshold > 0 {
		c.SnapshotThreshold = t.snapshotThreshold
	}
	if t.trailingLogs > 0 {
		c.TrailingLogs = t.trailingLogs
	}
	// A leader lease longer than a shortened heartbeat would fail validation; keep it inside.
	if t.heartbeat > 0 && t.leaderLease == 0 && c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		c.LeaderLeaseTimeout = c.HeartbeatTimeout / 2
	}
}

// gcTuning is the server's -gc-percent flag: the Go garbage collector's target (GOGC), how far the
// heap may grow past the live heap, in percent, before a collection.
//
// Higher values trade memory for CPU. With the default 100, garbage collection was ~15 % of the CPU
// of unary wraps in BenchmarkOps (region/ops_bench_test.go, 16 callers, GODEBUG=gctrace=1: ~10 µs
// of ~70 µs per call; ~5-7 µs at 200). GOGC=200 cut the whole process's CPU per unary Wrap and
// Unwrap by 11 % (benchstat, 12 interleaved runs, p ≤ 0.01; a 6-run repeat saw -4 % for Wrap,
// within the noise, and -15 % for GenerateDataKey, p = 0.009) and of a BatchUnwrap of 256 by 11 %
// (p = 0.02); 400 did no measurably better (-10 % and -13 %). The price is heap: it peaks near
// (1 + N/100) × the live heap (20, 31 and 51 MiB there for 100, 200 and 400 over a ~10 MiB live
// heap), so a node holding 1,000,000 key versions (~380 MiB live, docs/performance.md) would peak
// near 1.1 GiB at 200. The default therefore stays Go's (the GOGC environment variable, else 100);
// raise it where memory allows, and bound it with GOMEMLIMIT (Go's soft memory limit), under which
// the collector runs more often again as the heap nears the limit.
//
// -gc-headroom-mib (default 64) puts a floor under the heap goal instead (internal/gcfloor): the
// heap may grow at least that much past the live heap before a collection. A node with a small
// live heap, the common case, then collects several times less often (a development region: 0.37
// against 1.8 collections a second under the same load; docs/performance.md, "Unary wrap: region
// CPU per call") for at most that much more memory, and one with a large live heap is unchanged:
// its GOGC goal is already further.
type gcTuning struct {
	percent     int
	headroomMiB int
}

func (g *gcTuning) declare(fs *flag.FlagSet) {
	fs.IntVar(&g.headroomMiB, "gc-headroom-mib", gcfloor.DefaultHeadroom>>20, "the least the heap may grow past the live heap before a garbage collection, in MiB, whatever -gc-percent gives (0: no floor, -gc-percent alone decides); a small heap then collects less often for at most this much more memory; GOMEMLIMIT still bounds it")
	fs.IntVar(&g.percent, "gc-percent", 0, "Go garbage collector target (GOGC): heap growth over the live heap, in percent, before a collection (0: Go's, the GOGC environment variable or 100); 200 cut the CPU of a unary wrap by up to ~11 % for a heap of up to 3x the live heap: bound it with GOMEMLIMIT")
}

// apply sets the collector's target, if the flag asks for one, and starts the floor under the heap
// goal; the caller calls stop when the node has stopped.
func (g *gcTuning) apply(cmd string, log *slog.Logger) (stop func(), err error) {
	switch {
	case g.percent < 0:
		return nil, usagef("%s: -gc-percent %d is negative (0 keeps Go's default)", cmd, g.percent)
	case g.headroomMiB < 0 || g.headroomMiB > 1<<20:
		return nil, usagef("%s: -gc-headroom-mib %d: want 0 (no floor) to %d", cmd, g.headroomMiB, 1<<20)
	}
	if g.percent > 0 {
		prev := debug.SetGCPercent(g.percent)
		log.Info("garbage collector target set from -gc-percent", "gc-percent", g.percent, "was", prev)
	}
	if g.headroomMiB > 0 {
		log.Info("garbage collector floor set from -gc-headroom-mib", "gc-headroom-mib", g.headroomMiB)
	}
	return gcfloor.Start(uint64(g.headroomMiB) << 20), nil
}
