package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// errNoNode is what a request gets when no region node could serve it within its attempts.
var errNoNode = status.Error(codes.Unavailable, "gateway: no region node could serve the request; retry later")

// endpoint is one region node's API, as discovered.
type endpoint struct {
	addr   string
	region *regionState // the region it was given or discovered in, whose name its certificate must bear
	conn   *grpc.ClientConn
	wrap   kv1.WrapServiceClient
	seed   bool // given in Config.RegionAddrs (or FailoverRegions): never forgotten

	nodeID   atomic.Pointer[string]
	inflight atomic.Int64
	serving  atomic.Bool  // the node's last word about itself, or a call that succeeded since
	down     atomic.Int64 // unix nanoseconds until which the node is avoided after a failure
	// unpacked holds the unix nanoseconds until which the node is sent the per-item batch forms
	// (BatchWrap, BatchUnwrap) instead of the packed ones: it answered Unimplemented to a packed
	// RPC, as a node of an older version does during a rolling upgrade (see callPacked).
	unpacked atomic.Int64
}

// packedRetry is how long a node that answered Unimplemented to a packed RPC is sent the per-item
// forms before it is asked again. An upgrade restarts the node, usually at the same address: the
// pool forgets the answer at once when it sees the node fail (refresh), and after packedRetry in
// any case, so a restart between two refreshes is noticed too, at the cost of one Unimplemented
// answer a minute from a node that really is old.
const packedRetry = time.Minute

// packed says whether the node is sent the packed batch forms.
func (e *endpoint) packed() bool { return e.unpacked.Load() <= time.Now().UnixNano() }

func (e *endpoint) id() string {
	if p := e.nodeID.Load(); p != nil {
		return *p
	}
	return e.addr
}

// regionState is one region of Config.regions() as the pool sees it.
type regionState struct {
	index int // in Config.regions(): 0 is the most preferred
	name  string
	// ccfg pins the region's nodes to its name: a node must present a node certificate of this
	// region, so a call meant for it never reaches another region, even one of the same CA.
	ccfg transport.ClientConfig
	// healthySince is the unix nanoseconds since which every refresh has found a node of the
	// region serving by its own word; 0 when the last refresh did not, or the gateway has just
	// moved away from the region. Failback waits on it (Config.RegionFailback).
	healthySince atomic.Int64
}

// pool finds the region's nodes (ListEndpoints), keeps the list fresh, and sends each call to a
// serving node: the less loaded of two picked at random ("power of two choices" on in-flight
// calls), failing over to another node on a retryable error.
//
// Regions. With Config.FailoverRegions the pool knows several regions, in order of preference,
// and sends calls to the nodes of one of them, the active one. When one request has tried every
// node of the active region and each failed with a retryable error (the failover between nodes
// below, run out), or when a refresh reaches no node of it at all, the pool moves to the most
// preferred other region that has a serving node, and the request goes on there with a fresh
// budget of attempts. It moves back to a more preferred region once every refresh for
// Config.RegionFailback has found that region serving (hysteresis). Every move counts in
// krypton_gateway_region_failovers_total{from,to}, sets krypton_gateway_region_active and is
// logged. Wraps are reads of the region (below), and the regions hold the tenant as a shared
// tenant, so a call retried in another region is as safe as one retried on another node.
//
// Retries. Every RPC the gateway makes is a WrapService read (ListEndpoints, PackedWrap,
// PackedUnwrap, BatchWrap, BatchUnwrap, Wrap, Unwrap, WatchKeyEvents): none changes replicated
// state, and a repeated wrap only makes another equally valid blob (a fresh salt), so retrying
// can never duplicate an effect. The gateway makes no writes. It retries, on another node when there is one:
//   - UNAVAILABLE: the node is down, shutting down, or holds no serving lease (the region's own
//     word for "try another node");
//   - DEADLINE_EXCEEDED of one attempt (Config.AttemptTimeout) while the request's own deadline
//     still has time: a slow or partitioned node. Safe for the reason above.
//
// Every other code is the region's answer about the request (INVALID_ARGUMENT, PERMISSION_DENIED,
// NOT_FOUND, FAILED_PRECONDITION, ...) and goes back to the caller unchanged. A request is tried
// Config.MaxAttempts times, and then again until Config.RetryBudget has passed since its first
// attempt, always within its own deadline; once every known node has been tried, the next round
// waits a short, growing backoff (a region electing a leader serves again within a lease period).
type pool struct {
	cfg     Config
	ccfg    transport.ClientConfig
	log     *slog.Logger
	metrics *metrics

	// regions are Config.regions(), in order of preference; active indexes the one calls go to.
	regions []*regionState
	active  atomic.Int32
	moveMu  sync.Mutex // serializes moves, so that the active-region gauge ends as active does

	mu   sync.RWMutex // guards eps and list
	eps  map[epKey]*endpoint
	list []*endpoint // of every region

	// onPolicy, if set before start, gets the tenant's key-use policy from every ListEndpoints
	// answer (concurrently).
	onPolicy func(*kv1.Policy)
	// onQuotas, likewise, gets every ListEndpoints answer for its quotas.
	onQuotas func(*kv1.ListEndpointsResponse)
	// kick asks for a refresh now (1-buffered; refreshNow).
	kick chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

// epKey names an endpoint: an address in a region.
type epKey struct {
	region int
	addr   string
}

func newPool(cfg Config, log *slog.Logger, m *metrics) (*pool, error) {
	p := &pool{
		cfg:     cfg,
		log:     log,
		metrics: m,
		eps:     map[epKey]*endpoint{},
		stop:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	for i, r := range cfg.regions() {
		p.regions = append(p.regions, &regionState{index: i, name: r.Name,
			// Only a node of the configured region answers for it: the gateway's calls (and its
			// tenant's data keys) never go to a node of another region, another gateway or
			// anything else of the CA that took the address.
			ccfg: transport.ClientConfig{Source: cfg.CertSource, Server: pki.Identity{Kind: pki.KindNode, Region: r.Name},
				TracerProvider: cfg.TracerProvider}})
	}
	for i, r := range cfg.regions() {
		for _, a := range r.Addrs {
			if _, err := p.add(p.regions[i], a, true); err != nil {
				p.close()
				return nil, err
			}
		}
	}
	m.regionActive(p.regionNames(), p.regions[0].name)
	return p, nil
}

func (p *pool) regionNames() []string {
	names := make([]string, len(p.regions))
	for i, r := range p.regions {
		names[i] = r.name
	}
	return names
}

// activeRegion is the region calls go to.
func (p *pool) activeRegion() *regionState { return p.regions[p.active.Load()] }

// start refreshes once (bounded by ctx) and then every RefreshInterval until close.
func (p *pool) start(ctx context.Context) {
	p.refresh(ctx)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(p.cfg.RefreshInterval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			case <-p.kick:
			}
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AttemptTimeout)
			p.refresh(ctx)
			cancel()
		}
	}()
}

// refreshNow asks the refresh loop to refresh at once (the tenant's policy changed).
func (p *pool) refreshNow() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *pool) add(r *regionState, addr string, seed bool) (*endpoint, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := epKey{r.index, addr}
	if e := p.eps[k]; e != nil {
		return e, nil
	}
	conn, err := transport.Dial(context.Background(), addr, r.ccfg)
	if err != nil {
		return nil, err
	}
	e := &endpoint{addr: addr, region: r, conn: conn, wrap: kv1.NewWrapServiceClient(conn), seed: seed}
	p.eps[k] = e
	p.list = append(p.list, e)
	return e, nil
}

// regionSeen is what one refresh learnt of one region.
type regionSeen struct {
	seen     map[string]bool // the addresses its nodes listed
	answered int             // nodes that answered
	serving  bool            // some node said it serves
}

// refresh asks every known node, of every region, for its region's endpoints and its own status,
// then moves between regions if that is due (failover, failback).
func (p *pool) refresh(ctx context.Context) {
	p.mu.RLock()
	list := p.list
	p.mu.RUnlock()
	var (
		mu     sync.Mutex
		per    = make([]regionSeen, len(p.regions))
		active = p.active.Load()
		wg     sync.WaitGroup
	)
	for i := range per {
		per[i].seen = map[string]bool{}
	}
	for _, e := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.wrap.ListEndpoints(ctx, &kv1.ListEndpointsRequest{})
			p.metrics.rpc("ListEndpoints", err)
			if err != nil {
				e.serving.Store(false)
				e.unpacked.Store(0) // down or restarting: it may come back as another version
				return
			}
			self := resp.GetNodeId()
			e.nodeID.Store(&self)
			if pol := resp.GetPolicy(); pol != nil && p.onPolicy != nil {
				p.onPolicy(pol)
			}
			// The quotas are those the active region's nodes enforce (each region applies the
			// tenant's quotas itself).
			if p.onQuotas != nil && int32(e.region.index) == active {
				p.onQuotas(resp)
			}
			mu.Lock()
			defer mu.Unlock()
			rs := &per[e.region.index]
			rs.answered++
			for _, ep := range resp.GetEndpoints() {
				rs.seen[ep.GetAddress()] = true
				if ep.GetNodeId() == self {
					serving := ep.GetStatus() == kv1.EndpointStatus_ENDPOINT_STATUS_SERVING
					e.serving.Store(serving)
					rs.serving = rs.serving || serving
				}
			}
		}()
	}
	wg.Wait()
	for i, rs := range per {
		for addr := range rs.seen {
			if _, err := p.add(p.regions[i], addr, false); err != nil {
				p.log.Warn("cannot dial a region node", "region", p.regions[i].name, "addr", addr, "err", err)
			}
		}
		if rs.answered > 0 {
			p.forget(i, rs.seen)
		}
	}
	if len(p.regions) > 1 {
		p.steer(per)
	}
	for _, e := range p.endpoints() {
		id := ""
		if p := e.nodeID.Load(); p != nil {
			id = *p
		}
		p.metrics.nodeHealthy(e.addr, id, e.serving.Load())
	}
}

// forget drops discovered (not seed) endpoints of region i that no node of it listed any more.
func (p *pool) forget(i int, seen map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.list[:0:0]
	for _, e := range p.list {
		if e.seed || e.region.index != i || seen[e.addr] {
			keep = append(keep, e)
			continue
		}
		p.metrics.forgetNode(e.addr)
		delete(p.eps, epKey{i, e.addr})
		e.conn.Close()
	}
	p.list = keep
}

// steer moves between regions after a refresh: away from the active region if no node of it
// answered, and back to a more preferred region that every refresh for RegionFailback has found
// serving.
func (p *pool) steer(per []regionSeen) {
	now := time.Now().UnixNano()
	for i, rs := range per {
		r := p.regions[i]
		if !rs.serving {
			r.healthySince.Store(0)
		} else {
			r.healthySince.CompareAndSwap(0, now)
		}
	}
	active := int(p.active.Load())
	if per[active].answered == 0 {
		p.failover(active, "no node of the region answered")
		return
	}
	for i := 0; i < active; i++ {
		if since := p.regions[i].healthySince.Load(); since != 0 && now-since >= int64(p.cfg.RegionFailback) {
			p.move(active, i, "the preferred region has served for "+p.cfg.RegionFailback.String())
			return
		}
	}
}

// failover moves the pool from region from, where calls fail, to the most preferred other region
// with a serving node, unless tried says a request has already run through it. It reports whether
// the active region is now another than from (moved by this call or by a concurrent one).
func (p *pool) failover(from int, reason string, tried ...map[int]bool) bool {
	if int(p.active.Load()) != from {
		return true
	}
	for _, r := range p.regions {
		if r.index == from || len(tried) > 0 && tried[0][r.index] || !p.regionServing(r) {
			continue
		}
		p.move(from, r.index, reason)
		return int(p.active.Load()) != from
	}
	return false
}

// move makes region to the active one if from still is, and says so: metric and log.
func (p *pool) move(from, to int, reason string) {
	p.moveMu.Lock()
	defer p.moveMu.Unlock()
	if !p.active.CompareAndSwap(int32(from), int32(to)) {
		return
	}
	f, t := p.regions[from], p.regions[to]
	// The region left must serve without a break for RegionFailback from now on before the pool
	// comes back to it: a region whose nodes answer the refresh but fail the calls does not
	// draw the gateway back at every refresh.
	f.healthySince.Store(0)
	p.metrics.regionFailover(f.name, t.name)
	p.metrics.regionActive(p.regionNames(), t.name)
	if to < from {
		p.log.Info("gateway failed back to a preferred region", "from", f.name, "to", t.name, "reason", reason)
	} else {
		p.log.Warn("gateway failed over to another region", "from", f.name, "to", t.name, "reason", reason)
	}
}

// regionServing reports whether some node of r serves as the pool last saw it (see
// reachesServing).
func (p *pool) regionServing(r *regionState) bool {
	now := time.Now().UnixNano()
	for _, e := range p.endpoints() {
		if e.region == r && e.serving.Load() && e.down.Load() <= now {
			return true
		}
	}
	return false
}

func (p *pool) endpoints() []*endpoint {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.list
}

// reachesServing reports whether some region node is serving as the pool last saw it (its own
// word in ListEndpoints, or a call that succeeded since) and not avoided after a failure.
func (p *pool) reachesServing() bool {
	now := time.Now().UnixNano()
	for _, e := range p.endpoints() {
		if e.serving.Load() && e.down.Load() <= now {
			return true
		}
	}
	return false
}

// pick returns a node of the active region to call, preferring serving ones not avoided nor
// tried, or nil.
func (p *pool) pick(tried map[*endpoint]bool) *endpoint { return p.pickIn(p.activeRegion(), tried) }

// pickIn is pick in region r.
func (p *pool) pickIn(r *regionState, tried map[*endpoint]bool) *endpoint {
	now := time.Now().UnixNano()
	all := p.endpoints()
	var cands []*endpoint
	for pass := 0; pass < 3 && len(cands) == 0; pass++ {
		for _, e := range all {
			if tried[e] || e.region != r {
				continue
			}
			switch {
			case pass == 0 && (!e.serving.Load() || e.down.Load() > now):
			case pass == 1 && e.down.Load() > now:
			default:
				cands = append(cands, e)
			}
		}
	}
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	a, b := cands[rand.IntN(len(cands))], cands[rand.IntN(len(cands))]
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

// retryable says whether err from one attempt may be retried on another node (see pool).
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// call runs fn against region nodes until it succeeds, fails for good, or runs out of attempts.
func (p *pool) call(ctx context.Context, method string, fn func(ctx context.Context, c kv1.WrapServiceClient) error) error {
	return p.callOn(ctx, func(ctx context.Context, e *endpoint) (string, error) {
		return method, fn(ctx, e.wrap)
	})
}

// callPacked is call for a batch RPC with a packed form: packed is sent to a node that serves the
// packed form, batch (the per-item form, which every version serves) to one that does not. A node
// that answers packed with Unimplemented is an older version (a rolling upgrade): the same attempt
// goes on with batch, and the node gets batch alone until it has been seen down or packedRetry has
// passed. packed and batch each set their own result and clear the other's: one attempt may use
// either.
func (p *pool) callPacked(ctx context.Context, packedMethod, batchMethod string, packed, batch func(ctx context.Context, c kv1.WrapServiceClient) error) error {
	return p.callOn(ctx, func(ctx context.Context, e *endpoint) (string, error) {
		if e.packed() {
			err := packed(ctx, e.wrap)
			if status.Code(err) != codes.Unimplemented {
				return packedMethod, err
			}
			p.metrics.rpc(packedMethod, err)
			if e.unpacked.Swap(time.Now().Add(packedRetry).UnixNano()) == 0 {
				p.log.Info("region node does not serve the packed batch RPCs (an older version?); sending it the per-item form",
					"node", e.id(), "method", packedMethod)
			}
		}
		return batchMethod, batch(ctx, e.wrap)
	})
}

// callOn runs fn against region nodes until it succeeds, fails for good, or runs out of attempts;
// fn returns the method it called, for the metrics. When it has tried every node of the active
// region, it fails over to another region (see pool) and goes on there with a fresh budget of
// attempts; each region at most once per call.
func (p *pool) callOn(ctx context.Context, fn func(ctx context.Context, e *endpoint) (method string, err error)) error {
	tried := map[*endpoint]bool{}
	var exhausted map[int]bool // regions this call has run through, when there are several
	backoff := 20 * time.Millisecond
	var last error
	start := time.Now()
	for attempt := 0; attempt < p.cfg.MaxAttempts || time.Since(start) < p.cfg.RetryBudget; attempt++ {
		cur := p.activeRegion()
		e := p.pickIn(cur, tried)
		if e == nil && len(tried) > 0 && len(p.regions) > 1 {
			// Every node of the active region failed this call: the region is unavailable.
			if exhausted == nil {
				exhausted = map[int]bool{}
			}
			exhausted[cur.index] = true
			if p.failover(cur.index, "every node of the region failed a call", exhausted) {
				if e = p.pick(tried); e != nil {
					attempt, start = 0, time.Now()
				}
			}
		}
		if e == nil && len(tried) > 0 {
			// Every node has been tried: wait a little, then go round again.
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return errOr(last, ctx.Err())
			case <-p.stop:
				t.Stop()
				return errOr(last, errShutdown)
			case <-t.C:
			}
			backoff = min(2*backoff, 500*time.Millisecond)
			clear(tried)
			e = p.pick(tried)
		}
		if e == nil {
			break
		}
		tried[e] = true
		actx, cancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
		e.inflight.Add(1)
		method, err := fn(actx, e)
		e.inflight.Add(-1)
		cancel()
		p.metrics.rpc(method, err)
		if err == nil {
			e.serving.Store(true)
			e.down.Store(0)
			return nil
		}
		if !retryable(ctx, err) {
			if ctx.Err() != nil {
				return errOr(err, ctx.Err())
			}
			return err
		}
		p.log.Debug("region call failed; trying another node", "method", method, "node", e.id(), "code", status.Code(err).String())
		e.serving.Store(false)
		e.down.Store(time.Now().Add(p.cfg.RefreshInterval).UnixNano())
		last = err
	}
	return errOr(last, errNoNode)
}

// errOr returns err as a status error, or else.
func errOr(err, orElse error) error {
	if err != nil {
		return err
	}
	if errors.Is(orElse, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "gateway: request deadline exceeded")
	}
	if errors.Is(orElse, context.Canceled) {
		return status.Error(codes.Canceled, "gateway: request canceled")
	}
	return orElse
}

func (p *pool) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.list {
		e.conn.Close()
	}
}
