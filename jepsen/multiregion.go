package jepsen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Multi-region mode (Scenario.Regions = 2; DESIGN.md, "Multi-region mode"): a governance plane
// feeds two regions, and two tenants live in them: a shared tenant homed in the first region and
// present in both (one key hierarchy; the home makes every version and governance carries it
// sealed to the other), and a tenant resident in the first region only, of which the second must
// never hold a byte.
const (
	regionA = "jepsen-a"
	regionB = "jepsen-b"
	// The tenants' names are long enough that finding one in a region's files is no accident
	// (checkResidency searches region B's files for residentTenant).
	sharedTenant   = "shared-ab"
	residentTenant = "resident-a"
	witnessService = "witness"
)

// Multi-region nemeses (a no-op outside multi-region mode).
const (
	// RegionGovernancePartition cuts every node of one region (drawn) off from every governance
	// node: the feed of the whole region stops, so governance revocations of its tenants wait
	// (and time out, indeterminate) while the region keeps serving under its own leases.
	RegionGovernancePartition = "region-governance-partition"
	// RegionsPartition cuts every node of one region off from every node of the other (their
	// leaders included): regions talk only through governance, so nothing may change.
	RegionsPartition = "regions-partition"
)

// MultiRegionNemeses lists the kinds a multi-region scenario draws from: the region kinds are
// applied to one region drawn at random, the governance ones to the shared governance plane.
var MultiRegionNemeses = []string{KillLeader, PartitionLeader, PartitionFollower, GovernancePartition, RegionGovernancePartition, RegionsPartition, GovernanceKill}

// multiRegion is a run's two regions, their connections and nemeses.
type multiRegion struct {
	regions []*cluster
	conns   []*conns
	nms     []*nemesis // nms[0] records every fault (the others' rec)
	r       *rand.Rand
	all     *cluster // every node of both regions and governance: teardown and the node checks
}

// runMulti is Run for a scenario with two regions; ctx already ends on SIGINT and SIGTERM.
func runMulti(ctx context.Context, sc Scenario, opts Options, timing Timing, res *Result, logf func(string, ...any)) (*Result, error) {
	if sc.Regions != 2 {
		return nil, fmt.Errorf("jepsen: scenario %s has %d regions; multi-region mode runs two", sc.Name, sc.Regions)
	}
	if sc.Governance == 0 {
		sc.Governance = 3
		res.Scenario.Governance = 3
	}
	n, g := sc.Nodes, sc.Governance
	hosts := 2*n + g
	var nw network
	if opts.Network == "netns" || (opts.Network == "" && isRoot()) {
		w, err := newNetnsNet(hosts)
		if err != nil {
			return nil, err
		}
		nw = w
	} else {
		w, err := newLoopbackNet(hosts)
		if err != nil {
			return nil, err
		}
		nw = w
	}
	defer nw.close()
	res.Network = nw.name()
	var nemeses []string
	for _, k := range sc.Nemeses {
		if !nw.canPartition() && needsNetwork[k] {
			res.Skipped = append(res.Skipped, k)
			continue
		}
		if !slices.Contains(MultiRegionNemeses, k) {
			return nil, fmt.Errorf("jepsen: multi-region mode runs the nemeses %s, not %s", strings.Join(MultiRegionNemeses, ","), k)
		}
		nemeses = append(nemeses, k)
	}
	logf("seed %d, multi-region: %d governance node(s), regions %s and %s of %d nodes each on %s, raft heartbeat %s election %s snapshot-threshold %d trailing-logs %d, lease %s",
		opts.Seed, g, regionA, regionB, n, nw.name(), timing.Heartbeat, timing.Election, timing.SnapshotThreshold, timing.TrailingLogs, timing.Lease)

	// Hosts: region A's nodes 0…n-1, region B's n…2n-1, governance 2n….
	a, err := newRegionCluster(opts.Binary, opts.Dir, nw, n, timing, 2, g, regionA, "a", 0, 2*n)
	if err != nil {
		return nil, err
	}
	b, err := a.sibling(n, regionB, "b", n)
	if err != nil {
		return nil, err
	}
	all := *a
	all.nodes = append(slices.Clone(a.nodes), b.nodes...)
	m := &multiRegion{regions: []*cluster{a, b}, r: rand.New(rand.NewPCG(opts.Seed, 3)), all: &all}
	defer all.shutdown()
	for i, c := range m.regions {
		cs := newConns(c)
		defer cs.close()
		m.conns = append(m.conns, cs)
		m.nms = append(m.nms, &nemesis{c: c, cs: cs, r: rand.New(rand.NewPCG(opts.Seed, uint64(1+i))), logf: logf})
	}
	start := time.Now()
	h, err := newHistory(filepath.Join(opts.Dir, "history.jsonl"), start)
	if err != nil {
		return nil, err
	}
	defer h.close()
	for _, nm := range m.nms {
		nm.h = h
		if nm != m.nms[0] {
			nm.rec = m.nms[0]
		}
	}
	for j := range a.gov {
		if err := a.startGov(j, true); err != nil {
			return nil, err
		}
	}
	for _, c := range m.regions {
		for i := range c.nodes {
			if err := c.start(i, true); err != nil {
				return nil, err
			}
		}
	}
	wl := m.workload(h, timing)
	if err := m.setup(ctx, wl, logf); err != nil {
		return nil, err
	}
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
		progress(wctx, h, m.nms[0], logf)
	}()
	sleep(ctx, 4*time.Second) // a quiet warm-up
	firstFault := h.now()
	deadline := start.Add(sc.Duration)
	var nemErr error
	for ctx.Err() == nil && time.Until(deadline) > 3*time.Second && len(nemeses) > 0 {
		kind := nemeses[m.r.IntN(len(nemeses))]
		if err := m.inject(ctx, kind); err != nil {
			nemErr = err
			logf("nemesis %s: %v", kind, err)
			break
		}
		sleep(ctx, time.Duration(1500+m.r.IntN(2000))*time.Millisecond)
	}
	sleep(ctx, time.Until(deadline))
	m.healAll()
	for _, nm := range m.nms {
		nm.waitLeader(ctx, 30*time.Second)
	}
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
	res.Verdicts = append(res.Verdicts, m.finalChecks(ctx, wl, h, logf)...)
	ops = h.snapshot()
	lin, model, info := checkLinearizable(remapClients(ops, sc.Clients), 60*time.Second)
	res.Verdicts = append(res.Verdicts, lin, checkRevocationFence(ops), checkPlaintexts(ops), checkVersions(ops), checkCreateThenUse(ops),
		checkResidentOps(ops, b))
	faults := m.nms[0].injected()
	for _, f := range faults {
		res.Faults[f.Kind]++
	}
	for _, op := range ops {
		res.Ops[op.Type+" "+op.Outcome]++
	}
	res.RevokeLatency = revokeLatency(ops)
	res.ImportLag = importLag(ops, b)
	for _, rf := range wl.refusals {
		switch rf.Code {
		case "Canceled":
			continue
		case "DeadlineExceeded":
			res.Unanswered++
			continue
		}
		res.Refusals++
		res.RefusalCodes[rf.Code]++
		res.WorstRefusal = max(res.WorstRefusal, rf.After)
	}
	all.shutdown()
	h.close()
	res.Verdicts = append(res.Verdicts, checkNoCrash(&all), checkNoPlaintext(&all, h), checkResidency(a, b, residentTenant))
	res.Elapsed = time.Since(start)
	if err := writeReport(res, &all, ops, faults, wl.refusals, model, info, sc.Clients); err != nil {
		logf("writing the report: %v", err)
	}
	if res.OK() && !opts.KeepData {
		os.RemoveAll(filepath.Join(opts.Dir, "nodes"))
		os.RemoveAll(filepath.Join(opts.Dir, "anchors"))
		os.RemoveAll(filepath.Join(opts.Dir, "pki"))
	}
	return res, nil
}

// workload is the clients' view of both regions: the shared tenant on every node of both (its
// rotations at its home, region A), the resident tenant on region A's nodes, and a few of its
// unwraps sent to region B's, which must refuse them (checkResidentOps).
func (m *multiRegion) workload(h *history, timing Timing) *workload {
	a, b := m.regions[0], m.regions[1]
	wl := newWorkload(a, m.conns[0], h, []string{sharedTenant, residentTenant}, timing)
	var inA, inB []int
	for i := range a.nodes {
		inA = append(inA, i)
	}
	for i := range b.nodes {
		inB = append(inB, len(wl.eps))
		wl.eps = append(wl.eps, endpoint{c: b, cs: m.conns[1], i: i})
	}
	wl.groups = map[string][][]int{sharedTenant: {inA, inB}, residentTenant: {inA}}
	wl.home = map[string][]int{sharedTenant: inA, residentTenant: inA}
	wl.outside = map[string][]int{residentTenant: inB}
	wl.rotations = 1
	return wl
}

// setup waits for both regions and governance, creates the two tenants at governance, and waits
// until every node of each tenant's regions describes it (region B has the shared tenant once
// region A published its sealed keys and governance forwarded them).
func (m *multiRegion) setup(ctx context.Context, wl *workload, logf func(string, ...any)) error {
	a := m.regions[0]
	for _, nm := range m.nms {
		if nm.waitLeader(ctx, 60*time.Second) < 0 {
			return fmt.Errorf("jepsen: no leader in region %s within 60 s of starting it", nm.c.region)
		}
	}
	if m.nms[0].waitGovLeader(ctx, 60*time.Second) < 0 {
		return errors.New("jepsen: no governance leader within 60 s of starting it")
	}
	reqs := []*kv1.GovernanceCreateTenantRequest{
		{RequestId: "jepsen-tenant-" + sharedTenant, Tenant: sharedTenant, AnchorUri: a.anchorURI(0),
			Regions: []string{regionA, regionB}, HomeRegion: regionA, OwnerPublicKey: a.ownerPub},
		{RequestId: "jepsen-tenant-" + residentTenant, Tenant: residentTenant, AnchorUri: a.anchorURI(1),
			Regions: []string{regionA}, OwnerPublicKey: a.ownerPub},
	}
	for _, req := range reqs {
		err := callGov(ctx, m.conns[0], 0, 60*time.Second, func(cctx context.Context, g kv1.GovernanceServiceClient) error {
			ictx, cancel := context.WithTimeout(cctx, 10*time.Second)
			defer cancel()
			_, err := g.CreateTenant(ictx, req)
			if err != nil && strings.Contains(err.Error(), "AlreadyExists") {
				return nil
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("jepsen: creating tenant %s at governance: %w", req.Tenant, err)
		}
	}
	for _, t := range []string{sharedTenant, residentTenant} {
		if !wl.regionHas(ctx, wl.groupsOf(t), 0, 60*time.Second, func(cctx context.Context, c kv1.AdminServiceClient) error {
			_, err := c.DescribeTenant(cctx, &kv1.DescribeTenantRequest{Tenant: t})
			return err
		}, true) {
			return fmt.Errorf("jepsen: tenant %s, created at governance, not on every node of its regions within 60 s", t)
		}
	}
	// The witness: a key of the shared tenant never revoked whole, so that the final phase
	// finds every write acknowledged on it over the whole run in both regions (keys of the
	// workload are retired, revoked whole, after keyLifetime operations, and a service revoked
	// whole is not sought in the other region).
	k := &wkey{tenant: sharedTenant, service: witnessService, byVersion: map[uint32][]int{}, revoked: map[uint32]bool{},
		permanent: true, maxVersion: 1}
	if err := wl.createAtGovernance(ctx, 0, "jepsen-witness", k.tenant, k.service, 60*time.Second); err != nil {
		return fmt.Errorf("jepsen: creating the witness key %s at governance: %w", k.name(), err)
	}
	wl.mu.Lock()
	wl.active = append(wl.active, k)
	wl.all[k.name()] = k
	wl.mu.Unlock()
	logf("regions up: %s and %s, %d governance node(s); tenant %s homed in %s and in both, %s in %s only; witness key %s",
		regionA, regionB, len(a.gov), sharedTenant, regionA, residentTenant, regionA, k.name())
	return nil
}

// inject runs one fault: a region kind in a region drawn at random, a governance kind on the
// governance plane, the multi-region kinds here.
func (m *multiRegion) inject(ctx context.Context, kind string) error {
	switch kind {
	case GovernanceKill:
		return m.nms[0].inject(ctx, kind)
	case RegionGovernancePartition, RegionsPartition:
	default:
		return m.nms[m.r.IntN(len(m.nms))].inject(ctx, kind)
	}
	nm := m.nms[0]
	c := m.regions[0]
	f := nm.begin(kind)
	defer func() { nm.finish(f) }()
	defer c.net.heal()
	hold := nm.hold()
	hostsOf := func(c *cluster) []int {
		var out []int
		for i := range c.nodes {
			out = append(out, c.host(i))
		}
		return out
	}
	var err error
	switch kind {
	case RegionGovernancePartition:
		r := m.regions[m.r.IntN(len(m.regions))]
		var gs []int
		for j := range r.gov {
			gs = append(gs, r.govBase+j)
		}
		f.Detail = r.region + " | governance"
		err = nm.partitionHosts(hostsOf(r), gs)
	case RegionsPartition:
		f.Detail = regionA + " | " + regionB
		err = nm.partitionHosts(hostsOf(m.regions[0]), hostsOf(m.regions[1]))
	}
	if err != nil {
		return err
	}
	nm.logf("nemesis: %s %s for %s", kind, f.Detail, hold)
	sleep(ctx, hold)
	return nil
}

// healAll heals both regions and governance.
func (m *multiRegion) healAll() {
	for _, nm := range m.nms {
		nm.healAll()
	}
}

// finalChecks heals, then checks each region's end state: every node a voter, one final write
// (a service of the shared tenant created at governance and applied in both regions), the feed
// caught up, the nodes of each region agreeing, every acknowledged write in every node of the
// tenant's regions, and every acknowledged wrap unwrapping in each region of its tenant.
func (m *multiRegion) finalChecks(ctx context.Context, wl *workload, h *history, logf func(string, ...any)) []*Verdict {
	m.healAll()
	members := newVerdict("membership")
	var voters []string
	for _, nm := range m.nms {
		for i, nd := range nm.c.nodes {
			if !slices.Contains(nm.voters(ctx), nd.id) {
				if err := nm.ensureVoter(ctx, i, 30*time.Second); err != nil {
					members.problem("%v", err)
				}
			}
		}
		voters = append(voters, nm.c.region+": "+strings.Join(nm.voters(ctx), ","))
	}
	members.Detail = "voters: " + strings.Join(voters, "; ")

	final := newVerdict("final-write")
	var err error
	for attempt := 0; attempt < 60 && ctx.Err() == nil; attempt++ {
		err = wl.createAtGovernance(ctx, attempt, "jepsen-final-write", sharedTenant, "final", 10*time.Second)
		if err == nil {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	if err != nil {
		final.problem("the final write (%s/final at governance, applied in both regions) failed after healing: %v", sharedTenant, err)
	} else {
		final.Detail = sharedTenant + "/final created at governance and described in both regions"
	}

	feed := newVerdict("feed-caught-up")
	conv := newVerdict("state-converged")
	var feeds, convs []string
	for i, nm := range m.nms {
		c, cs := m.regions[i], m.conns[i]
		fv := checkFeedCaughtUp(ctx, c, cs, nm)
		for _, p := range fv.Problems {
			feed.problem("%s: %s", c.region, p)
		}
		feeds = append(feeds, c.region+": "+fv.Detail)
		hashes, states := convergedStates(ctx, c, cs, nm, logf)
		first := ""
		for j, hsh := range hashes {
			switch {
			case hsh == "":
				conv.problem("%s: could not read its state", c.nodes[j].id)
			case first == "":
				first = hsh
			case hsh != first:
				conv.problem("%s: state hash %s differs from %s's %s", c.nodes[j].id, hsh[:12], c.nodes[0].id, first[:12])
			}
		}
		if first != "" {
			convs = append(convs, c.region+" "+first[:12])
		}
		os.WriteFile(filepath.Join(c.dir, "final-states-"+c.region+".txt"), []byte(strings.Join(states, "\n\n")), 0o600)
	}
	feed.Detail = strings.Join(feeds, "; ")
	conv.Detail = "each region's nodes' tenants and keys hash the same: " + strings.Join(convs, ", ")

	// Region A holds every acknowledged write; region B those of the shared tenant, once it has
	// imported them (waited for up to a minute). A service revoked whole before region B imported
	// it is never created there (there is nothing to use), so its writes are not sought in B.
	ops := h.snapshot()
	acked := checkAckedWrites(ops, m.regions[0], m.conns[0])
	acked.Detail = regionA + ": " + acked.Detail
	bOps := sharedOps(ops)
	var accB *Verdict
	deadline := time.Now().Add(time.Minute)
	for ctx.Err() == nil {
		accB = checkAckedWrites(bOps, m.regions[1], m.conns[1])
		if accB.Result == OK || time.Now().After(deadline) {
			break
		}
		sleep(ctx, time.Second)
	}
	for _, p := range accB.Problems {
		acked.problem("%s: %s", regionB, p)
	}
	acked.Detail += "; " + regionB + " (" + sharedTenant + "): " + accB.Detail
	unwraps := checkFinalUnwraps(ctx, ops, wl, h)
	return []*Verdict{members, final, feed, conv, acked, unwraps}
}

// sharedOps are the shared tenant's operations, but those of services whose revocation (as a
// whole) may have happened.
func sharedOps(ops []Op) []Op {
	gone := map[string]bool{}
	for _, op := range ops {
		if op.Type == OpRevoke && op.Arg == 0 && op.Outcome != Fail {
			gone[op.Key] = true
		}
	}
	var out []Op
	for _, op := range ops {
		if strings.HasPrefix(op.Key, sharedTenant+"/") && !gone[op.Key] {
			out = append(out, op)
		}
	}
	return out
}

// checkResidentOps: no operation on the resident tenant's keys succeeded on a node of a region
// outside its residency (region b): the workload sends a few of its unwraps there.
func checkResidentOps(ops []Op, b *cluster) *Verdict {
	v := newVerdict("residency-refused")
	outside := map[string]bool{}
	for _, nd := range b.nodes {
		outside[nd.id] = true
	}
	asked, codes := 0, map[string]int{}
	for _, op := range ops {
		if !strings.HasPrefix(op.Key, residentTenant+"/") || !outside[op.Node] {
			continue
		}
		asked++
		if op.Outcome == OK {
			v.problem("op %d: %s %s succeeded on %s, a node of %s, outside the tenant's residency", op.ID, op.Type, op.Key, op.Node, b.region)
			continue
		}
		codes[op.Code]++
	}
	v.Detail = fmt.Sprintf("%d operations on %s's keys sent to %s: refused %v", asked, residentTenant, b.region, codes)
	if asked == 0 {
		v.problem("no operation on %s's keys was sent to %s: the check checked nothing", residentTenant, b.region)
	}
	return v
}

// checkResidency scans, after the run (every node stopped), every file of region b's nodes' data
// directories — the Raft log and stable store (bbolt), its snapshots, the durable revocation
// set — for the name of the tenant resident in region a only: every record of a tenant (its
// key versions, sealed, its services, revocations, policy) is keyed by its name, so a region that
// received any of them holds the name. The audit log is left out: it records calls refused
// there, which name the caller's tenant (checkResidentOps sends some). As a control, the same
// scan must find the name in region a's files; a scan that finds it nowhere proves nothing.
func checkResidency(a, b *cluster, tenant string) *Verdict {
	v := newVerdict("residency")
	needle := []byte(tenant)
	scan := func(c *cluster) (files, hits int, mb int64, found []string) {
		for _, nd := range c.nodes {
			filepath.WalkDir(nd.dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), "audit.log") {
					return nil
				}
				data, err := os.ReadFile(path)
				if err != nil {
					return nil
				}
				files++
				mb += int64(len(data))
				if bytes.Contains(data, needle) {
					hits++
					rel, _ := filepath.Rel(c.dir, path)
					found = append(found, rel)
				}
				return nil
			})
		}
		return files, hits, mb >> 20, found
	}
	bf, bh, bmb, bfound := scan(b)
	for _, p := range bfound {
		v.problem("%s (a node of %s) holds %q, a tenant resident in %s only", p, b.region, tenant, a.region)
	}
	af, ah, _, _ := scan(a)
	if ah == 0 {
		v.problem("the control failed: %q is in none of %s's %d files, so the scan of %s proves nothing", tenant, a.region, af, b.region)
	}
	var raftB int
	for _, nd := range b.nodes {
		if _, err := os.Stat(filepath.Join(nd.dir, "raft", "raft.db")); err == nil {
			raftB++
		}
	}
	if raftB == 0 {
		v.problem("no raft/raft.db under %s's nodes: the scan read no Raft state", b.region)
	}
	v.Detail = fmt.Sprintf("%q in 0 of %s's %d files (%d MB, %d Raft stores, snapshots, revocation sets; audit logs aside); control: in %d of %s's %d files",
		tenant, b.region, bf, bmb, raftB, ah, a.region, af)
	if bh > 0 {
		v.Detail = fmt.Sprintf("%q in %d of %s's %d files", tenant, bh, b.region, bf)
	}
	return v
}

// importLag measures, for each version of the shared tenant's keys made by an acknowledged
// rotation (in its home region), the time from the acknowledgement to the completion of the
// first successful wrap or unwrap with that version on a node of region b. The workload uses
// every key hundreds of times a second, so this bounds how long a version takes to reach the
// other region through governance (publish, TENANT_KEYS, import) from above.
func importLag(ops []Op, b *cluster) *Latency {
	inB := map[string]bool{}
	for _, nd := range b.nodes {
		inB[nd.id] = true
	}
	type kv struct {
		key string
		v   uint32
	}
	made := map[kv]int64{}
	for _, op := range ops {
		if op.Type == OpRotate && op.Outcome == OK && strings.HasPrefix(op.Key, sharedTenant+"/") {
			if t, ok := made[kv{op.Key, op.Version}]; !ok || op.Complete < t {
				made[kv{op.Key, op.Version}] = op.Complete
			}
		}
	}
	first := map[kv]int64{}
	for _, op := range ops {
		if (op.Type != OpWrap && op.Type != OpUnwrap) || op.Outcome != OK || !inB[op.Node] {
			continue
		}
		k := kv{op.Key, op.Version}
		if _, ok := made[k]; ok {
			if t, seen := first[k]; !seen || op.Complete < t {
				first[k] = op.Complete
			}
		}
	}
	var d []time.Duration
	for k, t := range first {
		d = append(d, time.Duration(max(0, t-made[k])))
	}
	if len(d) == 0 {
		return &Latency{}
	}
	slices.Sort(d)
	return &Latency{Count: len(d), P50: d[len(d)/2], P99: d[len(d)*99/100], Max: d[len(d)-1]}
}
