package jepsen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
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
}

// Options configure Run.
type Options struct {
	Binary string // the krypton binary the nodes run
	Dir    string // the run directory (created); the report goes here
	Seed   uint64
	// Network forces "netns" or "loopback"; empty picks netns when root.
	Network string
	// MinRate is the minimum ok operations per second before the first fault (0: 5).
	MinRate float64
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// KeepData keeps the nodes' data directories and logs even when every checker passes.
	KeepData bool
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
	// Restores counts the snapshot-restore nemesis's restores by outcome (RestoreRefused, ...).
	Restores map[string]int `json:"restores,omitempty"`
	Elapsed  time.Duration  `json:"elapsed"`
	Skipped  []string       `json:"skipped,omitempty"` // nemeses this network cannot run
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
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	ops := h.snapshot()
	res.Verdicts = append(res.Verdicts, checkThroughput(ops, firstFault, opts.MinRate))
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
	c.shutdown()
	h.close()
	res.Verdicts = append(res.Verdicts, checkNoPlaintext(c, h))
	res.Elapsed = time.Since(start)
	if err := writeReport(res, c, ops, faults, wl.refusals, model, info, sc.Clients); err != nil {
		logf("writing the report: %v", err)
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
	wl := &workload{c: c, cs: cs}
	for t := range c.anchors {
		name := fmt.Sprintf("t%d", t+1)
		if !wl.regionHas(ctx, 0, 60*time.Second, func(cctx context.Context, a kv1.AdminServiceClient) error {
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

// finalChecks heals the region and checks its end state.
func finalChecks(ctx context.Context, c *cluster, cs *conns, nm *nemesis, wl *workload, h *history, logf func(string, ...any)) []*Verdict {
	nm.healAll()
	members := newVerdict("membership")
	// Every node is a voter again once healed (a member nemesis cut short may have left one out).
	for i, nd := range c.nodes {
		if !slices.Contains(nm.voters(ctx), nd.id) {
			if err := nm.ensureVoter(ctx, i, 30*time.Second); err != nil {
				members.problem("%v", err)
			}
		}
	}
	members.Detail = "voters: " + strings.Join(nm.voters(ctx), ",")
	final := newVerdict("final-write")
	// One write after healing must succeed: retried with the same request id (idempotent) until
	// a leader takes it.
	k := &wkey{tenant: "t1", service: "final", byVersion: map[uint32][]int{}, revoked: map[uint32]bool{}}
	var err error
	for attempt := 0; len(c.gov) > 0 && attempt < 60 && ctx.Err() == nil; attempt++ {
		// In governance mode the final write is a service created at governance and applied by
		// the region through the feed: both planes, and the feed between them, recovered.
		err = wl.createAtGovernance(ctx, attempt, "jepsen-final-write", k.tenant, k.service, 10*time.Second)
		if err == nil {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	for attempt := 0; len(c.gov) == 0 && attempt < 60 && ctx.Err() == nil; attempt++ {
		err = wl.withAdmin(ctx, attempt%len(c.nodes), 10*time.Second, func(cctx context.Context, a kv1.AdminServiceClient) error {
			_, err := a.CreateKey(cctx, &kv1.CreateKeyRequest{RequestId: "jepsen-final-write", Tenant: k.tenant, Service: k.service})
			return err
		})
		if err == nil {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	if err != nil {
		final.problem("the final write failed after healing: %v", err)
	}
	// Converge: every node has applied what the leader committed; all tenants active again
	// (an anchor lockout lifts once the anchor answers).
	conv := newVerdict("state-converged")
	hashes, states := convergedStates(ctx, c, cs, nm, logf)
	var first string
	for i, hsh := range hashes {
		if hsh == "" {
			conv.problem("%s: could not read its state", c.nodes[i].id)
			continue
		}
		if first == "" {
			first = hsh
		} else if hsh != first {
			conv.problem("%s: state hash %s differs from %s's %s", c.nodes[i].id, hsh[:12], c.nodes[0].id, first[:12])
		}
	}
	if conv.Result == OK {
		conv.Detail = "every node's tenants and keys hash to " + first[:12]
	}
	os.WriteFile(filepath.Join(c.dir, "final-states.txt"), []byte(strings.Join(states, "\n\n")), 0o600)

	ops := h.snapshot()
	acked := checkAckedWrites(ops, c, cs)
	unwraps := checkFinalUnwraps(ctx, ops, c, wl, h)
	if len(c.gov) > 0 {
		return []*Verdict{members, final, conv, checkFeedCaughtUp(ctx, c, cs, nm), acked, unwraps}
	}
	return []*Verdict{members, final, conv, acked, unwraps}
}

// checkFeedCaughtUp: once healed, the region reports every governance event applied (no event of
// its tenants pending at the governance leader) within a minute.
func checkFeedCaughtUp(ctx context.Context, c *cluster, cs *conns, nm *nemesis) *Verdict {
	v := newVerdict("feed-caught-up")
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for ctx.Err() == nil {
		if g := nm.govLeader(ctx); g >= 0 {
			if cl, err := cs.gov(g); err == nil {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := cl.Status(cctx, &kv1.GovernanceStatusRequest{})
				cancel()
				if err == nil {
					last = fmt.Sprintf("head cursor %d, region not reported", st.GetHeadCursor())
					for _, r := range st.GetRegions() {
						if r.GetCursor().GetRegion() != regionName {
							continue
						}
						last = fmt.Sprintf("head cursor %d, region %s applied %d, %d pending", st.GetHeadCursor(), regionName,
							r.GetCursor().GetAppliedCursor(), r.GetPendingEvents())
						if r.GetPendingEvents() == 0 {
							v.Detail = last
							return v
						}
					}
				}
			}
		}
		if time.Now().After(deadline) {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	v.problem("the region did not catch up with the governance feed within a minute: %s", last)
	return v
}

// describeAll reads every tenant with its keys from node i's applied state.
func describeAll(ctx context.Context, cs *conns, i int) (map[string]*kv1.DescribeTenantResponse, error) {
	a, err := cs.admin(i)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lt, err := a.ListTenants(cctx, &kv1.ListTenantsRequest{PageSize: 1000})
	if err != nil {
		return nil, err
	}
	out := map[string]*kv1.DescribeTenantResponse{}
	for _, t := range lt.GetTenants() {
		d, err := a.DescribeTenant(cctx, &kv1.DescribeTenantRequest{Tenant: t.GetName()})
		if err != nil {
			return nil, err
		}
		out[t.GetName()] = d
	}
	return out, nil
}

// convergedStates waits (up to a minute) until every node reports the same applied state and no
// tenant is locked, and returns each node's state hash and text.
func convergedStates(ctx context.Context, c *cluster, cs *conns, nm *nemesis, logf func(string, ...any)) ([]string, []string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		hashes := make([]string, len(c.nodes))
		states := make([]string, len(c.nodes))
		same, locked := true, false
		for i := range c.nodes {
			d, err := describeAll(ctx, cs, i)
			if err != nil {
				same = false
				continue
			}
			names := make([]string, 0, len(d))
			for n := range d {
				names = append(names, n)
			}
			sort.Strings(names)
			var b strings.Builder
			for _, n := range names {
				if d[n].GetTenant().GetState() != kv1.TenantState_TENANT_STATE_ACTIVE {
					locked = true
				}
				js, _ := protojson.MarshalOptions{}.Marshal(d[n])
				b.Write(js)
				b.WriteByte('\n')
			}
			sum := sha256.Sum256([]byte(b.String()))
			hashes[i] = hex.EncodeToString(sum[:])
			states[i] = c.nodes[i].id + "\n" + b.String()
			if hashes[i] != hashes[0] {
				same = false
			}
		}
		if (same && !locked) || time.Now().After(deadline) || ctx.Err() != nil {
			if !same || locked {
				logf("final state: converged=%v locked=%v after waiting a minute", same, locked)
			}
			return hashes, states
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// checkAckedWrites: every acknowledged write is in every node's final state (create: the key
// exists; rotate: the version exists; revoke: the version, or the service, is revoked), and the
// versions of every key run 1..n without gaps.
func checkAckedWrites(ops []Op, c *cluster, cs *conns) *Verdict {
	v := newVerdict("acked-writes-durable")
	checked := 0
	for i := range c.nodes {
		d, err := describeAll(context.Background(), cs, i)
		if err != nil {
			v.problem("%s: %v", c.nodes[i].id, err)
			continue
		}
		keys := map[string]*kv1.Key{}
		for _, t := range d {
			for _, k := range t.GetKeys() {
				keys[k.GetTenant()+"/"+k.GetService()] = k
				for j, ver := range k.GetVersions() {
					if ver.GetVersion() != uint32(j+1) {
						v.problem("%s: %s/%s has version %d at position %d (a gap)", c.nodes[i].id, k.GetTenant(), k.GetService(), ver.GetVersion(), j+1)
					}
				}
			}
		}
		for _, op := range ops {
			if op.Outcome != OK || (op.Type != OpCreate && op.Type != OpRotate && op.Type != OpRevoke) {
				continue
			}
			checked++
			k := keys[op.Key]
			if k == nil {
				v.problem("%s: acknowledged %s %d of %s, but the key is missing", c.nodes[i].id, op.Type, op.ID, op.Key)
				continue
			}
			switch op.Type {
			case OpRotate:
				if int(op.Version) > len(k.GetVersions()) {
					v.problem("%s: rotation %d returned v%d, but %s has %d versions", c.nodes[i].id, op.ID, op.Version, op.Key, len(k.GetVersions()))
				}
			case OpRevoke:
				if op.Arg == 0 {
					// DescribeKey cannot show a revoked service (see DESIGN.md, "Findings"); the
					// final unwraps and the fence checker cover service revocations.
					continue
				}
				for _, ver := range k.GetVersions() {
					if op.Arg == ver.GetVersion() && ver.GetState() != kv1.KeyState_KEY_STATE_REVOKED {
						v.problem("%s: revocation %d of %s v%d acknowledged, but the version is %s", c.nodes[i].id, op.ID, op.Key, ver.GetVersion(), ver.GetState())
					}
				}
			}
		}
	}
	v.Detail = fmt.Sprintf("%d acknowledged writes checked on %d nodes", checked/max(len(c.nodes), 1), len(c.nodes))
	return v
}

// maxFinalUnwraps bounds the final unwraps.
const maxFinalUnwraps = 5000

// checkFinalUnwraps: every acknowledged wrap unwraps (to its plaintext) after healing unless its
// version was revoked, in which case every node refuses it.
func checkFinalUnwraps(ctx context.Context, ops []Op, c *cluster, wl *workload, h *history) *Verdict {
	v := newVerdict("acked-wraps-unwrap")
	revoked := map[string]map[uint32]bool{}
	svcRevoked := map[string]bool{}
	for _, op := range ops {
		if op.Type == OpRevoke && op.Outcome != Fail {
			// Indeterminate revocations may have happened: their keys are excused both ways.
			if revoked[op.Key] == nil {
				revoked[op.Key] = map[uint32]bool{}
			}
			if op.Arg == 0 {
				svcRevoked[op.Key] = true
			}
			revoked[op.Key][op.Arg] = true
		}
	}
	type job struct {
		op Op
		d  *opData
	}
	var jobs []job
	for _, op := range ops {
		if op.Type == OpWrap && op.Outcome == OK {
			if d := h.get(op.ID); d != nil {
				jobs = append(jobs, job{op, d})
			}
		}
	}
	// At most maxFinalUnwraps, so that the final phase stays short: wraps of versions not
	// revoked first (they must still open), then an even sample of the revoked (they must not).
	total := len(jobs)
	if total > maxFinalUnwraps {
		var live, dead []job
		for _, j := range jobs {
			if svcRevoked[j.op.Key] || revoked[j.op.Key][j.op.Version] {
				dead = append(dead, j)
			} else {
				live = append(live, j)
			}
		}
		even := func(js []job, n int) []job {
			if len(js) <= n {
				return js
			}
			out := make([]job, 0, n)
			for i := range n {
				out = append(out, js[i*len(js)/n])
			}
			return out
		}
		live = even(live, maxFinalUnwraps*4/5)
		jobs = append(live, even(dead, maxFinalUnwraps-len(live))...)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ch := make(chan job)
	var unwrapped, refused int
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				k := wl.all[j.op.Key]
				if k == nil {
					continue
				}
				n := j.op.ID % len(c.nodes)
				res := wl.unwrapOnce(ctx, probeProcess+len(c.nodes)+n, n, k, j.op.ID, j.d)
				isRevoked := svcRevoked[j.op.Key] || revoked[j.op.Key][j.op.Version]
				mu.Lock()
				switch {
				case res.Outcome == OK && res.Error != "":
					v.problem("wrap %d: final unwrap on %s: %s", j.op.ID, res.Node, res.Error)
				case res.Outcome == OK:
					unwrapped++
				case isRevoked:
					refused++
				default:
					v.problem("wrap %d (%s v%d): final unwrap on %s failed: %s %s", j.op.ID, j.op.Key, j.op.Version, res.Node, res.Code, res.Error)
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	v.Detail = fmt.Sprintf("%d of %d acknowledged wraps unwrapped again: %d opened, %d refused as revoked", len(jobs), total, unwrapped, refused)
	return v
}
