package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"golang.org/x/time/rate"
)

// Scenario is one run of the harness: a fresh region, a workload, and a mix of nemeses.
type Scenario struct {
	Name     string        `json:"name"`
	Nodes    int           `json:"nodes"`   // 3 or 5
	Nemeses  []string      `json:"nemeses"` // chosen at random, one at a time, between quiet spells
	Duration time.Duration `json:"duration"`
	Clients  int           `json:"clients"`
	// Governance, when positive, runs a governance plane of that many `krypton governance
	// server` nodes (1 or 3) that feeds the region: tenants and services are created there and
	// revocations issued there (governanceRevoker). See DESIGN.md, "Governance mode".
	Governance int `json:"governance,omitempty"`
	// Regions, when 2, runs two regions of Nodes nodes each fed by one governance plane
	// (Governance nodes, 3 if unset), with a tenant shared by both and one resident in the first
	// (multiregion.go; DESIGN.md, "Multi-region mode"). 0 or 1: one region.
	Regions int `json:"regions,omitempty"`
	// Rate, when positive, caps the workload at that many operations a second across all clients
	// (a soak's moderate load; its history stays small enough to check).
	Rate float64 `json:"rate,omitempty"`
}

// Options configure Run.
type Options struct {
	Binary string // the krypton binary the nodes run
	// OldBinary is the previous release's binary, which the nodes of a scenario that lists the
	// upgrade nemesis run until it replaces them one at a time with Binary (upgrade.go).
	OldBinary string
	Dir       string // the run directory (created); the report goes here
	Seed      uint64
	// Network forces "netns" or "loopback"; empty picks netns when root.
	Network string
	// MinRate is the minimum ok operations per second before the first fault (0: 5).
	MinRate float64
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// KeepData keeps the nodes' data directories and logs even when every checker passes.
	KeepData bool
	// Sample, when positive, scrapes every node's /metrics this often into samples.csv and adds
	// the resources-flat verdict (a soak: `make soak`).
	Sample time.Duration
}

// Result is what a run found.
type Result struct {
	Scenario Scenario       `json:"scenario"`
	Seed     uint64         `json:"seed"`
	Network  string         `json:"network"`
	Timing   Timing         `json:"timing"`
	Dir      string         `json:"dir"`
	Ops      map[string]int `json:"ops"` // "type outcome" -> count
	Faults   map[string]int `json:"faults"`
	Verdicts []*Verdict     `json:"verdicts"`
	// WorstRefusal is the longest time from a revocation's acknowledgement to the last node's
	// refusal of the revoked key (zero when no revocation was probed).
	WorstRefusal time.Duration  `json:"worst-refusal"`
	Refusals     int            `json:"refusals"`
	RefusalCodes map[string]int `json:"refusal-codes"`     // FailedPrecondition: revoked; Unavailable: no lease or down
	Unanswered   int            `json:"unanswered-probes"` // probes of paused or cut-off nodes that timed out
	// WorstKillSwitch is the longest time from disabling a tenant's anchor to the last use of
	// its keys that began after it.
	WorstKillSwitch time.Duration `json:"worst-kill-switch"`
	// RevokeLatency is, in governance mode, the time from invoking a governance revocation to
	// its acknowledgement (every region applied and fenced it): median, 99th percentile, max.
	RevokeLatency *Latency `json:"revoke-latency,omitempty"`
	// ImportLag is, in multi-region mode, the time from the acknowledgement of a rotation of the
	// shared tenant in its home region to the first successful use of the new version in the
	// other region (an upper bound of the replication through governance; multiregion.go).
	ImportLag *Latency `json:"import-lag,omitempty"`
	// Restores counts the snapshot-restore nemesis's restores by outcome (RestoreRefused, ...).
	Restores map[string]int `json:"restores,omitempty"`
	// Resources is, with Options.Sample, each sampled metric's median in the first and the last
	// third of the run (samples.csv in Dir has every sample).
	Resources []string      `json:"resources,omitempty"`
	Elapsed   time.Duration `json:"elapsed"`
	Skipped   []string      `json:"skipped,omitempty"` // nemeses this network cannot run
}

// OK reports whether every checker passed (an "unknown" linearizability verdict counts as
// passing; the summary says so).
func (r *Result) OK() bool {
	for _, v := range r.Verdicts {
		if v.Result == Fail {
			return false
		}
	}
	return true
}

// Failed returns the verdicts that failed.
func (r *Result) Failed() []*Verdict {
	var out []*Verdict
	for _, v := range r.Verdicts {
		if v.Result == Fail {
			out = append(out, v)
		}
	}
	return out
}

// tenants of every run; each has its own anchor file so that the anchor nemeses hit one.
const numTenants = 3

// Run runs one scenario and checks its history. The error is for the harness itself failing
// (the region would not start); what the checkers found is in the Result.
func Run(ctx context.Context, sc Scenario, opts Options) (res *Result, err error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.MinRate == 0 {
		opts.MinRate = 5
	}
	if sc.Clients == 0 {
		sc.Clients = 4 * sc.Nodes
	}
	logf := func(format string, args ...any) { opts.Logf("[%s] "+format, append([]any{sc.Name}, args...)...) }
	r := rand.New(rand.NewPCG(opts.Seed, 0x6a657073656e))
	timing := randomTiming(r)
	res = &Result{Scenario: sc, Seed: opts.Seed, Timing: timing, Dir: opts.Dir, Ops: map[string]int{}, Faults: map[string]int{}, RefusalCodes: map[string]int{}}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}

	// SIGINT or SIGTERM cancels the run; the deferred teardown then runs as on any other exit,
	// and the signal is raised again once it has, so that the process ends as the sender meant
	// (a schedule does not go on to its next scenario).
	ctx, cancel := context.WithCancel(ctx)
	var got atomic.Value
	defer func() {
		if s, ok := got.Load().(syscall.Signal); ok {
			logf("torn down; raising %s again", s)
			syscall.Kill(os.Getpid(), s)
		}
	}()
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	watchDone := make(chan struct{})
	defer func() { cancel(); <-watchDone }()
	go func() {
		defer close(watchDone)
		select {
		case s := <-sigs:
			logf("%s: stopping and tearing down", s)
			got.Store(s.(syscall.Signal))
			cancel()
		case <-ctx.Done():
		}
	}()

	if sc.Regions > 1 {
		return runMulti(ctx, sc, opts, timing, res, logf)
	}
	var nw network
	switch {
	case opts.Network == "netns" || (opts.Network == "" && isRoot()):
		w, err := newNetnsNet(sc.Nodes + sc.Governance)
		if err != nil {
			return nil, err
		}
		nw = w
	default:
		w, err := newLoopbackNet(sc.Nodes + sc.Governance)
		if err != nil {
			return nil, err
		}
		nw = w
	}
	defer nw.close()
	res.Network = nw.name()
	nemeses := sc.Nemeses
	if !nw.canPartition() {
		nemeses = nil
		for _, k := range sc.Nemeses {
			if needsNetwork[k] {
				res.Skipped = append(res.Skipped, k)
			} else {
				nemeses = append(nemeses, k)
			}
		}
	}
	logf("seed %d, %d nodes on %s, raft heartbeat %s election %s snapshot-threshold %d trailing-logs %d, lease %s",
		opts.Seed, sc.Nodes, nw.name(), timing.Heartbeat, timing.Election, timing.SnapshotThreshold, timing.TrailingLogs, timing.Lease)

	if sc.Governance > 0 {
		logf("governance mode: %d governance node(s) feed the region", sc.Governance)
	}
	c, err := newCluster(opts.Binary, opts.Dir, nw, sc.Nodes, timing, numTenants, sc.Governance)
	if err != nil {
		return nil, err
	}
	if slices.Contains(nemeses, Upgrade) {
		if opts.OldBinary == "" {
			return nil, fmt.Errorf("jepsen: the %s nemesis needs Options.OldBinary, the previous release's krypton binary", Upgrade)
		}
		c.oldBin = opts.OldBinary
		for _, nd := range c.nodes {
			nd.bin = c.oldBin
		}
		logf("upgrade: the region starts on %s and is upgraded to %s one node at a time", c.oldBin, c.bin)
	}
	// Disks are unmounted after the nodes stop (defers run last first); a failed run keeps
	// their images.
	defer func() { c.closeDisks(res == nil || !res.OK() || opts.KeepData) }()
	defer restoreClock()
	if slices.ContainsFunc(nemeses, func(k string) bool { return diskKinds[k] }) {
		if err := c.useDisks(); err != nil {
			// Like the network nemeses without namespaces: skipped, unless CI (root) requires
			// every fault to run.
			if os.Getenv("KRYPTON_REQUIRE_PEERS") != "" {
				return nil, fmt.Errorf("jepsen: the disk nemeses need each node's data directory on a loop-mounted filesystem of its own (root, mkfs.ext4, losetup, mount): %w", err)
			}
			logf("disk nemeses skipped: each node's data directory on a filesystem of its own needs root, mkfs.ext4, losetup and mount: %v", err)
			kept := nemeses[:0:0]
			for _, k := range nemeses {
				if diskKinds[k] {
					res.Skipped = append(res.Skipped, k)
				} else {
					kept = append(kept, k)
				}
			}
			nemeses = kept
		}
	}
	defer c.shutdown()
	cs := newConns(c)
	defer cs.close()
	start := time.Now()
	h, err := newHistory(filepath.Join(opts.Dir, "history.jsonl"), start)
	if err != nil {
		return nil, err
	}
	defer h.close()
	for j := range c.gov {
		if err := c.startGov(j, true); err != nil {
			return nil, err
		}
	}
	for i := range c.nodes {
		if err := c.start(i, true); err != nil {
			return nil, err
		}
	}
	nm := &nemesis{c: c, cs: cs, h: h, r: rand.New(rand.NewPCG(opts.Seed, 1)), logf: logf}
	if err := setup(ctx, c, cs, nm, logf); err != nil {
		return nil, err
	}

	// The workload runs for the whole duration; the nemesis starts after a quiet warm-up.
	var tenants []string
	for t := range numTenants {
		tenants = append(tenants, fmt.Sprintf("t%d", t+1))
	}
	wl := newWorkload(c, cs, h, tenants, timing)
	if sc.Rate > 0 {
		wl.limit = rate.NewLimiter(rate.Limit(sc.Rate), 1)
	}
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for p := range sc.Clients {
		wg.Add(1)
		go func() { defer wg.Done(); wl.client(wctx, p, opts.Seed) }()
	}
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		progress(wctx, h, nm, logf)
	}()
	var smp *sampler
	sampleDone := make(chan struct{})
	if opts.Sample > 0 {
		f, err := os.Create(filepath.Join(opts.Dir, "samples.csv"))
		if err != nil {
			wcancel()
			wg.Wait()
			<-progressDone
			return nil, err
		}
		defer f.Close()
		smp = newSampler(c, start, opts.Sample, f)
		go func() {
			defer close(sampleDone)
			smp.run(wctx)
		}()
	} else {
		close(sampleDone)
	}
	warmup := 4 * time.Second
	sleep(ctx, warmup)
	// The snapshot-restore nemesis's backup is taken now, early, and restored later: in the
	// second fault slot at the latest, so that every scenario that lists it runs it once.
	restoreListed, restored := slices.Contains(nemeses, SnapshotRestore), false
	var nemErr error
	if restoreListed {
		if err := nm.saveSnapshot(ctx); err != nil {
			nemErr = err
			logf("nemesis %s: %v", SnapshotRestore, err)
		}
	}
	firstFault := h.now()
	deadline := start.Add(sc.Duration)
	for slot := 0; ctx.Err() == nil && time.Until(deadline) > 3*time.Second && len(nemeses) > 0; slot++ {
		kind := nemeses[nm.r.IntN(len(nemeses))]
		if restoreListed && slot == 1 && !restored {
			kind = SnapshotRestore
		}
		restored = restored || kind == SnapshotRestore
		if old := c.oldNodes(); c.oldBin != "" && old > 0 && (slot%2 == 0 || len(nemeses) == 1 || time.Until(deadline) < time.Duration(old)*15*time.Second) {
			// An upgrade scenario replaces a node every other slot until none runs the old
			// binary (every slot when time runs short); the other slots draw from its other
			// kinds (faults on a mixed region).
			kind = Upgrade
		} else if kind == Upgrade {
			kind = nemeses[(slices.Index(nemeses, Upgrade)+1)%len(nemeses)]
		}
		if err := nm.inject(ctx, kind); err != nil {
			nemErr = err
			logf("nemesis %s: %v", kind, err)
			break
		}
		sleep(ctx, time.Duration(1500+nm.r.IntN(2000))*time.Millisecond)
	}
	sleep(ctx, time.Until(deadline))
	nm.healAll()
	// Let the region settle with the clients still running, then stop them.
	nm.waitLeader(ctx, 30*time.Second)
	sleep(ctx, timing.Lease)
	wcancel()
	wg.Wait()
	<-progressDone
	<-sampleDone
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	ops := h.snapshot()
	res.Verdicts = append(res.Verdicts, checkThroughput(ops, firstFault, opts.MinRate))
	if smp != nil {
		v, lines := checkResourcesFlat(smp.snapshot(), time.Since(start))
		res.Verdicts = append(res.Verdicts, v)
		res.Resources = lines
	}
	if nemErr != nil {
		v := newVerdict("nemesis")
		v.problem("%v", nemErr)
		res.Verdicts = append(res.Verdicts, v)
	}
	// Final phase: heal, converge, one final write, compare every node's state, unwrap every
	// acknowledged wrap.
	res.Verdicts = append(res.Verdicts, finalChecks(ctx, c, cs, nm, wl, h, logf)...)
	ops = h.snapshot()
	lin, model, info := checkLinearizable(remapClients(ops, sc.Clients), 60*time.Second)
	res.Verdicts = append(res.Verdicts, lin, checkRevocationFence(ops), checkPlaintexts(ops), checkVersions(ops), checkCreateThenUse(ops))
	faults := nm.injected()
	for _, f := range faults {
		res.Faults[f.Kind]++
	}
	if restoreListed {
		rv, counts := checkRestores(faults)
		res.Verdicts = append(res.Verdicts, rv)
		res.Restores = counts
	}
	if c.oldBin != "" {
		res.Verdicts = append(res.Verdicts, checkUpgrade(c, faults))
	}
	ks, worstKill := checkKillSwitch(ops, faults, timing)
	res.Verdicts = append(res.Verdicts, ks)
	if sc.Governance > 0 {
		res.Verdicts = append(res.Verdicts, checkGovernanceKillSwitch(ops, faults))
	}
	res.WorstKillSwitch = worstKill
	for _, op := range ops {
		res.Ops[op.Type+" "+op.Outcome]++
	}
	if sc.Governance > 0 {
		res.RevokeLatency = revokeLatency(ops)
	}
	for _, rf := range wl.refusals {
		switch rf.Code {
		case "Canceled":
			continue // the run ended under the probe
		case "DeadlineExceeded":
			res.Unanswered++ // a paused or cut-off node: no answer is not a refusal
			continue
		}
		res.Refusals++
		res.RefusalCodes[rf.Code]++
		res.WorstRefusal = max(res.WorstRefusal, rf.After)
	}
	if len(c.disks) > 0 {
		res.Verdicts = append(res.Verdicts, checkDiskFaults(c, faults))
	}
	c.shutdown()
	h.close()
	res.Verdicts = append(res.Verdicts, checkNoCrash(c), checkNoPlaintext(c, h))
	c.closeDisks(!res.OK() || opts.KeepData)
	res.Elapsed = time.Since(start)
	if err := writeReport(res, c, ops, faults, wl.refusals, model, info, sc.Clients); err != nil {
		logf("writing the report: %v", err)
	}
	if smp != nil {
		if err := plotResources(filepath.Join(opts.Dir, "resources.png"), res, smp.snapshot(), faults); err != nil {
			logf("plotting the samples: %v", err)
		}
	}
	if res.OK() && !opts.KeepData {
		os.RemoveAll(filepath.Join(opts.Dir, "nodes"))
		os.RemoveAll(filepath.Join(opts.Dir, "anchors"))
		os.RemoveAll(filepath.Join(opts.Dir, "pki"))
	}
	return res, nil
}

// Latency summarises a set of durations.
type Latency struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50"`
	P99   time.Duration `json:"p99"`
	Max   time.Duration `json:"max"`
}

// revokeLatency is the latency of the acknowledged revocations.
func revokeLatency(ops []Op) *Latency {
	var d []time.Duration
	for _, op := range ops {
		if op.Type == OpRevoke && op.Outcome == OK {
			d = append(d, time.Duration(op.Complete-op.Invoke))
		}
	}
	if len(d) == 0 {
		return &Latency{}
	}
	slices.Sort(d)
	return &Latency{Count: len(d), P50: d[len(d)/2], P99: d[len(d)*99/100], Max: d[len(d)-1]}
}

// remapClients numbers probe processes after the clients, as porcupine's visualization wants
// zero-based client ids.
func remapClients(ops []Op, clients int) []Op {
	out := make([]Op, len(ops))
	for i, op := range ops {
		if op.Process >= probeProcess {
			op.Process = clients + op.Process - probeProcess
		}
		out[i] = op
	}
	return out
}

// setup waits for a leader and creates the tenants, each on its own file:// anchor.
func setup(ctx context.Context, c *cluster, cs *conns, nm *nemesis, logf func(string, ...any)) error {
	if nm.waitLeader(ctx, 60*time.Second) < 0 {
		return errors.New("jepsen: no leader within 60 s of starting the region")
	}
	if len(c.gov) > 0 {
		return setupGovernance(ctx, c, cs, nm, logf)
	}
	for t := range c.anchors {
		name := fmt.Sprintf("t%d", t+1)
		var err error
		for attempt := 0; attempt < 60 && ctx.Err() == nil; attempt++ {
			l := nm.leader(ctx)
			if l < 0 {
				sleep(ctx, 500*time.Millisecond)
				continue
			}
			a, _ := cs.admin(l)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = a.CreateTenant(cctx, &kv1.CreateTenantRequest{RequestId: "jepsen-tenant-" + name, Tenant: name, AnchorUri: c.anchorURI(t)})
			cancel()
			if err == nil || strings.Contains(err.Error(), "AlreadyExists") {
				err = nil
				break
			}
			sleep(ctx, 500*time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("jepsen: creating tenant %s: %w", name, err)
		}
	}
	logf("region up: %d nodes, %d tenants", len(c.nodes), len(c.anchors))
	return nil
}

// setupGovernance creates the tenants at governance (a governance-fed region takes its tenants
// from the feed) and waits until every region node has them.
func setupGovernance(ctx context.Context, c *cluster, cs *conns, nm *nemesis, logf func(string, ...any)) error {
	if nm.waitGovLeader(ctx, 60*time.Second) < 0 {
		return errors.New("jepsen: no governance leader within 60 s of starting it")
	}
	for t := range c.anchors {
		name := fmt.Sprintf("t%d", t+1)
		var err error
		for attempt := 0; attempt < 60 && ctx.Err() == nil; attempt++ {
			var g kv1.GovernanceServiceClient
			if g, err = cs.gov(attempt % len(c.gov)); err != nil {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = g.CreateTenant(cctx, &kv1.GovernanceCreateTenantRequest{RequestId: "jepsen-tenant-" + name, Tenant: name,
				AnchorUri: c.anchorURI(t), Regions: []string{regionName}, OwnerPublicKey: c.ownerPub})
			cancel()
			if err == nil || strings.Contains(err.Error(), "AlreadyExists") {
				err = nil
				break
			}
			sleep(ctx, 500*time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("jepsen: creating tenant %s at governance: %w", name, err)
		}
	}
	wl := newWorkload(c, cs, nil, nil, c.timing)
	for t := range c.anchors {
		name := fmt.Sprintf("t%d", t+1)
		if !wl.regionHas(ctx, wl.groupsOf(name), 0, 60*time.Second, func(cctx context.Context, a kv1.AdminServiceClient) error {
			_, err := a.DescribeTenant(cctx, &kv1.DescribeTenantRequest{Tenant: name})
			return err
		}, true) {
			return fmt.Errorf("jepsen: tenant %s, created at governance, not on every region node within 60 s", name)
		}
	}
	logf("region up: %d nodes, %d governance node(s), %d tenants from governance", len(c.nodes), len(c.gov), len(c.anchors))
	return nil
}

// progress prints a line every few seconds while the run goes on.
func progress(ctx context.Context, h *history, nm *nemesis, logf func(string, ...any)) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, fail, info := h.counts()
		active, nfaults := nm.status()
		if active == "" {
			active = "none"
		}
		logf("t=%3.0fs ops=%d ok=%d fail=%d info=%d faults=%d now=%s", time.Since(h.start).Seconds(), ok+fail+info, ok, fail, info, nfaults, active)
	}
}
