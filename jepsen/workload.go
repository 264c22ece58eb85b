package jepsen

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"golang.org/x/time/rate"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Workload shape. Keys live for a bounded number of operations and are then revoked as a whole
// service and replaced, so that each key's history stays small enough for the linearizability
// checker to decide in seconds, and the create and revoke paths run all the time.
const (
	activeKeys    = 6    // service keys in use at once
	keyLifetime   = 5000 // operations on a key before it is retired (service revoked)
	maxRotations  = 40   // versions per key stay below 64 (the model's bitmask)
	wrapTimeout   = time.Second
	writeTimeout  = 3 * time.Second
	probeDeadline = 2 * time.Second
)

// wkey is the workload's view of one service key.
type wkey struct {
	tenant, service string
	mu              sync.Mutex
	ops             int
	rotations       int
	wraps           []int            // acknowledged wraps (op ids)
	byVersion       map[uint32][]int // acknowledged wraps by version
	maxVersion      uint32           // highest version acknowledged (create: 1)
	revoked         map[uint32]bool  // versions whose revocation was acknowledged
	retired         bool
	// permanent: never retired (revoked whole), so that it lives through the whole run (the
	// multi-region witness key, multiregion.go).
	permanent bool
}

func (k *wkey) name() string { return k.tenant + "/" + k.service }

// Refusal measures, for one acknowledged revocation and one node, how long after the
// acknowledgement the node's first refusal of the revoked key came back.
type Refusal struct {
	Revoke int           `json:"revoke"`
	Node   string        `json:"node"`
	After  time.Duration `json:"after"`
	// Code is the refusal's gRPC code (FailedPrecondition: revoked; Unavailable: no lease, or
	// the node is down; DeadlineExceeded: paused or cut off).
	Code string `json:"code"`
}

// Revoker is how the workload revokes: an acknowledgement (nil error) must mean that no node of
// the region uses the scope's keys any more. Revoke is sent through node n (a region node for
// adminRevoker, governance node n mod the governance nodes for governanceRevoker); target names
// that node for the history, and fence is how the revocation was made effective, as the history
// records it. Every checker applies to every Revoker unchanged.
type Revoker interface {
	Revoke(ctx context.Context, n int, requestID string, scope *kv1.KeyScope) (fence string, err error)
	target(n int) string
}

// adminRevoker revokes through the region's own AdminService.RevokeKey, which returns once the
// region's revocation fence has run.
type adminRevoker struct{ w *workload }

func (a adminRevoker) target(n int) string { return a.w.eps[n].id() }

func (a adminRevoker) Revoke(ctx context.Context, n int, requestID string, scope *kv1.KeyScope) (string, error) {
	var resp *kv1.RevokeKeyResponse
	err := a.w.withAdmin(ctx, n, a.w.revokeTimeout(), func(cctx context.Context, c kv1.AdminServiceClient) error {
		var err error
		resp, err = c.RevokeKey(cctx, &kv1.RevokeKeyRequest{RequestId: requestID, Scope: scope, Reason: "jepsen"})
		return err
	})
	if err != nil {
		return "", err
	}
	fence := resp.GetFence()
	return "confirmed=" + strings.Join(fence.GetConfirmedNodes(), ",") + " expired=" + strings.Join(fence.GetLeaseExpiredNodes(), ","), nil
}

// governanceRevoker revokes at the governance plane: GovernanceService.Revoke with wait, which
// returns only once every region of the tenant has reported the event applied, and a region
// reports only after its own revocation fence (governance/DESIGN.md, "Waiting"). Its errors map
// as a region write's do (classify): NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT are
// definite refusals; UNAVAILABLE (no governance leader) and DEADLINE_EXCEEDED (the wait ran out:
// the event stands and a region may apply it later) are indeterminate.
type governanceRevoker struct{ w *workload }

func (g governanceRevoker) target(n int) string { return g.w.c.gov[n%len(g.w.c.gov)].id }

func (g governanceRevoker) Revoke(ctx context.Context, n int, requestID string, scope *kv1.KeyScope) (string, error) {
	var resp *kv1.RevokeResponse
	err := g.w.withGov(ctx, n, g.w.govRevokeTimeout(), func(cctx context.Context, c kv1.GovernanceServiceClient) error {
		var err error
		resp, err = c.Revoke(cctx, &kv1.RevokeRequest{RequestId: requestID, Target: scope, Reason: "jepsen", Wait: true})
		return err
	})
	if err != nil {
		return "", err
	}
	var regions []string
	for _, r := range resp.GetRegions() {
		regions = append(regions, fmt.Sprintf("%s@%d", r.GetRegion(), r.GetAppliedCursor()))
	}
	return fmt.Sprintf("governance event=%d regions=%s", resp.GetEvent().GetCursor(), strings.Join(regions, ",")), nil
}

// endpoint is one region node the clients call: node i of region c, through cs.
type endpoint struct {
	c  *cluster
	cs *conns
	i  int
}

func (e endpoint) id() string { return e.c.nodes[e.i].id }

// workload drives the clients.
type workload struct {
	limit *rate.Limiter // Scenario.Rate; nil: unthrottled
	c     *cluster      // the (first) region; its governance nodes are every region's
	cs    *conns
	// eps are the region nodes the clients call: c's nodes, or with several regions every
	// region's (multiregion.go). groups[t] lists, for tenant t, the endpoints of each region of
	// its residency (one group per region), and home[t] those of the region that makes its key
	// versions (rotations go there); with one region both are nil: every node, one group.
	eps    []endpoint
	groups map[string][][]int
	home   map[string][]int
	// outside[t] lists endpoints of regions outside tenant t's residency: one in fifty of its
	// unwraps goes there, and must be refused (checkResidentOps).
	outside map[string][]int
	// rotations is the percentage of operations that rotate (0: 3). Multi-region mode rotates
	// less, so that its keys do not run through their versions (maxRotations) and retire, every
	// version revoked, before the run ends: the final unwraps in both regions then check live
	// blobs, not refusals.
	rotations int
	h         *history
	tenants   []string
	timing    Timing
	revoker   Revoker
	// governance: services are created at governance (CreateService, then awaited in the
	// region) and revoked there (governanceRevoker); rotations stay region admin writes.
	governance bool

	mu       sync.Mutex
	active   []*wkey
	all      map[string]*wkey
	nextSvc  int
	refusals []Refusal

	okOps atomic.Int64
	reqs  atomic.Int64
}

func newWorkload(c *cluster, cs *conns, h *history, tenants []string, timing Timing) *workload {
	w := &workload{c: c, cs: cs, h: h, tenants: tenants, timing: timing, all: map[string]*wkey{}}
	for i := range c.nodes {
		w.eps = append(w.eps, endpoint{c: c, cs: cs, i: i})
	}
	w.revoker = adminRevoker{w}
	if len(c.gov) > 0 {
		w.governance = true
		w.revoker = governanceRevoker{w}
	}
	return w
}

func (w *workload) requestID(p int) string {
	return fmt.Sprintf("jepsen-%d-%d", p, w.reqs.Add(1))
}

// client runs one client until ctx ends: one request in flight at a time.
func (w *workload) client(ctx context.Context, p int, seed uint64) {
	r := rand.New(rand.NewPCG(seed, uint64(p)))
	for ctx.Err() == nil {
		if w.limit != nil && w.limit.Wait(ctx) != nil {
			return
		}
		if op := w.step(ctx, p, r); op.Code == codes.Unavailable.String() {
			// A node that is down refuses connections at once: back off a little rather than
			// fill the history with a million instant failures.
			sleep(ctx, time.Duration(20+r.IntN(60))*time.Millisecond)
		}
	}
}

func (w *workload) rotatePct() int {
	if w.rotations == 0 {
		return 3
	}
	return w.rotations
}

// newKeyTenant draws the tenant of a new key (w.mu held): at random, or with several regions the
// tenant with the fewest active keys, so that a short run cannot draw every key for one tenant
// and leave the residency checks nothing to check.
func (w *workload) newKeyTenant(r *rand.Rand) string {
	t := w.tenants[r.IntN(len(w.tenants))]
	if w.groups == nil {
		return t
	}
	count := map[string]int{}
	for _, k := range w.active {
		count[k.tenant]++
	}
	for _, u := range w.tenants {
		if count[u] < count[t] {
			t = u
		}
	}
	return t
}

// groupsOf lists the endpoints of each region of tenant's residency.
func (w *workload) groupsOf(tenant string) [][]int {
	if g, ok := w.groups[tenant]; ok {
		return g
	}
	all := make([]int, len(w.eps))
	for i := range all {
		all[i] = i
	}
	return [][]int{all}
}

// nodesOf lists the endpoints of every region of tenant's residency.
func (w *workload) nodesOf(tenant string) []int {
	var out []int
	for _, g := range w.groupsOf(tenant) {
		out = append(out, g...)
	}
	return out
}

// within maps a drawn endpoint n into set (nil: every endpoint).
func within(set []int, n int) int {
	if set == nil {
		return n
	}
	return set[n%len(set)]
}

func (w *workload) step(ctx context.Context, p int, r *rand.Rand) Op {
	n := r.IntN(len(w.eps))
	w.mu.Lock()
	if len(w.active) < activeKeys {
		w.nextSvc++
		k := &wkey{tenant: w.newKeyTenant(r), service: "s" + strconv.Itoa(w.nextSvc),
			byVersion: map[uint32][]int{}, revoked: map[uint32]bool{}}
		w.active = append(w.active, k)
		w.all[k.name()] = k
		w.mu.Unlock()
		return w.create(ctx, p, n, k)
	}
	k := w.active[r.IntN(len(w.active))]
	w.mu.Unlock()
	// Several regions: the node is one of the key's tenant's regions (rotations: its home).
	drawn := n
	if w.groups != nil {
		n = within(w.nodesOf(k.tenant), drawn)
	}

	k.mu.Lock()
	k.ops++
	retire := k.ops > keyLifetime && !k.retired && !k.permanent
	if retire {
		k.retired = true
	}
	// A key whose creation was never acknowledged and that nothing has used: its create was
	// indeterminate and most likely lost. Drop it rather than fail on it for its whole lifetime.
	stillborn := !retire && k.maxVersion == 0 && len(k.wraps) == 0 && k.ops > 50
	if stillborn {
		k.retired = true
	}
	nwraps := len(k.wraps)
	canRotate := k.rotations < maxRotations
	// The current version was revoked: wraps fail until a rotation, so rotate soon (or retire
	// the key when it may rotate no more).
	currentRevoked := k.maxVersion > 0 && k.revoked[k.maxVersion]
	if currentRevoked && !canRotate && !k.retired && !k.permanent {
		retire = true
		k.retired = true
	}
	k.mu.Unlock()
	if retire || stillborn {
		w.mu.Lock()
		for i, a := range w.active {
			if a == k {
				w.active = append(w.active[:i], w.active[i+1:]...)
				break
			}
		}
		w.mu.Unlock()
		if stillborn {
			return Op{}
		}
		return w.revoke(ctx, p, n, k, 0)
	}
	if currentRevoked && r.IntN(4) == 0 {
		return w.rotate(ctx, p, within(w.home[k.tenant], drawn), k)
	}
	switch x := r.IntN(100); {
	case x < 55 || nwraps == 0:
		return w.wrap(ctx, p, n, k, r)
	case x < 95:
		if out := w.outside[k.tenant]; out != nil && r.IntN(50) == 0 {
			n = within(out, drawn)
		}
		return w.unwrap(ctx, p, n, k, r)
	case x < 95+w.rotatePct() && canRotate:
		return w.rotate(ctx, p, within(w.home[k.tenant], drawn), k)
	case x < 99:
		return w.wrap(ctx, p, n, k, r)
	default:
		k.mu.Lock()
		var v uint32
		switch {
		case k.maxVersion > 1 && r.IntN(10) > 0:
			// Mostly old versions (what an operator retires)...
			v = uint32(1 + r.IntN(int(k.maxVersion-1)))
		case k.maxVersion > 0 && canRotate:
			// ...sometimes the current one, after which wraps fail until the next rotation.
			v = k.maxVersion
		}
		already := k.revoked[v]
		k.mu.Unlock()
		if v == 0 || already {
			return w.wrap(ctx, p, n, k, r)
		}
		return w.revoke(ctx, p, n, k, v)
	}
}

// classify turns a call's error into an outcome. For writes every error that does not prove the
// write was refused is indeterminate.
func classify(err error, write bool) (outcome, code string) {
	if err == nil {
		return OK, ""
	}
	st, _ := status.FromError(err)
	c := st.Code()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		c = codes.DeadlineExceeded
	}
	if !write {
		if c == codes.DeadlineExceeded || c == codes.Canceled {
			return Info, c.String()
		}
		return Fail, c.String()
	}
	switch c {
	case codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.InvalidArgument,
		codes.PermissionDenied, codes.Unauthenticated, codes.OutOfRange:
		return Fail, c.String()
	}
	return Info, c.String()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

func (w *workload) create(ctx context.Context, p, n int, k *wkey) Op {
	op := Op{Process: p, Type: OpCreate, Key: k.name(), Node: w.eps[n].id(), RequestID: w.requestID(p)}
	w.h.begin(&op)
	var err error
	if w.governance {
		op.Node = w.c.gov[n%len(w.c.gov)].id
		err = w.createAtGovernance(ctx, n, op.RequestID, k.tenant, k.service, writeTimeout)
	} else {
		err = w.withAdmin(ctx, n, writeTimeout, func(cctx context.Context, a kv1.AdminServiceClient) error {
			_, err := a.CreateKey(cctx, &kv1.CreateKeyRequest{RequestId: op.RequestID, Tenant: k.tenant, Service: k.service})
			return err
		})
	}
	op.Outcome, op.Code = classify(err, true)
	op.Error = errText(err)
	if op.Outcome == OK {
		op.Version = 1
		k.mu.Lock()
		k.maxVersion = max(k.maxVersion, 1)
		k.mu.Unlock()
	}
	w.h.end(&op, nil)
	w.count(op)
	if op.Outcome == Fail {
		// Refused for sure (a locked tenant, say): the key never exists; replace it.
		k.mu.Lock()
		k.retired = true
		k.mu.Unlock()
		w.mu.Lock()
		for i, a := range w.active {
			if a == k {
				w.active = append(w.active[:i], w.active[i+1:]...)
				break
			}
		}
		w.mu.Unlock()
	}
	return op
}

func (w *workload) rotate(ctx context.Context, p, n int, k *wkey) Op {
	op := Op{Process: p, Type: OpRotate, Key: k.name(), Node: w.eps[n].id(), RequestID: w.requestID(p)}
	k.mu.Lock()
	k.rotations++
	k.mu.Unlock()
	w.h.begin(&op)
	var resp *kv1.Key
	err := w.withAdmin(ctx, n, writeTimeout, func(cctx context.Context, a kv1.AdminServiceClient) error {
		var err error
		resp, err = a.RotateKey(cctx, &kv1.RotateKeyRequest{RequestId: op.RequestID, Tenant: k.tenant, Service: k.service})
		return err
	})
	op.Outcome, op.Code = classify(err, true)
	op.Error = errText(err)
	if op.Outcome == OK {
		op.Version = resp.GetCurrentVersion()
		k.mu.Lock()
		k.maxVersion = max(k.maxVersion, op.Version)
		k.mu.Unlock()
	}
	w.h.end(&op, nil)
	w.count(op)
	return op
}

func (w *workload) revokeTimeout() time.Duration {
	return writeTimeout + w.timing.Lease*2
}

// govRevokeTimeout bounds a governance revocation with wait: the governance write, the feed's
// delivery, the region's write and fence (up to a lease and a half when a node does not
// confirm), and the report back.
func (w *workload) govRevokeTimeout() time.Duration {
	return w.revokeTimeout() + 2*time.Second
}

// revoke revokes version v of k (0: the whole service) and, once acknowledged, probes every node
// with a blob of a revoked version (the revocation fence: from the acknowledgement on, no node
// may use it).
func (w *workload) revoke(ctx context.Context, p, n int, k *wkey, v uint32) Op {
	op := Op{Process: p, Type: OpRevoke, Key: k.name(), Node: w.revoker.target(n), Arg: v, RequestID: w.requestID(p)}
	w.h.begin(&op)
	fence, err := w.revoker.Revoke(ctx, n, op.RequestID, &kv1.KeyScope{Tenant: k.tenant, Service: k.service, Version: v})
	op.Outcome, op.Code = classify(err, true)
	op.Error = errText(err)
	if op.Outcome == OK {
		op.Fence = fence
	}
	w.h.end(&op, nil)
	w.count(op)
	if op.Outcome != OK {
		return op
	}
	k.mu.Lock()
	var blob int
	if v == 0 {
		for ver := range k.maxVersion {
			k.revoked[ver+1] = true
		}
		if len(k.wraps) > 0 {
			blob = k.wraps[len(k.wraps)-1]
		}
	} else {
		k.revoked[v] = true
		if ws := k.byVersion[v]; len(ws) > 0 {
			blob = ws[len(ws)-1]
		}
	}
	k.mu.Unlock()
	if blob != 0 {
		w.probe(ctx, op, k, blob)
	}
	return op
}

// probe asks every node to unwrap a blob of the revoked version right after the revocation was
// acknowledged, repeating until the node refuses, and records how long that took.
func (w *workload) probe(ctx context.Context, rev Op, k *wkey, wrapID int) {
	d := w.h.get(wrapID)
	if d == nil {
		return
	}
	var wg sync.WaitGroup
	for _, i := range w.nodesOf(k.tenant) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(probeDeadline)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				op := w.unwrapOnce(ctx, probeProcess+i, i, k, wrapID, d)
				if op.Outcome != OK {
					w.mu.Lock()
					w.refusals = append(w.refusals, Refusal{Revoke: rev.ID, Node: w.eps[i].id(),
						After: time.Duration(op.Complete - rev.Complete), Code: op.Code})
					w.mu.Unlock()
					return
				}
				sleep(ctx, 50*time.Millisecond) // ends with the run, like every wait of the harness
			}
		}()
	}
	wg.Wait()
}

func (w *workload) wrap(ctx context.Context, p, n int, k *wkey, r *rand.Rand) Op {
	op := Op{Process: p, Type: OpWrap, Key: k.name(), Node: w.eps[n].id()}
	d := &opData{plaintext: make([]byte, 32)}
	cryptorand.Read(d.plaintext)
	w.h.begin(&op)
	d.context = []byte("jepsen op " + strconv.Itoa(op.ID))
	cl, err := w.eps[n].cs.wrap(w.eps[n].i, k.tenant, k.service)
	var resp *kv1.WrapResponse
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, wrapTimeout)
		resp, err = cl.Wrap(cctx, &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: k.tenant, Service: k.service},
			Plaintext: bytes.Clone(d.plaintext), Context: d.context})
		cancel()
	}
	op.Outcome, op.Code = classify(err, false)
	op.Error = errText(err)
	if op.Outcome == OK {
		op.Version = resp.GetKey().GetVersion()
		d.blob = resp.GetBlob()
		d.version = op.Version
		w.h.end(&op, d)
		k.mu.Lock()
		k.wraps = append(k.wraps, op.ID)
		k.byVersion[op.Version] = append(k.byVersion[op.Version], op.ID)
		k.mu.Unlock()
	} else {
		w.h.end(&op, nil)
	}
	w.count(op)
	return op
}

func (w *workload) unwrap(ctx context.Context, p, n int, k *wkey, r *rand.Rand) Op {
	k.mu.Lock()
	id := k.wraps[r.IntN(len(k.wraps))]
	// Mostly blobs of versions not known to be revoked: those must keep unwrapping.
	for try := 0; try < 4 && k.revoked[w.h.get(id).version]; try++ {
		id = k.wraps[r.IntN(len(k.wraps))]
	}
	k.mu.Unlock()
	if d := w.h.get(id); d != nil {
		return w.unwrapOnce(ctx, p, n, k, id, d)
	}
	return Op{}
}

// unwrapOnce unwraps the blob of wrap op wrapID on node n and checks the plaintext.
func (w *workload) unwrapOnce(ctx context.Context, p, n int, k *wkey, wrapID int, d *opData) Op {
	op := Op{Process: p, Type: OpUnwrap, Key: k.name(), Node: w.eps[n].id(), WrapOf: wrapID}
	op.Arg = d.version
	w.h.begin(&op)
	cl, err := w.eps[n].cs.wrap(w.eps[n].i, k.tenant, k.service)
	var resp *kv1.UnwrapResponse
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, wrapTimeout)
		resp, err = cl.Unwrap(cctx, &kv1.UnwrapRequest{Blob: d.blob, Context: d.context})
		cancel()
	}
	op.Outcome, op.Code = classify(err, false)
	op.Error = errText(err)
	if op.Outcome == OK {
		op.Version = resp.GetKey().GetVersion()
		if !bytes.Equal(resp.GetPlaintext(), d.plaintext) {
			op.Error = "plaintext differs from the one wrapped"
		}
	}
	w.h.end(&op, nil)
	w.count(op)
	return op
}

func (w *workload) count(op Op) {
	if op.Outcome == OK {
		w.okOps.Add(1)
	}
}

// withGov is callGov through governance node n (mod the governance nodes).
func (w *workload) withGov(ctx context.Context, n int, timeout time.Duration, f func(context.Context, kv1.GovernanceServiceClient) error) error {
	return callGov(ctx, w.cs, n, timeout, f)
}

// createAtGovernance creates tenant/service at governance (through governance node n) and waits,
// up to timeout more, until the region has applied it: a region node describes the key (with
// several regions: a node of each region of the tenant). An
// acknowledged governance write that the region has not applied in time is indeterminate
// (DEADLINE_EXCEEDED): the region will apply it later, but a wrap now may not find it.
func (w *workload) createAtGovernance(ctx context.Context, n int, requestID, tenant, service string, timeout time.Duration) error {
	err := w.withGov(ctx, n, timeout, func(cctx context.Context, g kv1.GovernanceServiceClient) error {
		_, err := g.CreateService(cctx, &kv1.GovernanceCreateServiceRequest{RequestId: requestID, Tenant: tenant, Service: service})
		return err
	})
	if err != nil {
		return err
	}
	if !w.regionHas(ctx, w.groupsOf(tenant), n, timeout, func(cctx context.Context, a kv1.AdminServiceClient) error {
		_, err := a.DescribeKey(cctx, &kv1.DescribeKeyRequest{Tenant: tenant, Service: service})
		return err
	}, false) {
		return status.Errorf(codes.DeadlineExceeded, "governance acknowledged %s/%s, but no region node had it within %s", tenant, service, timeout)
	}
	return nil
}

// regionHas asks, in each group of endpoints (a region), the nodes (from n on, round robin)
// until describe succeeds on one, or, with all, on every node; false if that did not happen in
// every group within timeout. A node that describes a key has applied its creation, so its
// region committed it.
func (w *workload) regionHas(ctx context.Context, groups [][]int, n int, timeout time.Duration, describe func(context.Context, kv1.AdminServiceClient) error, all bool) bool {
	deadline := time.Now().Add(timeout)
	for _, g := range groups {
		have := map[int]bool{}
		for try := 0; ; try++ {
			if ctx.Err() != nil {
				return false
			}
			i := g[(n+try)%len(g)]
			if !have[i] && w.withAdmin(ctx, i, time.Second, describe) == nil {
				have[i] = true
				if !all || len(have) == len(g) {
					break
				}
			}
			if time.Now().After(deadline) {
				return false
			}
			if i == g[len(g)-1] || !all {
				sleep(ctx, 50*time.Millisecond)
			}
		}
	}
	return true
}

// withAdmin calls f with endpoint n's AdminService under a timeout.
func (w *workload) withAdmin(ctx context.Context, n int, timeout time.Duration, f func(context.Context, kv1.AdminServiceClient) error) error {
	a, err := w.eps[n].cs.admin(w.eps[n].i)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(cctx, a)
}
