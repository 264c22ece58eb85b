package jepsen

import (
	"context"
	cryptorand "crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The disk and clock nemeses (DESIGN.md, "Disks" and "Clocks").

// diskTarget picks the node a disk fault hits: the leader half the time (its log store failing
// is the interesting case for acknowledgements), a follower otherwise.
func (nm *nemesis) diskTarget(l int) int {
	if l >= 0 && nm.r.IntN(2) == 0 {
		return l
	}
	if t := nm.follower(l); t >= 0 {
		return t
	}
	return max(l, 0)
}

// diskFull fills one node's filesystem, holds, frees it, and waits for the node to serve again.
// The node must refuse what it cannot persist (a leader whose log store fails steps down, and
// the write is answered with an error, never acknowledged), stay up, say so in its log, and
// recover by itself once space returns.
func (nm *nemesis) diskFull(ctx context.Context, l int, hold time.Duration, f *Fault) error {
	c := nm.c
	if len(c.disks) == 0 {
		f.Detail = "no disks"
		return nil
	}
	t := nm.diskTarget(l)
	nd, d := c.nodes[t], c.disks[t]
	f.Node = nd.id
	n, err := d.fill()
	if err != nil {
		d.unfill()
		return fmt.Errorf("jepsen: filling %s's disk: %w", nd.id, err)
	}
	role := "follower"
	if t == l {
		role = "leader"
	}
	// Held three times as long as other faults: bbolt reuses the pages log compaction freed, so
	// the Raft store meets ENOSPC only once snapshots (which need new files) have failed long
	// enough for the log to outgrow its file.
	hold *= 3
	f.Detail = fmt.Sprintf("%s (%s) disk full (%d MiB filler)", nd.id, role, n>>20)
	nm.logf("nemesis: %s for %s", f.Detail, hold)
	sleep(ctx, hold)
	if err := d.unfill(); err != nil {
		return err
	}
	took, err := nm.waitServing(ctx, t, 30*time.Second)
	if err != nil {
		f.Problem = fmt.Sprintf("%s did not recover once space returned: %v", nd.id, err)
		return nil
	}
	f.Detail += fmt.Sprintf("; serving again %s after space returned", took.Round(time.Millisecond))
	// What it wrote while the disk was full must not stop it from starting again: restarted
	// (SIGTERM), it opens its Raft store, revocation set and audit log and serves.
	c.stop(t, 10*time.Second)
	if err := c.start(t, false); err != nil {
		return err
	}
	if took, err := nm.waitServing(ctx, t, 30*time.Second); err != nil {
		f.Problem = fmt.Sprintf("%s, restarted after its disk was full, does not serve: %v (see its log)", nd.id, err)
	} else {
		f.Detail += fmt.Sprintf("; restarted, serving %s after", took.Round(time.Millisecond))
	}
	return nil
}

// slowFsync throttles writes to one node's disk to a few a second: every fsync of its Raft log
// and revocation set waits for its writes and the journal's to trickle through.
func (nm *nemesis) slowFsync(ctx context.Context, l int, hold time.Duration, f *Fault) error {
	c := nm.c
	if len(c.disks) == 0 {
		f.Detail = "no disks"
		return nil
	}
	if err := canThrottle(); err != nil {
		f.Detail = "not run: " + err.Error()
		return nil
	}
	t := nm.diskTarget(l)
	nd, d := c.nodes[t], c.disks[t]
	f.Node = nd.id
	iops := 5 + nm.r.IntN(20)
	if err := d.throttle(iops); err != nil {
		return err
	}
	role := "follower"
	if t == l {
		role = "leader"
	}
	f.Detail = fmt.Sprintf("%s (%s) disk throttled to %d writes/s", nd.id, role, iops)
	nm.logf("nemesis: %s for %s", f.Detail, hold)
	sleep(ctx, hold)
	if err := d.throttle(0); err != nil {
		return err
	}
	if took, err := nm.waitServing(ctx, t, 30*time.Second); err != nil {
		f.Problem = fmt.Sprintf("%s did not serve again once its disk was fast: %v", nd.id, err)
	} else {
		f.Detail += fmt.Sprintf("; serving %s after", took.Round(time.Millisecond))
	}
	return nil
}

// waitServing waits up to d for node i to hold a serving lease, and says how long it took.
func (nm *nemesis) waitServing(ctx context.Context, i int, d time.Duration) (time.Duration, error) {
	start := time.Now()
	var last string
	for ctx.Err() == nil && time.Since(start) < d {
		a, err := nm.cs.admin(i)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := a.Status(cctx, &kv1.StatusRequest{})
			cancel()
			if err == nil && st.GetLeaseState() == kv1.LeaseState_LEASE_STATE_SERVING {
				return time.Since(start), nil
			}
			if err != nil {
				last = err.Error()
			} else {
				last = "lease " + st.GetLeaseState().String()
			}
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return time.Since(start), fmt.Errorf("not serving within %s (last: %s)", d, last)
}

// corruptFiles are the bbolt files of a node's state the corrupt-restart nemesis damages: the
// Raft log store and the durable revocation set.
var corruptFiles = []string{filepath.Join("raft", "raft.db"), "revocations.db"}

// corruptRestart stops one node, overwrites both meta pages of one of its bbolt files (a torn
// write of the header: bbolt can tell), and starts it. It must refuse to start with an error that
// names the fix, and not panic. Then the operator's documented procedure (docs/operations.md,
// "A node's state is damaged"): remove it from the region (RemovePeer, as `krypton operator raft
// remove-peer`), move its state aside (`krypton operator reset-node -data-dir`, run from the
// binary under test), start it and join it (Join): it rejoins from the leader's snapshot and
// serves.
func (nm *nemesis) corruptRestart(ctx context.Context, l int, f *Fault) error {
	c := nm.c
	t := nm.follower(l)
	if t < 0 {
		f.Detail = "no follower"
		return nil
	}
	nd := c.nodes[t]
	f.Node = nd.id
	// The files in turn, the Raft store first, so that a scenario with two of these hits both.
	done := 0
	for _, g := range nm.injected() {
		if g.Kind == CorruptRestart {
			done++
		}
	}
	file := corruptFiles[done%len(corruptFiles)]
	f.Detail = fmt.Sprintf("%s: %s corrupted", nd.id, file)
	nm.logf("nemesis: corrupt-restart: stopping %s and corrupting its %s", nd.id, file)
	c.stop(t, 10*time.Second)
	if err := corruptMeta(filepath.Join(nd.dir, file)); err != nil {
		return err
	}
	logStart := logSize(nd.logPath)
	nd.mu.Lock()
	nd.expectExit = true
	nd.mu.Unlock()
	defer func() {
		nd.mu.Lock()
		nd.expectExit = false
		nd.mu.Unlock()
	}()
	if err := c.start(t, false); err != nil {
		return err
	}
	nd.mu.Lock()
	exited := nd.exited
	nd.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		c.kill(t)
		f.Problem = fmt.Sprintf("%s started on a corrupted %s (still running after 20 s)", nd.id, file)
	case <-ctx.Done():
		return nil
	}
	out := logSince(nd.logPath, logStart)
	switch {
	case strings.Contains(out, "panic:") || strings.Contains(out, "fatal error:"):
		f.Problem = fmt.Sprintf("%s panicked on a corrupted %s: %s", nd.id, file, lastLines(out, 6))
	case f.Problem == "" && !strings.Contains(out, "krypton operator reset-node"):
		f.Problem = fmt.Sprintf("%s refused a corrupted %s without naming the fix (krypton operator reset-node): %s", nd.id, file, lastLines(out, 3))
	}
	f.Detail += "; refused: " + lastLines(out, 1)
	// The operator's procedure.
	if err := nm.removePeer(ctx, t); err != nil {
		f.Problem = strings.TrimPrefix(f.Problem+"; ", "; ") + err.Error()
	}
	if b, err := exec.Command(c.bin, "operator", "reset-node", "-data-dir", nd.dir).CombinedOutput(); err != nil {
		f.Problem = strings.TrimPrefix(f.Problem+"; ", "; ") + fmt.Sprintf("krypton operator reset-node: %v: %s", err, strings.TrimSpace(string(b)))
		if err := c.wipe(t); err != nil { // go on with the run as a wiped node
			return err
		}
	}
	if err := c.start(t, false); err != nil {
		return err
	}
	if err := nm.ensureVoter(ctx, t, 30*time.Second); err != nil {
		f.Problem = strings.TrimPrefix(f.Problem+"; ", "; ") + err.Error()
		return nil
	}
	if took, err := nm.waitServing(ctx, t, 30*time.Second); err != nil {
		f.Problem = strings.TrimPrefix(f.Problem+"; ", "; ") + fmt.Sprintf("%s rejoined but does not serve: %v", nd.id, err)
	} else {
		f.Detail += fmt.Sprintf("; reset, rejoined and serving %s after the start", took.Round(time.Millisecond))
	}
	return nil
}

// removePeer removes node i from the configuration through whichever other node answers.
func (nm *nemesis) removePeer(ctx context.Context, i int) error {
	c := nm.c
	id := c.nodes[i].id
	var last error
	for attempt := 0; attempt < 40 && ctx.Err() == nil; attempt++ {
		for j := range c.nodes {
			if j == i || !c.running(j) {
				continue
			}
			a, err := nm.cs.admin(j)
			if err != nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = a.RemovePeer(cctx, &kv1.RemovePeerRequest{RequestId: fmt.Sprintf("jepsen-remove-%s-%d", id, nm.h.now()), NodeId: id})
			cancel()
			if err == nil || strings.Contains(err.Error(), "NotFound") {
				return nil
			}
			last = err
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return fmt.Errorf("removing %s: %v", id, last)
}

// corruptMeta overwrites the body of both bbolt meta pages (pages 0 and 1, after the 16-byte
// page header) with random bytes: what a torn write of the header looks like to bbolt, whose
// meta checksums catch it.
func corruptMeta(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("jepsen: corrupting %s: %w", path, err)
	}
	defer f.Close()
	pageSize := int64(os.Getpagesize())
	junk := make([]byte, 64)
	for _, off := range []int64{16, pageSize + 16} {
		if _, err := cryptorand.Read(junk); err != nil {
			return err
		}
		if _, err := f.WriteAt(junk, off); err != nil {
			return fmt.Errorf("jepsen: corrupting %s: %w", path, err)
		}
	}
	return f.Sync()
}

func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince returns what was written to the log at path after offset.
func logSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// The clock: clockJump steps the wall clock (CLOCK_REALTIME) of the whole machine, and
// restoreClock steps it back by what was applied. Leases, fences and Raft must not notice: they
// measure time on the monotonic clock (region/lease.go; internal/deptest's monotonic rule).
var clockMu sync.Mutex
var clockOffset time.Duration // applied and not yet undone

// stepClock moves the wall clock by d.
func stepClock(d time.Duration) error {
	clockMu.Lock()
	defer clockMu.Unlock()
	if err := setWallClock(time.Now().Add(d)); err != nil {
		return err
	}
	clockOffset += d
	return nil
}

// restoreClock undoes every step not yet undone (healAll and Run's teardown call it).
func restoreClock() {
	clockMu.Lock()
	defer clockMu.Unlock()
	if clockOffset == 0 {
		return
	}
	if err := setWallClock(time.Now().Add(-clockOffset)); err != nil {
		fmt.Fprintf(os.Stderr, "jepsen: could not restore the wall clock (%v): it is %s off; set it with `date -s`\n", err, clockOffset)
		return
	}
	clockOffset = 0
}

// clockJump steps the wall clock forward by hours, then back to hours behind the true time, and
// restores it: each for half the hold. Meanwhile (with namespaces) a follower is cut off, still
// reachable by clients: revocations must fence it by its lease running out, counted on monotonic
// clocks while the wall clock is hours off.
func (nm *nemesis) clockJump(ctx context.Context, l int, hold time.Duration, f *Fault) error {
	fwd := time.Duration(1+nm.r.IntN(6)) * time.Hour
	back := time.Duration(1+nm.r.IntN(6)) * time.Hour
	if err := stepClock(fwd); err != nil {
		f.Detail = fmt.Sprintf("not run: setting the wall clock needs CAP_SYS_TIME: %v", err)
		return nil
	}
	defer restoreClock()
	f.Detail = fmt.Sprintf("wall clock +%s, then -%s", fwd, back)
	if fo := nm.follower(l); fo >= 0 && nm.c.net.canPartition() {
		var rest []int
		for i := range nm.c.nodes {
			if i != fo {
				rest = append(rest, i)
			}
		}
		defer nm.c.net.heal()
		if err := nm.partition([]int{fo}, rest); err != nil {
			return err
		}
		f.Detail += fmt.Sprintf(", %s cut off", nm.c.nodes[fo].id)
	}
	nm.logf("nemesis: clock-jump: %s, for %s", f.Detail, hold)
	sleep(ctx, hold/2)
	if err := stepClock(-fwd - back); err != nil {
		return err
	}
	sleep(ctx, hold/2)
	return nil
}

// checkNoCrash: no node exited on its own, and no node's log shows a panic.
func checkNoCrash(c *cluster) *Verdict {
	v := newVerdict("no-crash")
	for _, nd := range append(append([]*node(nil), c.nodes...), c.gov...) {
		nd.mu.Lock()
		crashes := append([]string(nil), nd.crashes...)
		nd.mu.Unlock()
		for _, s := range crashes {
			v.problem("%s", s)
		}
		b, _ := os.ReadFile(nd.logPath)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
				v.problem("%s's log: %s", nd.id, line)
			}
		}
	}
	return v
}

// checkDiskFaults: every disk fault's node recovered by itself, said why it refused, and a
// corrupted node refused to start naming the fix, then rejoined.
func checkDiskFaults(c *cluster, faults []Fault) *Verdict {
	v := newVerdict("disk-faults")
	counts := map[string]int{}
	for _, f := range faults {
		switch f.Kind {
		case DiskFull, SlowFsync, CorruptRestart:
		default:
			continue
		}
		counts[f.Kind]++
		if f.Problem != "" {
			v.problem("%s: %s", f.Kind, f.Problem)
		}
	}
	if counts[DiskFull] > 0 {
		// The node says why it refuses: the ENOSPC is in its log.
		for _, nd := range c.nodes {
			hit := false
			for _, f := range faults {
				hit = hit || (f.Kind == DiskFull && f.Node == nd.id)
			}
			if !hit {
				continue
			}
			b, _ := os.ReadFile(nd.logPath)
			if !strings.Contains(string(b), "no space left on device") {
				v.problem("%s's disk was full, and its log never says so (no \"no space left on device\")", nd.id)
			}
		}
	}
	v.Detail = fmt.Sprintf("%d disk-full, %d slow-fsync, %d corrupt-restart", counts[DiskFull], counts[SlowFsync], counts[CorruptRestart])
	return v
}

// setWallClock sets CLOCK_REALTIME (settimeofday; needs CAP_SYS_TIME).
func setWallClock(t time.Time) error {
	tv := syscall.NsecToTimeval(t.UnixNano())
	return syscall.Settimeofday(&tv)
}
