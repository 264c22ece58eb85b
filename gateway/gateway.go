package gateway

import (
	"context"
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
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway/kmip"
	"github.com/kryptonkms/krypton/gateway/xks"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
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
	tracer  trace.Tracer // nil when tracing is off
	cache   *cache       // nil when off
	watch   *watcher     // nil when the cache and delegated wrapping are off
	// delegated holds the delegated wrapping keys (delegate.go); nil when Config.DelegateWraps is off.
	delegated *delegates
	// framedMaxPending is framedMaxPending when the gateway was made, for its framed connections.
	framedMaxPending int
	wraps            *batcher[*kv1.WrapRequest, *kv1.WrapResponse]
	// datakeys batches GenerateDataKey: the keys are made per batch (sendDataKeys).
	datakeys *batcher[dataKeyReq, dataKeyRes]
	unwraps  *batcher[*kv1.UnwrapRequest, *kv1.UnwrapResponse]

	tcpLn, unixLn, httpLn, kmipLn, xksLn net.Listener
	tcpSrv                               *transport.Server
	kmipSrv                              *kmip.Server
	xksSrv                               *xks.Server
	unixSrv                              *grpc.Server
	sniff                                *sniffListener // the Unix socket's, telling gRPC from framed
	framed                               *framedServer  // the Unix socket's framed connections
	http                                 *transport.AdminHTTP

	// policy is the tenant's key-use policy as last learnt from the region (nil until a node has
	// answered): TCP callers are checked by it (permit).
	policy atomic.Pointer[policy.Compiled]
	// quotas are the tenant's and the gateway's service's quotas as last learnt (quota.go).
	quotas *gatewayQuotas

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
	if cfg.CertSource == nil {
		cfg.CertSource = pki.StaticSource(cfg.Roots, cfg.Certificate)
	}
	if cfg.ServerCertSource == nil && len(cfg.ServerCertificate.Certificate) > 0 {
		cfg.ServerCertSource = pki.StaticSource(cfg.Roots, cfg.ServerCertificate)
	}
	g := &Gateway{cfg: cfg, log: log, id: id, reg: transport.NewRegistry(transport.CertificateExpiry{Name: "service", Source: cfg.CertSource}, transport.CertificateExpiry{Name: "server", Source: cfg.ServerCertSource}), serveErr: make(chan error, 4), done: make(chan struct{}), framedMaxPending: framedMaxPending}
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
	g.quotas = newGatewayQuotas()
	g.reg.MustRegister(g.quotas.refusals)
	g.pool.onQuotas = g.learnQuotas
	g.tracer = tracing.Tracer(cfg.TracerProvider, "gateway")
	g.wraps = &batcher[*kv1.WrapRequest, *kv1.WrapResponse]{
		size: cfg.BatchSize, wait: cfg.BatchWait, send: g.sendWraps,
		onBatch: func(n int) { g.metrics.batch("wrap", n) },
		tracer:  g.tracer, op: "wrap",
	}
	g.datakeys = &batcher[dataKeyReq, dataKeyRes]{
		size: cfg.BatchSize, wait: cfg.BatchWait, send: g.sendDataKeys,
		onBatch: func(n int) { g.metrics.batch("wrap", n) },
		drop:    func(r dataKeyRes) { clear(r.plaintext) },
		tracer:  g.tracer, op: "wrap",
	}
	g.unwraps = &batcher[*kv1.UnwrapRequest, *kv1.UnwrapResponse]{
		size: cfg.BatchSize, wait: cfg.BatchWait, send: g.sendUnwraps,
		onBatch: func(n int) { g.metrics.batch("unwrap", n) },
		drop:    func(r *kv1.UnwrapResponse) { clear(r.GetPlaintext()) },
		tracer:  g.tracer, op: "unwrap",
	}
	if cfg.BatchSize == 1 {
		g.wraps.wait, g.unwraps.wait, g.datakeys.wait = 0, 0, 0
	}
	if cfg.CacheEntries > 0 || cfg.DelegateWraps {
		g.watch = newWatcher(g.pool, log)
	}
	if cfg.CacheEntries > 0 {
		if g.cache, err = newCache(cfg, g.watch.leaseValid, g.metrics); err != nil {
			return nil, err
		}
		g.watch.sinks = append(g.watch.sinks, g.cache)
	}
	if cfg.DelegateWraps {
		g.delegated = newDelegates(g.pool, g.watch, log, g.metrics)
		g.watch.sinks = append(g.watch.sinks, g.delegated)
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
		kc.ClientCAs, kc.Certificate, kc.Source = cfg.Roots, cfg.ServerCertificate, cfg.ServerCertSource
		kc.RegistryPath, kc.Logger, kc.Registerer = cfg.KMIPRegistryPath, log, g.reg
		if g.kmipSrv, err = kmip.New(kc, KMIPKeys{G: g}); err != nil {
			return nil, err
		}
		if g.kmipLn, err = net.Listen("tcp", cfg.KMIPAddr); err != nil {
			return nil, fmt.Errorf("gateway: KMIPAddr: %w", err)
		}
	}
	if cfg.XKSAddr != "" {
		xc := cfg.XKS
		xc.Logger, xc.Registerer = log, g.reg
		if xc.EKMName == "" {
			xc.EKMName = "krypton-region-" + cfg.Region
		}
		if g.xksSrv, err = xks.New(xc, XKSKeys{G: g}); err != nil {
			return nil, err
		}
		if g.xksLn, err = net.Listen("tcp", cfg.XKSAddr); err != nil {
			return nil, fmt.Errorf("gateway: XKSAddr: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.AttemptTimeout)
	g.pool.start(ctx)
	cancel()
	if g.watch != nil {
		g.watch.start()
	}
	var failover []string
	for _, r := range cfg.FailoverRegions {
		failover = append(failover, r.Name)
	}
	log.Info("gateway started", "region", cfg.Region, "region-addrs", cfg.RegionAddrs, "failover-regions", failover, "listen", cfg.ListenAddr, "unix", cfg.UnixSocket,
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

// XKSAddr is the XKS proxy front end's address (nil when off).
func (g *Gateway) XKSAddr() net.Addr {
	if g.xksLn == nil {
		return nil
	}
	return g.xksLn.Addr()
}

// XKS is the XKS proxy front end (nil when off): its CreateKey makes external keys, its Reload
// reads the SigV4 credentials file again.
func (g *Gateway) XKS() *xks.Server { return g.xksSrv }

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
	if g.sniff != nil {
		g.sniff.Close()
		g.sniff.wait()
		g.framed.close()
	}
	if g.kmipSrv != nil {
		g.kmipSrv.Close()
	}
	if g.xksSrv != nil {
		g.xksSrv.Close()
	}
	if g.http != nil {
		g.http.Shutdown(ctx)
	}
	// Listeners a server never took (Serve not called, or it failed early).
	for _, ln := range []net.Listener{g.tcpLn, g.unixLn, g.kmipLn, g.xksLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if g.http == nil && g.httpLn != nil {
		g.httpLn.Close()
	}
	if g.wraps != nil {
		g.wraps.close()
		g.datakeys.close()
		g.unwraps.close()
	}
	if g.watch != nil {
		g.watch.close()
	}
	if g.delegated != nil {
		g.delegated.close()
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

// healthy decides the admin port's /livez (and /healthz): the gateway runs until Close.
func (g *Gateway) healthy() error {
	if g.isClosed() {
		return transport.NotReady("closed")
	}
	return nil
}

// ready decides /readyz: the gateway can serve while it reaches a serving region node. The
// reasons are fixed phrases: /readyz has no authentication (docs/security.md, "Limits before
// authentication").
func (g *Gateway) ready() error {
	if g.isClosed() {
		return transport.NotReady("closed")
	}
	if !g.pool.reachesServing() {
		return transport.NotReady("no serving region node reached")
	}
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
