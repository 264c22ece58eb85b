package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway/envelope"
	"github.com/kryptonkms/krypton/gateway/kmip"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Errors.
var (
	// ErrShutdown is returned by every call after Close, and by Close after the first.
	ErrShutdown = errors.New("gateway: shut down")
	// errShutdown is ErrShutdown as a status.
	errShutdown = status.Error(codes.Unavailable, "gateway: shut down")
	// errOtherTenant refuses a key of a tenant the gateway does not act for.
	errOtherTenant = status.Error(codes.PermissionDenied, "gateway: this gateway does not act for the key's tenant")
)

// Gateway is a running gateway: the region pool, the batchers, the optional cache, and the front
// ends. Its data-key methods (Encrypt, Decrypt, GenerateDataKey, Unwrap) are what every front end
// calls, so that gRPC, the Unix socket and KMIP behave alike.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	id      pki.Identity
	reg     *prometheus.Registry
	metrics *metrics
	pool    *pool
	cache   *cache   // nil when off
	watch   *watcher // nil when the cache is off
	wraps   *batcher[*kv1.WrapRequest, *kv1.WrapResponse]
	unwraps *batcher[*kv1.UnwrapRequest, *kv1.UnwrapResponse]

	tcpLn, unixLn, httpLn, kmipLn net.Listener
	tcpSrv                        *transport.Server
	kmipSrv                       *kmip.Server
	unixSrv                       *grpc.Server
	http                          *transport.AdminHTTP

	// policy is the tenant's key-use policy as last learnt from the region (nil until a node has
	// answered): TCP callers are checked by it (permit).
	policy atomic.Pointer[policy.Compiled]

	mu       sync.Mutex // guards closed
	closed   bool
	serveErr chan error
	done     chan struct{}
}

// New starts a gateway: it checks cfg, opens the listeners (so that a port clash fails here), and
// starts finding the region's nodes. Serve then serves the front ends until Close.
func New(cfg Config) (_ *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(cfg.Certificate.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("gateway: Config.Certificate: %w", err)
	}
	id, err := pki.IdentityFromCertificate(leaf)
	if err != nil || id.Kind != pki.KindService {
		return nil, errors.New("gateway: Config.Certificate must be a service certificate (krypton certs service TENANT SERVICE)")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("tenant", id.Tenant, "service", id.Service)
	g := &Gateway{cfg: cfg, log: log, id: id, reg: prometheus.NewRegistry(), serveErr: make(chan error, 4), done: make(chan struct{})}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	if g.metrics, err = newMetrics(g.reg, cfg.Registerer); err != nil {
		return nil, err
	}
	g.reg.MustRegister(transport.LockedMemoryCollectors()...)
	if g.pool, err = newPool(cfg, log, g.metrics); err != nil {
		return nil, err
	}
	g.pool.onPolicy = g.learnPolicy
	g.wraps = &batcher[*kv1.WrapRequest, *kv1.WrapResponse]{
		size: cfg.BatchSize, wait: cfg.BatchWait, send: g.sendWraps,
		onBatch: func(n int) { g.metrics.batch("wrap", n) },
	}
	g.unwraps = &batcher[*kv1.UnwrapRequest, *kv1.UnwrapResponse]{
		size: cfg.BatchSize, wait: cfg.BatchWait, send: g.sendUnwraps,
		onBatch: func(n int) { g.metrics.batch("unwrap", n) },
		drop:    func(r *kv1.UnwrapResponse) { clear(r.GetPlaintext()) },
	}
	if cfg.BatchSize == 1 {
		g.wraps.wait, g.unwraps.wait = 0, 0
	}
	if cfg.CacheEntries > 0 {
		g.watch = newWatcher(g.pool, log)
		if g.cache, err = newCache(cfg, g.watch.leaseValid, g.metrics); err != nil {
			return nil, err
		}
		g.watch.cache = g.cache
	}
	if cfg.ListenAddr != "" {
		if g.tcpLn, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("gateway: ListenAddr: %w", err)
		}
	}
	if cfg.UnixSocket != "" {
		if g.unixLn, err = listenUnix(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.HTTPAddr != "" {
		if g.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("gateway: HTTPAddr: %w", err)
		}
	}
	if cfg.KMIPAddr != "" {
		kc := kmip.DefaultConfig()
		kc.ClientCAs, kc.Certificate = cfg.Roots, cfg.ServerCertificate
		kc.RegistryPath, kc.Logger, kc.Registerer = cfg.KMIPRegistryPath, log, g.reg
		if g.kmipSrv, err = kmip.New(kc, KMIPKeys{G: g}); err != nil {
			return nil, err
		}
		if g.kmipLn, err = net.Listen("tcp", cfg.KMIPAddr); err != nil {
			return nil, fmt.Errorf("gateway: KMIPAddr: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.AttemptTimeout)
	g.pool.start(ctx)
	cancel()
	if g.watch != nil {
		g.watch.start()
	}
	log.Info("gateway started", "region", cfg.RegionAddrs, "listen", cfg.ListenAddr, "unix", cfg.UnixSocket,
		"batch-size", cfg.BatchSize, "batch-wait", cfg.BatchWait, "cache-entries", cfg.CacheEntries)
	return g, nil
}

func listenUnix(cfg Config) (net.Listener, error) {
	if fi, err := os.Lstat(cfg.UnixSocket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("gateway: UnixSocket %s exists and is not a socket", cfg.UnixSocket)
		}
		os.Remove(cfg.UnixSocket) // a stale socket of an earlier run
	}
	ln, err := net.Listen("unix", cfg.UnixSocket)
	if err != nil {
		return nil, fmt.Errorf("gateway: UnixSocket: %w", err)
	}
	mode := cfg.UnixSocketMode
	if mode == 0 {
		mode = 0o600
	}
	if err := os.Chmod(cfg.UnixSocket, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("gateway: UnixSocket mode: %w", err)
	}
	if cfg.UnixSocketGroup >= 0 {
		if err := os.Chown(cfg.UnixSocket, -1, cfg.UnixSocketGroup); err != nil {
			ln.Close()
			return nil, fmt.Errorf("gateway: UnixSocketGroup: %w", err)
		}
	}
	return ln, nil
}

// Identity is the tenant and service the gateway acts for.
func (g *Gateway) Identity() pki.Identity { return g.id }

// Registry holds the gateway's metrics.
func (g *Gateway) Registry() *prometheus.Registry { return g.reg }

// Addr is the TCP front end's address (nil when off); UnixAddr the socket's path.
func (g *Gateway) Addr() net.Addr {
	if g.tcpLn == nil {
		return nil
	}
	return g.tcpLn.Addr()
}

// KMIPAddr is the KMIP front end's address (nil when off).
func (g *Gateway) KMIPAddr() net.Addr {
	if g.kmipLn == nil {
		return nil
	}
	return g.kmipLn.Addr()
}

// UnixSocket is the Unix socket's path, or "".
func (g *Gateway) UnixSocket() string { return g.cfg.UnixSocket }

// HTTPAddr is the metrics endpoint's address (nil when off).
func (g *Gateway) HTTPAddr() net.Addr {
	if g.httpLn == nil {
		return nil
	}
	return g.httpLn.Addr()
}

// Close stops the front ends (calls in flight finish, for up to five seconds), sends what is
// batched, stops the region pool, and wipes and frees the cache. Later calls return ErrShutdown.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrShutdown
	}
	g.closed = true
	g.mu.Unlock()
	close(g.done)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if g.tcpSrv != nil {
		g.tcpSrv.Shutdown(ctx)
	}
	if g.unixSrv != nil {
		stopped := make(chan struct{})
		go func() { g.unixSrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-ctx.Done():
			g.unixSrv.Stop()
			<-stopped
		}
	}
	if g.kmipSrv != nil {
		g.kmipSrv.Close()
	}
	if g.http != nil {
		g.http.Shutdown(ctx)
	}
	// Listeners a server never took (Serve not called, or it failed early).
	for _, ln := range []net.Listener{g.tcpLn, g.unixLn, g.kmipLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if g.http == nil && g.httpLn != nil {
		g.httpLn.Close()
	}
	if g.wraps != nil {
		g.wraps.close()
		g.unwraps.close()
	}
	if g.watch != nil {
		g.watch.close()
	}
	if g.cache != nil {
		g.cache.close()
	}
	if g.pool != nil {
		g.pool.close()
	}
	g.log.Info("gateway stopped")
	return nil
}

func (g *Gateway) isClosed() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// learnPolicy installs the tenant's policy from a region node's answer if it is newer than the
// one held: revisions only grow, so a node that lags never takes the gateway back.
func (g *Gateway) learnPolicy(p *kv1.Policy) {
	if p.GetTenant() != g.id.Tenant {
		return
	}
	for {
		cur := g.policy.Load()
		if cur != nil && cur.Revision() >= p.GetRevision() {
			return
		}
		next := policy.Policy{Revision: p.GetRevision()}
		for _, r := range p.GetRules() {
			rule := policy.Rule{Caller: r.GetCaller(), Service: r.GetService()}
			for _, op := range r.GetOperations() {
				if op > 0 && op <= policy.NumOps {
					rule.Operations = append(rule.Operations, policy.Op(op))
				}
			}
			next.Rules = append(next.Rules, rule)
		}
		if g.policy.CompareAndSwap(cur, policy.Compile(next)) {
			g.log.Info("tenant key-use policy", "revision", next.Revision, "rules", len(next.Rules))
			return
		}
	}
}

// callerKey marks a context with the identity of a TCP front-end caller (a service of the
// gateway's tenant); permit checks it against the tenant's policy.
type callerKey struct{}

// permit checks that the caller of ctx, if a TCP front end marked one, may use key for op by the
// tenant's policy (the same compiled matcher the region uses), before the gateway acts for it:
// a call through the gateway needs the policy to allow both that caller (here) and the gateway's
// own service (at the region). Callers of the socket, of KMIP (which serves only the gateway's
// own service) and in process act as the gateway's own service, which only the region checks.
func (g *Gateway) permit(ctx context.Context, key wrap.KeyID, op policy.Op) error {
	c, ok := ctx.Value(callerKey{}).(pki.Identity)
	if !ok || c.Tenant == g.id.Tenant && c.Service == g.id.Service {
		return nil
	}
	p := g.policy.Load()
	if p == nil {
		return status.Error(codes.Unavailable, "gateway: the tenant's key-use policy is not known yet (no region node has answered); retry later")
	}
	if c.Kind == pki.KindService && p.Permits(c.Tenant, c.Service, key.Tenant, key.Service, op) {
		return nil
	}
	rule := "the default rule (a service may use only its own key)"
	if !p.Default() {
		rule = fmt.Sprintf("the tenant's policy (revision %d)", p.Revision())
	}
	return status.Errorf(codes.PermissionDenied, "gateway: %s may not %s with this key: refused by %s", c.String(), op, rule)
}

// resolve fills in the gateway's own tenant and service and refuses another tenant's key.
func (g *Gateway) resolve(k wrap.KeyID) (wrap.KeyID, error) {
	if k.Tenant == "" {
		k.Tenant = g.id.Tenant
	}
	if k.Service == "" {
		k.Service = g.id.Service
	}
	if k.Tenant != g.id.Tenant {
		return k, errOtherTenant
	}
	return k, nil
}

func keyRef(k wrap.KeyID) *kv1.KeyRef {
	return &kv1.KeyRef{Tenant: k.Tenant, Service: k.Service, Version: k.Version}
}

func keyID(r *kv1.KeyRef) wrap.KeyID {
	return wrap.KeyID{Tenant: r.GetTenant(), Service: r.GetService(), Version: r.GetVersion()}
}

// GenerateDataKey makes a fresh 32-byte data key with crypto/rand and has the region wrap it under
// key (empty fields: the gateway's own service key, current version) with context. It returns
// the plaintext key, the wrapped blob and the key version that wrapped it.
func (g *Gateway) GenerateDataKey(ctx context.Context, key wrap.KeyID, context []byte) (plaintext, blob []byte, used wrap.KeyID, err error) {
	if g.isClosed() {
		return nil, nil, wrap.KeyID{}, errShutdown
	}
	if key, err = g.resolve(key); err != nil {
		return nil, nil, key, err
	}
	if err := g.permit(ctx, key, policy.GenerateDataKey); err != nil {
		return nil, nil, key, err
	}
	if err := transport.CheckContext(context); err != nil {
		return nil, nil, key, err
	}
	plaintext = make([]byte, wrap.KeySize)
	if _, err := rand.Read(plaintext); err != nil {
		return nil, nil, key, err
	}
	// The request gets its own copy, which sendWraps wipes once the region has answered (not
	// here: a caller that gives up leaves its request in a batch still being sent).
	sent := append([]byte(nil), plaintext...)
	resp, err := g.wraps.do(ctx, &kv1.WrapRequest{Key: keyRef(key), Plaintext: sent, Context: context})
	if err != nil {
		clear(plaintext)
		return nil, nil, key, err
	}
	return plaintext, resp.GetBlob(), keyID(resp.GetKey()), nil
}

// Unwrap has the region open a wrapped data key (or serves it from the cache, when on and allowed).
func (g *Gateway) Unwrap(ctx context.Context, blob, context []byte) (plaintext []byte, used wrap.KeyID, err error) {
	if g.isClosed() {
		return nil, wrap.KeyID{}, errShutdown
	}
	if err := transport.CheckBlob(blob); err != nil {
		return nil, wrap.KeyID{}, err
	}
	if err := transport.CheckContext(context); err != nil {
		return nil, wrap.KeyID{}, err
	}
	h, err := wrap.ParseHeader(blob)
	if err != nil {
		return nil, wrap.KeyID{}, err
	}
	if h.Parent.Tenant != g.id.Tenant {
		return nil, h.Parent, errOtherTenant
	}
	if err := g.permit(ctx, h.Parent, policy.Unwrap); err != nil {
		return nil, h.Parent, err
	}
	var epoch uint64
	if g.cache != nil {
		plaintext = make([]byte, wrap.KeySize)
		if id, ok := g.cache.get(blob, context, plaintext); ok {
			return plaintext, id, nil
		}
		epoch = g.cache.startEpoch()
	}
	resp, err := g.unwraps.do(ctx, &kv1.UnwrapRequest{Blob: blob, Context: context})
	if err != nil {
		return nil, h.Parent, err
	}
	used = keyID(resp.GetKey())
	if g.cache != nil {
		g.cache.put(epoch, used, blob, context, resp.GetPlaintext())
	}
	return resp.GetPlaintext(), used, nil
}

// Encrypt seals data under a fresh data key wrapped by the region (envelope format).
func (g *Gateway) Encrypt(ctx context.Context, key wrap.KeyID, data, context []byte) (ciphertext []byte, used wrap.KeyID, err error) {
	if len(data) > g.cfg.MaxDataSize {
		return nil, key, status.Errorf(codes.InvalidArgument, "gateway: data over %d bytes", g.cfg.MaxDataSize)
	}
	dk, blob, used, err := g.GenerateDataKey(ctx, key, context)
	if err != nil {
		return nil, used, err
	}
	defer clear(dk)
	ct, err := envelope.Seal(dk, blob, data, context)
	if err != nil {
		return nil, used, envelopeStatus(err)
	}
	return ct, used, nil
}

// Decrypt opens a ciphertext made by Encrypt (here, by another gateway of the tenant, or by the
// client package in direct mode).
func (g *Gateway) Decrypt(ctx context.Context, ciphertext, context []byte) (data []byte, used wrap.KeyID, err error) {
	c, err := envelope.Parse(ciphertext)
	if err != nil {
		return nil, wrap.KeyID{}, envelopeStatus(err)
	}
	dk, used, err := g.Unwrap(ctx, c.Blob, context)
	if err != nil {
		return nil, used, err
	}
	defer clear(dk)
	data, err = envelope.Open(dk, c, context)
	if err != nil {
		return nil, used, envelopeStatus(err)
	}
	return data, used, nil
}

// envelopeStatus maps the envelope package's errors to codes.
func envelopeStatus(err error) error {
	switch {
	case errors.Is(err, envelope.ErrMalformed), errors.Is(err, envelope.ErrVersion),
		errors.Is(err, envelope.ErrOpen), errors.Is(err, envelope.ErrTooLarge), errors.Is(err, envelope.ErrKeySize):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return err
}

// itemErr turns a batch item's error into a status error.
func itemErr(e *kv1.ItemError) error {
	if e == nil || e.GetCode() == 0 {
		return status.Error(codes.Internal, "gateway: the region answered an item with neither value nor error")
	}
	return status.Error(codes.Code(e.GetCode()), e.GetMessage())
}

var errShortBatch = status.Error(codes.Internal, "gateway: the region answered a batch with the wrong number of results")

// sendWraps sends one batch of wraps (a unary Wrap for a batch of one). The gateway acts for one
// tenant, so a batch's wraps almost always share one key: each key's items go in one PackedWrap
// (BatchWrap to a node of an older version, see pool.callPacked). A PackedWrap fails or succeeds
// as a whole, and the pool retries an UNAVAILABLE one on another node; items of a BatchWrap that
// fail with UNAVAILABLE alone (a node that cannot obtain the tenant's key right now) are sent once
// more, in a batch of their own, to whichever node the pool picks.
func (g *Gateway) sendWraps(ctx context.Context, reqs []*kv1.WrapRequest) ([]*kv1.WrapResponse, []error) {
	defer func() {
		for _, r := range reqs {
			clear(r.GetPlaintext()) // the data keys' copies made for the region
		}
	}()
	res, errs := make([]*kv1.WrapResponse, len(reqs)), make([]error, len(reqs))
	if len(reqs) == 1 {
		var resp *kv1.WrapResponse
		err := g.pool.call(ctx, "Wrap", func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
			resp, err = c.Wrap(ctx, reqs[0])
			return err
		})
		res[0], errs[0] = resp, err
		return res, errs
	}
	for _, group := range groupByKey(reqs) {
		g.sendWrapGroup(ctx, reqs, group, res, errs)
	}
	return res, errs
}

// sendWrapGroup wraps reqs[i] for every i of todo, which share one key, into res[i] and errs[i].
func (g *Gateway) sendWrapGroup(ctx context.Context, reqs []*kv1.WrapRequest, todo []int, res []*kv1.WrapResponse, errs []error) {
	for round := 0; round < 2 && len(todo) > 0; round++ {
		items := make([]*kv1.WrapRequest, len(todo))
		for j, i := range todo {
			items[j] = reqs[i]
		}
		var (
			preq  *kv1.PackedWrapRequest
			presp *kv1.PackedWrapResponse
			bresp *kv1.BatchWrapResponse
		)
		err := g.pool.callPacked(ctx, "PackedWrap", "BatchWrap",
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				if preq == nil {
					preq = packedWrapRequest(items)
				}
				bresp = nil
				presp, err = c.PackedWrap(ctx, preq)
				return err
			},
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				presp = nil
				bresp, err = c.BatchWrap(ctx, &kv1.BatchWrapRequest{Items: items})
				return err
			})
		if err == nil && (presp != nil && len(presp.GetBlobs()) != len(items) || presp == nil && len(bresp.GetResults()) != len(items)) {
			err = errShortBatch
		}
		if err != nil {
			for _, i := range todo {
				errs[i] = err
			}
			return
		}
		if presp != nil {
			for j, i := range todo {
				if b := presp.GetBlobs()[j]; len(b) > 0 {
					res[i], errs[i] = &kv1.WrapResponse{Blob: b, Key: presp.GetKey()}, nil
				} else {
					errs[i] = itemErr(nil)
				}
			}
			return
		}
		var again []int
		for j, r := range bresp.GetResults() {
			i := todo[j]
			if v := r.GetValue(); v != nil {
				res[i], errs[i] = v, nil
				continue
			}
			errs[i] = itemErr(r.GetError())
			if status.Code(errs[i]) == codes.Unavailable {
				again = append(again, i)
			}
		}
		todo = again
	}
}

// groupByKey returns the indexes of reqs grouped by key, in the order each key first appears.
func groupByKey(reqs []*kv1.WrapRequest) [][]int {
	type key struct {
		tenant, service string
		version         uint32
	}
	keyOf := func(r *kv1.WrapRequest) key {
		return key{r.GetKey().GetTenant(), r.GetKey().GetService(), r.GetKey().GetVersion()}
	}
	first := keyOf(reqs[0])
	all := make([]int, len(reqs))
	same := true
	for i, r := range reqs {
		all[i] = i
		same = same && keyOf(r) == first
	}
	if same {
		return [][]int{all} // the usual case: the gateway's own key
	}
	var groups [][]int
	at := map[key]int{}
	for i, r := range reqs {
		k := keyOf(r)
		g, ok := at[k]
		if !ok {
			g = len(groups)
			at[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// packedWrapRequest is items, which share one key, as a PackedWrap.
func packedWrapRequest(items []*kv1.WrapRequest) *kv1.PackedWrapRequest {
	req := &kv1.PackedWrapRequest{Key: items[0].GetKey(), Plaintexts: make([][]byte, len(items))}
	for j, it := range items {
		req.Plaintexts[j] = it.GetPlaintext()
	}
	req.Contexts = packedContexts(len(items), func(j int) []byte { return items[j].GetContext() })
	return req
}

// packedContexts is the contexts field of a packed request of n items: none when no item has a
// context, one when every item has the same, else one per item.
func packedContexts(n int, context func(j int) []byte) [][]byte {
	first := context(0)
	same := true
	for j := 1; j < n && same; j++ {
		same = bytes.Equal(context(j), first)
	}
	switch {
	case same && len(first) == 0:
		return nil
	case same:
		return [][]byte{first}
	}
	out := make([][]byte, n)
	for j := range out {
		out[j] = context(j)
	}
	return out
}

// sendUnwraps sends one batch of unwraps (a unary Unwrap for a batch of one) as one PackedUnwrap
// (BatchUnwrap to a node of an older version). Items that fail with UNAVAILABLE alone are sent
// once more, as in sendWraps.
func (g *Gateway) sendUnwraps(ctx context.Context, reqs []*kv1.UnwrapRequest) ([]*kv1.UnwrapResponse, []error) {
	res, errs := make([]*kv1.UnwrapResponse, len(reqs)), make([]error, len(reqs))
	todo := make([]int, len(reqs))
	for i := range todo {
		todo[i] = i
	}
	for round := 0; round < 2 && len(todo) > 0; round++ {
		if len(todo) == 1 && round == 0 && len(reqs) == 1 {
			var resp *kv1.UnwrapResponse
			err := g.pool.call(ctx, "Unwrap", func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				resp, err = c.Unwrap(ctx, reqs[0])
				return err
			})
			res[0], errs[0] = resp, err
			return res, errs
		}
		items := make([]*kv1.UnwrapRequest, len(todo))
		for j, i := range todo {
			items[j] = reqs[i]
		}
		var (
			preq  *kv1.PackedUnwrapRequest
			presp *kv1.PackedUnwrapResponse
			bresp *kv1.BatchUnwrapResponse
		)
		err := g.pool.callPacked(ctx, "PackedUnwrap", "BatchUnwrap",
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				if preq == nil {
					preq = packedUnwrapRequest(items)
				}
				bresp = nil
				presp, err = c.PackedUnwrap(ctx, preq)
				return err
			},
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				presp = nil
				bresp, err = c.BatchUnwrap(ctx, &kv1.BatchUnwrapRequest{Items: items})
				return err
			})
		if err == nil && presp == nil && len(bresp.GetResults()) != len(items) {
			err = errShortBatch
		}
		var again []int
		settle := func(j int, v *kv1.UnwrapResponse, e *kv1.ItemError) {
			i := todo[j]
			if v != nil {
				res[i], errs[i] = v, nil
				return
			}
			errs[i] = itemErr(e)
			if status.Code(errs[i]) == codes.Unavailable {
				again = append(again, i)
			}
		}
		if err == nil {
			if presp != nil {
				err = unpackUnwraps(presp, len(items), settle)
			} else {
				for j, r := range bresp.GetResults() {
					settle(j, r.GetValue(), r.GetError())
				}
			}
		}
		if err != nil {
			for _, i := range todo {
				errs[i] = err
			}
			break
		}
		todo = again
	}
	return res, errs
}

// packedUnwrapRequest is items as a PackedUnwrap.
func packedUnwrapRequest(items []*kv1.UnwrapRequest) *kv1.PackedUnwrapRequest {
	req := &kv1.PackedUnwrapRequest{Blobs: make([][]byte, len(items))}
	for j, it := range items {
		req.Blobs[j] = it.GetBlob()
	}
	req.Contexts = packedContexts(len(items), func(j int) []byte { return items[j].GetContext() })
	return req
}

// unpackUnwraps calls settle once per blob of a PackedUnwrap answer for n blobs, in order, as
// for a BatchUnwrap result: with the plaintext and the key that opened it, or with the item's
// error (nil, which itemErr makes Internal, for an item with neither a plaintext and key nor an
// error entry). An answer of the wrong length settles nothing and fails the batch, its
// plaintexts wiped.
func unpackUnwraps(resp *kv1.PackedUnwrapResponse, n int, settle func(j int, v *kv1.UnwrapResponse, e *kv1.ItemError)) error {
	pts, idx, keys, perrs := resp.GetPlaintexts(), resp.GetKeyIndex(), resp.GetKeys(), resp.GetErrors()
	if len(pts) != n {
		for _, p := range pts {
			clear(p)
		}
		return errShortBatch
	}
	k := 0 // the next error entry; they come in ascending index order
	for j, p := range pts {
		for k < len(perrs) && perrs[k].GetIndex() < uint32(j) {
			k++
		}
		switch {
		case k < len(perrs) && perrs[k].GetIndex() == uint32(j):
			clear(p)
			settle(j, nil, perrs[k].GetError())
		case len(p) > 0 && j < len(idx) && int(idx[j]) < len(keys):
			settle(j, &kv1.UnwrapResponse{Plaintext: p, Key: keys[idx[j]]}, nil)
		default:
			clear(p)
			settle(j, nil, nil)
		}
	}
	return nil
}
