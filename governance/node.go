package governance

import (
	"context"
	"errors"
	"fmt"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/version"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Gossip tags a governance node publishes.
const (
	metaRPC     = "grpc"
	metaRole    = "role"
	metaVersion = "version"
)

// Node is one running governance node: Raft and gossip (cluster), the
// replicated state (FSM), the audit log, and the GovernanceService API on
// RPCAddr.
type Node struct {
	cfg   Config
	log   *slog.Logger
	fsm   *govfsm.FSM
	cl    *cluster.Cluster
	reg   *prometheus.Registry
	audit *audit.Log
	// auditFloor is the highest log index the audit log records; a replay records nothing at or
	// below it (auditapply.go). Only Raft's FSM goroutine uses it once Raft runs.
	auditFloor uint64
	syslog     *audit.Syslog // nil without Config.AuditSyslog
	srv        *transport.Server
	rpcLn      net.Listener
	http       *transport.AdminHTTP
	pprof      *transport.AdminHTTP // nil unless Config.PprofAddr
	svc        *api
	metrics    *collector
	watchers   watchCount // streams served, by region (metrics)

	stop     chan struct{} // closed by Close: streams and waits end
	wg       sync.WaitGroup
	shutOnce sync.Once
	shut     atomic.Bool
}

// Start starts a governance node: it opens its data directory, joins or
// bootstraps the governance cluster, and serves the API on cfg.RPCAddr until
// Close. A node that bootstraps alone (BootstrapExpect 1, no Join: the
// development set-up) waits, within ctx, until it leads; otherwise Start
// returns at once (WaitLeader waits).
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultConfig().HeartbeatInterval
	}
	if cfg.EventRetention == 0 {
		cfg.EventRetention = DefaultConfig().EventRetention
	}
	if cfg.CompactInterval == 0 {
		cfg.CompactInterval = DefaultConfig().CompactInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.NodeID, "plane", "governance")
	if cfg.CertSource == nil {
		cfg.CertSource = pki.StaticSource(cfg.Roots, cfg.Certificate)
	}
	n := &Node{cfg: cfg, log: log, fsm: govfsm.NewFSM(), reg: transport.NewRegistry(transport.CertificateExpiry{Name: "node", Source: cfg.CertSource}), stop: make(chan struct{})}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	auditPath := cfg.AuditPath
	if auditPath == "" {
		auditPath = filepath.Join(cfg.DataDir, "audit.log")
	}
	aopts := audit.Options{Node: cfg.NodeID, SyncInterval: 100 * time.Millisecond}
	if cfg.AuditSyslog != nil {
		sc := *cfg.AuditSyslog
		sc.Registerer = n.reg
		if sc.Logger == nil {
			sc.Logger = log
		}
		if n.syslog, err = audit.NewSyslog(sc); err != nil {
			return nil, fmt.Errorf("governance: audit syslog: %w", err)
		}
		closers = append(closers, func() { n.syslog.Close() })
		aopts.Forward = n.syslog.Forward
	}
	if n.audit, err = audit.Open(auditPath, aopts); err != nil {
		return nil, fmt.Errorf("governance: audit log: %w", err)
	}
	closers = append(closers, func() { n.audit.Close() })
	if n.auditFloor, err = audit.LastIndex(auditPath); err != nil {
		return nil, fmt.Errorf("governance: audit log: %w", err)
	}
	n.fsm.OnApplied(n.auditApplied)

	ccfg := cluster.DefaultConfig()
	ccfg.NodeID = cfg.NodeID
	ccfg.DataDir = cfg.DataDir
	ccfg.RaftAddr = cfg.RaftAddr
	ccfg.GossipAddr = cfg.GossipAddr
	ccfg.GossipKey = cfg.GossipKey
	ccfg.BootstrapExpect = cfg.BootstrapExpect
	ccfg.Join = cfg.Join
	ccfg.TLS = pki.NodeTLSConfig(cfg.Roots, cfg.Certificate)
	ccfg.TLSSource = cfg.CertSource
	ccfg.Logger = log
	ccfg.Registerer = n.reg
	ccfg.TracerProvider = cfg.TracerProvider // a forwarded write's trace goes on to the leader
	// The API listener comes first so that a port clash fails before Raft
	// starts, and so that port 0 resolves before gossip publishes it.
	if n.rpcLn, err = net.Listen("tcp", cfg.RPCAddr); err != nil {
		return nil, fmt.Errorf("governance: RPCAddr: %w", err)
	}
	closers = append(closers, func() { n.rpcLn.Close() })
	ccfg.Meta = map[string]string{metaRPC: n.rpcLn.Addr().String(), metaRole: "governance", metaVersion: version.Version,
		metaFormat: strconv.Itoa(LogFormat)}
	if cfg.Tune != nil {
		cfg.Tune(&ccfg) // after the tags, so that a test may play an older release's
	}
	if n.cfg.StaleAfter == 0 {
		n.cfg.StaleAfter = 3 * ccfg.ElectionTimeout
	}

	if n.cl, err = cluster.New(ccfg, StateMachine{FSM: n.fsm, n: n}, append([]cluster.Option{cluster.WithResponseCodec(govfsm.Codec{})}, cfg.ClusterOptions...)...); err != nil {
		return nil, err
	}
	closers = append(closers, func() { n.cl.Shutdown() })

	n.metrics = newCollector(n)
	if err := n.reg.Register(n.metrics); err != nil {
		return nil, err
	}
	tm, err := transport.NewMetrics(n.reg)
	if err != nil {
		return nil, err
	}
	n.srv, err = transport.NewServer(transport.ServerConfig{
		Source:     cfg.CertSource,
		Metrics:    tm,
		Audit:      n.auditRefusal,
		Logger:     log,
		OIDC:       cfg.OIDC,
		Listener:   "governance",
		Registerer: n.reg,
		Errors:     fsmCodes,
		// An operator's CLI or a region's feed may be a call's trace parent (tracing.Sampler
		// bounds how many are recorded).
		TracerProvider: cfg.TracerProvider,
	})
	if err != nil {
		return nil, err
	}
	n.svc = &api{n: n}
	kv1.RegisterGovernanceServiceServer(n.srv, n.svc)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(n.rpcLn); err != nil && !n.shut.Load() {
			n.log.Error("gRPC server stopped", "err", err)
		}
	}()
	closers = append(closers, func() { n.srv.Stop() })
	if cfg.CompactInterval > 0 {
		n.wg.Add(1)
		go n.compactLoop()
	}

	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("governance: HTTPAddr: %w", err)
		}
		if n.http, err = transport.ServeAdminHTTP(ln, transport.AdminHTTPConfig{Gatherer: n.reg, Registerer: n.reg, Logger: log, Healthy: n.healthy, Ready: n.ready}); err != nil {
			ln.Close()
			return nil, err
		}
		closers = append(closers, func() { n.http.Shutdown(context.Background()) })
	}
	if cfg.PprofAddr != "" {
		ln, err := net.Listen("tcp", cfg.PprofAddr)
		if err != nil {
			return nil, fmt.Errorf("governance: PprofAddr: %w", err)
		}
		if n.pprof, err = transport.ServePprof(ln, transport.PprofConfig{Source: cfg.CertSource, Logger: log, Registerer: n.reg}); err != nil {
			ln.Close()
			return nil, err
		}
		closers = append(closers, func() { n.pprof.Shutdown(context.Background()) })
		log.Warn("the profiler is on (-pprof): operator certificates may read heap and goroutine profiles", "addr", ln.Addr().String())
	}
	log.Info("governance node started", "rpc", n.Addr(), "raft", cfg.RaftAddr, "gossip", cfg.GossipAddr)
	if cfg.BootstrapExpect == 1 && len(cfg.Join) == 0 {
		if err := n.WaitLeader(ctx); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// WaitLeader waits until a leader is known and this node has applied its
// log up to the leader's commit index.
func (n *Node) WaitLeader(ctx context.Context) error {
	if _, err := n.cl.WaitForLeader(ctx); err != nil {
		return fmt.Errorf("governance: waiting for a leader: %w", err)
	}
	return n.cl.Barrier(ctx)
}

// ID returns the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addr returns the address the gRPC API listens on.
func (n *Node) Addr() string { return n.rpcLn.Addr().String() }

// Cluster exposes the node's Raft and gossip layer to tests and tools.
func (n *Node) Cluster() *cluster.Cluster { return n.cl }

// FSM is the node's replicated state, as applied here.
func (n *Node) FSM() *govfsm.FSM { return n.fsm }

// HTTPAddr is the address the admin HTTP port (/metrics, /livez, /readyz) listens on, or "" when
// Config.HTTPAddr was empty.
func (n *Node) HTTPAddr() string {
	if n.http == nil {
		return ""
	}
	return n.http.Addr()
}

// Registry is where the node's metrics are registered.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

func (n *Node) healthy() error {
	if n.shut.Load() {
		return ErrShutdown
	}
	return nil
}

// readyLag is how many log entries a governance node may have left to apply and still answer
// /readyz with 200: a busy node applies continuously, and an exact match would flap.
const readyLag = 64

// ready decides the admin port's /readyz: a leader is known and this node has applied what it
// knows committed (within readyLag). The reasons are fixed phrases: /readyz has no
// authentication (docs/security.md, "Limits before authentication").
func (n *Node) ready() error {
	if n.shut.Load() {
		return transport.NotReady("shutting down")
	}
	if id, _ := n.cl.Leader(); id == "" {
		return transport.NotReady("no leader")
	}
	if c := n.cl.CommitIndex(); c > readyLag && !n.cl.AppliedThrough(c-readyLag) {
		return transport.NotReady("catching up with the leader")
	}
	return nil
}

// Close stops the node without leaving the cluster (the others see it
// fail; restarted with the same DataDir it rejoins). Streams end with
// UNAVAILABLE. The first call returns the error of stopping, if any; every
// later call returns ErrShutdown.
func (n *Node) Close() error {
	err := error(ErrShutdown)
	n.shutOnce.Do(func() { err = n.shutdown(func() error { return n.cl.Shutdown() }) })
	return err
}

// Leave takes the node out of the cluster gracefully (leadership handed
// over, removed from the configuration, gossip left), then closes it.
func (n *Node) Leave(ctx context.Context) error {
	err := error(ErrShutdown)
	n.shutOnce.Do(func() {
		err = n.shutdown(func() error {
			if e := n.cl.Leave(ctx); e != nil {
				n.cl.Shutdown()
				return e
			}
			return nil
		})
	})
	return err
}

func (n *Node) shutdown(stopCluster func() error) error {
	n.shut.Store(true)
	close(n.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.srv.Shutdown(ctx)
	err := stopCluster()
	if errors.Is(err, cluster.ErrShutdown) {
		err = nil
	}
	if n.http != nil {
		n.http.Shutdown(ctx)
	}
	if n.pprof != nil {
		n.pprof.Shutdown(ctx)
	}
	n.wg.Wait()
	n.reg.Unregister(n.metrics)
	if e := n.audit.Close(); e != nil && err == nil {
		err = e
	}
	if n.syslog != nil {
		n.syslog.Close()
	}
	n.log.Info("governance node stopped")
	return err
}

func (n *Node) raftStat(name string) uint64 {
	v, _ := strconv.ParseUint(n.cl.Stats()[name], 10, 64)
	return v
}

func (n *Node) auditRefusal(_ context.Context, method string, id pki.Identity, code codes.Code) {
	actor := ""
	if id.Kind != 0 {
		actor = id.String()
	}
	n.audit.Record(audit.Event{Kind: audit.KindCallRefused, Actor: actor, Code: code.String(), Detail: map[string]string{"method": method}})
}

// record writes a governance decision to the audit log with the caller's
// identity.
func (n *Node) record(ctx context.Context, e audit.Event) {
	if id, ok := transport.IdentityFromContext(ctx); ok {
		e.Actor = id.String()
	}
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "err", err)
	}
}
