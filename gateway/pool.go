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
	addr string
	conn *grpc.ClientConn
	wrap kv1.WrapServiceClient
	seed bool // given in Config.RegionAddrs: never forgotten

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

// pool finds the region's nodes (ListEndpoints), keeps the list fresh, and sends each call to a
// serving node: the less loaded of two picked at random ("power of two choices" on in-flight
// calls), failing over to another node on a retryable error.
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

	mu   sync.RWMutex // guards eps and list
	eps  map[string]*endpoint
	list []*endpoint

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

func newPool(cfg Config, log *slog.Logger, m *metrics) (*pool, error) {
	p := &pool{
		cfg: cfg,
		// Only a node of the configured region answers for it: the gateway's calls (and its
		// tenant's data keys) never go to a node of another region, another gateway or anything
		// else of the CA that took the address.
		ccfg: transport.ClientConfig{Source: cfg.CertSource, Server: pki.Identity{Kind: pki.KindNode, Region: cfg.Region},
			TracerProvider: cfg.TracerProvider},
		log:     log,
		metrics: m,
		eps:     map[string]*endpoint{},
		stop:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	for _, a := range cfg.RegionAddrs {
		if _, err := p.add(a, true); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

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

func (p *pool) add(addr string, seed bool) (*endpoint, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.eps[addr]; e != nil {
		return e, nil
	}
	conn, err := transport.Dial(context.Background(), addr, p.ccfg)
	if err != nil {
		return nil, err
	}
	e := &endpoint{addr: addr, conn: conn, wrap: kv1.NewWrapServiceClient(conn), seed: seed}
	p.eps[addr] = e
	p.list = append(p.list, e)
	return e, nil
}

// refresh asks every known node for the region's endpoints and its own status.
func (p *pool) refresh(ctx context.Context) {
	p.mu.RLock()
	list := p.list
	p.mu.RUnlock()
	var (
		mu       sync.Mutex
		seen     = map[string]bool{}
		answered int
		wg       sync.WaitGroup
	)
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
			if p.onQuotas != nil {
				p.onQuotas(resp)
			}
			mu.Lock()
			defer mu.Unlock()
			answered++
			for _, ep := range resp.GetEndpoints() {
				seen[ep.GetAddress()] = true
				if ep.GetNodeId() == self {
					e.serving.Store(ep.GetStatus() == kv1.EndpointStatus_ENDPOINT_STATUS_SERVING)
				}
			}
		}()
	}
	wg.Wait()
	for addr := range seen {
		if _, err := p.add(addr, false); err != nil {
			p.log.Warn("cannot dial a region node", "addr", addr, "err", err)
		}
	}
	if answered > 0 {
		p.forget(seen)
	}
	for _, e := range p.endpoints() {
		id := ""
		if p := e.nodeID.Load(); p != nil {
			id = *p
		}
		p.metrics.nodeHealthy(e.addr, id, e.serving.Load())
	}
}

// forget drops discovered (not seed) endpoints that no node listed any more.
func (p *pool) forget(seen map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.list[:0:0]
	for _, e := range p.list {
		if e.seed || seen[e.addr] {
			keep = append(keep, e)
			continue
		}
		p.metrics.forgetNode(e.addr)
		delete(p.eps, e.addr)
		e.conn.Close()
	}
	p.list = keep
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

// pick returns a node to call, preferring serving ones not avoided nor tried, or nil.
func (p *pool) pick(tried map[*endpoint]bool) *endpoint {
	now := time.Now().UnixNano()
	all := p.endpoints()
	var cands []*endpoint
	for pass := 0; pass < 3 && len(cands) == 0; pass++ {
		for _, e := range all {
			if tried[e] {
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
// fn returns the method it called, for the metrics.
func (p *pool) callOn(ctx context.Context, fn func(ctx context.Context, e *endpoint) (method string, err error)) error {
	tried := map[*endpoint]bool{}
	backoff := 20 * time.Millisecond
	var last error
	start := time.Now()
	for attempt := 0; attempt < p.cfg.MaxAttempts || time.Since(start) < p.cfg.RetryBudget; attempt++ {
		e := p.pick(tried)
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
