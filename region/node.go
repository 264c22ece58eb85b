package region

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/internal/version"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Gossip tags a region node publishes, so that nodes and gateways can find each other's API.
const (
	metaRPC     = "grpc"
	metaRegion  = "region"
	metaVersion = "version"
)

// Node is one running region node: Raft and gossip (cluster), the replicated state (fsm), the
// keyring, the serving lease, and the gRPC API (wrap, admin and node services) on RPCAddr.
type Node struct {
	cfg     Config
	log     *slog.Logger
	fsm     *fsm.FSM
	state   *fsm.State
	cl      *cluster.Cluster
	keys    *keyring
	lease   *lease
	anchors *anchorCache
	// anchorChecks runs the leader's L1 checks (anchorcheck.go).
	anchorChecks *anchorChecker
	peers        *peerClients
	reg          *prometheus.Registry
	metrics      *nodeMetrics
	audit        *audit.Log
	// auditFloor is the highest log index the audit log records; entries at or below it are not
	// recorded again when the log is replayed (auditapply.go). Only the FSM goroutine uses it.
	auditFloor uint64
	syslog     *audit.Syslog // nil without Config.AuditSyslog
	srv        *transport.Server
	rpcLn      net.Listener
	http       *transport.AdminHTTP
	pprof      *transport.AdminHTTP // nil unless Config.PprofAddr
	flight     singleflight.Group   // one unseal or fetch per L2 version at a time
	svcFlight  singleflight.Group   // one open per L3 version at a time
	// barriers coalesces the read barriers of requests that find nothing in local state (catchup.go).
	barriers barriers
	watch    *voterWatch
	// policies are the tenants' compiled access policies (policy.go), kept in step with the state
	// machine by onChange.
	policies *policyTable
	// quotas are the tenants' and services' quota buckets (quota.go), likewise.
	quotas  *quotaTable
	events  *keyEvents // gateways' key-event watchers (keyevents.go)
	started time.Time

	// tracer traces calls' steps (region.key, region.crypto...); nil when tracing is off.
	tracer trace.Tracer

	leaseBound leaseBound // a longer lease in force until lately, for the fence
	grants     grantLog   // the leases this node granted as leader, for the fence

	// revs is the durable revocation set (revset.go): it only grows, and survives restores.
	revs *revSet
	// restores counts snapshots installed into the state (the feed restarts its session after
	// one); refusedSnapshots counts snapshots refused for lacking a revocation of revs.
	restores         atomic.Uint64
	refusedSnapshots atomic.Uint64
	// startRefusal is why the snapshot restored at start was refused (RestoreKind), for New's
	// error if the node cannot start without it.
	startRefusal atomic.Pointer[error]

	stop     chan struct{} // closed by Shutdown: the loops below return
	wg       sync.WaitGroup
	shutOnce sync.Once
	shut     atomic.Bool
	done     chan struct{} // closed once shutdown has finished; shutErr is set before
	shutErr  error
}

// New starts a node: it opens its data directory, joins or bootstraps the region, and serves the
// API on cfg.RPCAddr until Shutdown or Leave.
func New(cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.NodeID, "region", cfg.Region)
	if cfg.RevocationHistory == 0 {
		cfg.RevocationHistory = DefaultConfig().RevocationHistory
	}
	if cfg.RevocationCompactInterval == 0 {
		cfg.RevocationCompactInterval = DefaultConfig().RevocationCompactInterval
	}
	if cfg.CertSource == nil {
		cfg.CertSource = pki.StaticSource(cfg.Roots, cfg.Certificate)
	}
	size, err := keyringSize(cfg.KeyringSize)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		tracer:   tracing.Tracer(cfg.TracerProvider, "region"),
		log:      log,
		keys:     newKeyring(size),
		lease:    newLease(),
		watch:    newVoterWatch(),
		policies: newPolicyTable(),
		quotas:   newQuotaTable(),
		reg:      transport.NewRegistry(transport.CertificateExpiry{Name: "node", Source: cfg.CertSource}),
		started:  time.Now(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	{
		used, limit, enforced := wrap.LockedMemory()
		log.Info("keyring sized", "keys_per_kind", size, "configured", cfg.KeyringSize > 0,
			"memlock_enforced", enforced, "memlock_limit_bytes", limit, "locked_bytes", used)
	}
	n.events = newKeyEvents(n.lease, cfg.ClockDrift)
	if cfg.KeyEventAckWait > 0 {
		n.events.ackWait = cfg.KeyEventAckWait
	}
	// Undo what was started if a later step fails.
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
			n.keys.close()
		}
	}()

	auditPath := cfg.AuditPath
	if auditPath == "" {
		auditPath = filepath.Join(cfg.DataDir, "audit.log")
	}
	auditOpts := audit.Options{Node: cfg.NodeID, SyncInterval: 100 * time.Millisecond}
	if cfg.AuditSyslog != nil {
		sc := *cfg.AuditSyslog
		sc.Logger, sc.Registerer = log, n.reg
		if n.syslog, err = audit.NewSyslog(sc); err != nil {
			return nil, fmt.Errorf("region: audit syslog: %w", err)
		}
		closers = append(closers, func() { n.syslog.Close() })
		auditOpts.Forward = n.syslog.Forward
	}
	if n.audit, err = audit.Open(auditPath, auditOpts); err != nil {
		return nil, fmt.Errorf("region: audit log: %w", err)
	}
	closers = append(closers, func() { n.audit.Close() })
	if n.auditFloor, err = audit.LastIndex(auditPath); err != nil {
		return nil, fmt.Errorf("region: audit log: %w", err)
	}

	n.anchors = newAnchorCache(log, cfg.AllowDevAnchor, cfg.AnchorOptions)
	closers = append(closers, n.anchors.close)
	n.anchorChecks = newAnchorChecker(n)
	n.metrics = newNodeMetrics(n.reg, n)
	n.events.onCut = n.watcherCut

	// The durable revocation set opens before Raft starts: restoring the local snapshot at start
	// and replaying the log add to it (onChange).
	if n.revs, err = openRevSet(cfg.DataDir); err != nil {
		return nil, err
	}
	closers = append(closers, func() { n.revs.close() })
	n.fsm = fsm.New(fsm.Options{OnChange: n.onChange, OnApplied: n.auditApplied, Region: cfg.Region})
	n.state = n.fsm.State()

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
	ccfg.Meta = map[string]string{metaRPC: cfg.RPCAddr, metaRegion: cfg.Region, metaVersion: version.Version, metaFormat: strconv.Itoa(LogFormat)}
	ccfg.OnPeerRequest = n.auditPeerRequest
	ccfg.Logger = log
	ccfg.Registerer = n.reg
	ccfg.TracerProvider = cfg.TracerProvider // a forwarded write's trace goes on to the leader
	if cfg.Tune != nil {
		cfg.Tune(&ccfg)
	}

	// The API listener comes first so that a port clash fails before Raft starts.
	if n.rpcLn, err = net.Listen("tcp", cfg.RPCAddr); err != nil {
		return nil, fmt.Errorf("region: RPCAddr: %w", err)
	}
	closers = append(closers, func() { n.rpcLn.Close() })

	if n.cl, err = cluster.New(ccfg, &regionFSM{FSM: n.fsm, n: n}, append([]cluster.Option{cluster.WithResponseCodec(fsm.Codec{})}, cfg.ClusterOptions...)...); err != nil {
		if refused := n.startRefusal.Load(); refused != nil {
			return nil, fmt.Errorf("%w (%w). Fix: restore on the leader a snapshot taken after these revocations and start this node with an empty data directory, so that the leader sends it the region's state", *refused, err)
		}
		return nil, err
	}
	closers = append(closers, func() { n.cl.Shutdown() })
	n.peers = newPeerClients(n.cl, transport.ClientConfig{Source: cfg.CertSource,
		Server: pki.Identity{Kind: pki.KindNode, Region: cfg.Region}, TracerProvider: cfg.TracerProvider}, cfg.PeerFilter)
	closers = append(closers, n.peers.close)

	tm, err := transport.NewMetrics(n.reg)
	if err != nil {
		return nil, err
	}
	n.srv, err = transport.NewServer(transport.ServerConfig{
		Source:     cfg.CertSource,
		Metrics:    tm,
		Audit:      n.auditRefusal,
		OIDC:       cfg.OIDC,
		Logger:     log,
		Listener:   "api",
		Registerer: n.reg,
		// Callers with a certificate (gateways, the client library, peers) may be a call's
		// trace parent; tracing.Sampler bounds how many such calls are recorded.
		TracerProvider: cfg.TracerProvider,
		// A caller a quota refused is refused again before its request is read (quota.go).
		EarlyAdmit: n.earlyAdmit,
	})
	if err != nil {
		return nil, err
	}
	kv1.RegisterWrapServiceServer(n.srv, &wrapService{n: n})
	kv1.RegisterAdminServiceServer(n.srv, &adminService{n: n})
	kv1.RegisterNodeServiceServer(n.srv, &nodeService{n: n})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(n.rpcLn); err != nil && !n.shut.Load() {
			n.log.Error("gRPC server stopped", "err", err)
		}
	}()
	closers = append(closers, func() { n.srv.Stop() })

	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("region: HTTPAddr: %w", err)
		}
		if n.http, err = transport.ServeAdminHTTP(ln, transport.AdminHTTPConfig{Gatherer: n.reg, Registerer: n.reg, Logger: log, Healthy: n.healthy, Ready: n.ready}); err != nil {
			ln.Close()
			return nil, err
		}
	}
	if cfg.PprofAddr != "" {
		ln, err := net.Listen("tcp", cfg.PprofAddr)
		if err != nil {
			return nil, fmt.Errorf("region: PprofAddr: %w", err)
		}
		if n.pprof, err = transport.ServePprof(ln, transport.PprofConfig{Source: cfg.CertSource, Logger: log, Registerer: n.reg}); err != nil {
			ln.Close()
			return nil, err
		}
		closers = append(closers, func() { n.pprof.Shutdown(context.Background()) })
		log.Warn("the profiler is on (-pprof): operator certificates may read heap and goroutine profiles", "addr", ln.Addr().String())
	}

	n.wg.Add(2)
	go n.leaseLoop()
	go n.anchorLoop()
	if len(cfg.Governance) > 0 {
		n.wg.Add(1)
		go newFeed(n).loop()
	}
	if cfg.Settings != nil {
		n.wg.Add(1)
		go n.settingsLoop(*cfg.Settings)
	}
	if n.cfg.RevocationCompactInterval >= 0 {
		n.wg.Add(1)
		go n.revocationCompactLoop()
	}
	if !cfg.NoKeyWarmup {
		n.wg.Add(1)
		go n.warmupLoop()
	}
	log.Info("region node started", "rpc", cfg.RPCAddr, "raft", cfg.RaftAddr, "gossip", cfg.GossipAddr)
	return n, nil
}

// ID is the node's id; RPCAddr the address its API listens on.
func (n *Node) ID() string      { return n.cfg.NodeID }
func (n *Node) RPCAddr() string { return n.rpcLn.Addr().String() }

// Cluster exposes the node's Raft and gossip layer to tests and the command line.
func (n *Node) Cluster() *cluster.Cluster { return n.cl }

// State is the node's replicated state, as applied here.
func (n *Node) State() *fsm.State { return n.state }

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

// Serving reports whether the node may serve wraps now, and if not, why.
func (n *Node) Serving() error {
	if n.shut.Load() {
		return ErrShutdown
	}
	return n.lease.check()
}

func (n *Node) healthy() error {
	if n.shut.Load() {
		return ErrShutdown
	}
	return nil
}

// ready decides the admin port's /readyz: the node serves wraps only under a serving lease, and a
// lease is only granted once the node has applied the log up to the commit index its grant carries
// (renewLease), so holding one is being caught up. The reasons are fixed phrases: /readyz has no
// authentication (docs/security.md, "Limits before authentication").
func (n *Node) ready() error {
	if n.shut.Load() {
		return transport.NotReady("shutting down")
	}
	if n.lease.check() != nil {
		return transport.NotReady("no serving lease (not caught up with a leader)")
	}
	return nil
}

// Shutdown stops the node without leaving the region (the others see it fail; restarted with the
// same data directory, it rejoins). It wipes every key from memory. The first call returns the
// error of stopping, if any; every later call returns ErrShutdown.
func (n *Node) Shutdown() error {
	var err error = ErrShutdown
	n.shutOnce.Do(func() { err = n.shutdown(func() error { return n.cl.Shutdown() }) })
	return err
}

// Done is closed once the node has stopped, whoever stopped it: Shutdown, Leave, or an operator's
// `krypton leave` (the admin API's Leave, which shuts the node down after answering). Raft and the
// data directory are closed and every key wiped by then. A process that runs a node waits on Done
// as well as on its signals, so that a node that left does not leave its process running.
func (n *Node) Done() <-chan struct{} { return n.done }

// StopErr is the error of stopping the node (nil for a clean stop), once Done is closed.
func (n *Node) StopErr() error {
	<-n.done
	return n.shutErr
}

// Leave takes the node out of the region gracefully (a leader hands leadership over first; the node
// is removed from the Raft configuration, then leaves gossip) and then shuts it down.
func (n *Node) Leave(ctx context.Context) error {
	var err error = ErrShutdown
	n.shutOnce.Do(func() {
		err = n.shutdown(func() error {
			if e := n.cl.Leave(ctx); e != nil {
				n.log.Warn("leave failed; shutting down without leaving", "err", e)
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
	n.lease.drop()
	close(n.stop)
	for _, s := range []string{kv1.WrapService_ServiceDesc.ServiceName, kv1.AdminService_ServiceDesc.ServiceName} {
		n.srv.SetServing(s, false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Leave needs the gRPC server no longer, but in-flight calls may still need Raft: stop taking
	// calls first, then stop the cluster.
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
	if !n.cfg.NoKeyWarmup {
		// The keys held now are the ones the restarted node opens first (warmup.go).
		if e := n.writeRecentKeys(); e != nil {
			n.log.Warn("key warm-up: writing the list of recent keys", "err", e)
		}
	}
	n.peers.close()
	n.anchors.close()
	n.keys.close()
	if e := n.revs.close(); e != nil && err == nil {
		err = e
	}
	if e := n.audit.Close(); e != nil && err == nil {
		err = e
	}
	if n.syslog != nil {
		n.syslog.Close() // after the log: its last lines are queued
	}
	n.log.Info("region node stopped")
	n.shutErr = err
	close(n.done)
	return err
}

// onChange runs inside FSM.Apply (fsm.Options.OnChange): it must not block. It wipes the keys that
// a revocation, lockout or deleted anchor makes unusable. The state machine already refuses them;
// this only takes their bytes out of memory.
func (n *Node) onChange(c fsm.Change) {
	n.events.onChange(c)
	switch c.Kind {
	case fsm.TenantRevoked:
		n.keys.wipeTenant(c.Tenant)
		n.addRevoked(revEntry{Tenant: c.Tenant, Index: c.Index})
	case fsm.TenantRemoved:
		n.keys.wipeTenant(c.Tenant)
		n.policies.set(c.Tenant, policyNone)
	case fsm.TenantLocked, fsm.AnchorDeleted:
		n.keys.wipeTenant(c.Tenant)
		if c.Kind == fsm.AnchorDeleted {
			n.noteOwners(n.state, c.Tenant) // an owned tenant's anchor
		}
	case fsm.ServiceRevoked:
		n.keys.wipeService(c.Tenant, c.Service, 0)
		n.addRevoked(revEntry{Tenant: c.Tenant, Service: c.Service, Index: c.Index})
	case fsm.KeyVersionRevoked:
		n.keys.wipeService(c.Tenant, c.Service, c.Version)
		n.addRevoked(revEntry{Tenant: c.Tenant, Service: c.Service, Version: c.Version, Index: c.Index})
	case fsm.PolicySet:
		if p, err := n.state.Policy(c.Tenant); err == nil {
			n.policies.set(c.Tenant, p)
		}
	case fsm.QuotaSet:
		var q fsm.Quota
		if c.Service == "" {
			t, _ := n.state.Tenant(c.Tenant)
			q = t.Quota
		} else {
			s, _ := n.state.Service(c.Tenant, c.Service)
			q = s.Quota
		}
		n.quotas.set(c.Tenant, c.Service, q)
	case fsm.OwnerKeySet, fsm.AnchorSet:
		n.noteOwners(n.state, c.Tenant) // an owned tenant's key or anchor
	case fsm.Restored:
		n.restores.Add(1)
		n.keys.wipeAll()
		// The union: what the snapshot revokes joins the set (its check made sure it lacks
		// nothing of the set, save on a start, where the log that follows is replayed).
		n.addRevoked(revFromLog(n.state.RevocationLog(0))...)
		n.noteOwners(n.state) // its check made sure it swaps no owner key this node holds
		n.policies.rebuild(n.state)
		n.quotas.rebuild(n.state)
		n.leaseBound.note(n.state.Settings().LeaseDuration, n.cfg.ClockDrift)
	case fsm.SettingsChanged:
		n.leaseBound.note(n.state.Settings().LeaseDuration, n.cfg.ClockDrift)
	}
}

// addRevoked records revocations in the durable set. It runs inside FSM.Apply, before the
// applied index passes them, so a fence or Revoke never acknowledges a revocation this node has
// not recorded. It costs a bbolt write (an fsync) per revocation, which only revocations pay.
func (n *Node) addRevoked(e ...revEntry) {
	if err := n.revs.add(e); err != nil {
		// Still enforced in memory until the process ends; the next start re-adds it from the
		// log or snapshot. An operator must look at the disk.
		n.log.Error("cannot record a revocation in the durable revocation set; it is enforced in memory only", "file", revsetFile, "err", err)
	}
}

// regionFSM is the state machine as Raft sees it: the fsm, with a check on each snapshot the
// leader sends (InstallSnapshot).
type regionFSM struct {
	*fsm.FSM
	n *Node
}

// RestoreKind refuses a snapshot that lacks a revocation of the durable set (DESIGN.md,
// "Revocations survive every restore"), with an error wrapping cluster.ErrSnapshotRefused, so
// that the cluster also takes it out of the snapshot store:
//   - from the leader (InstallSnapshot): the node stays on its state (and so stops serving once
//     the region's commit index passes it); the leader sends the snapshot again later;
//   - at a start, the node's newest stored snapshot: a revocation the set holds may be missing
//     from it only if this node saw it after the snapshot's index (the log that follows replays
//     it). Otherwise it is a snapshot the node must not restore (one refused on install and left
//     in the store by an earlier version, say): Raft falls back to the previous snapshot, or to
//     the log if it begins at index 1; failing both, the node does not start, and New's error
//     names what the snapshot lacks.
//
// An operator's restore was checked under the cluster's apply gate before Raft took it (and
// Raft panics on a refusal there).
func (f *regionFSM) RestoreKind(rc io.ReadCloser, kind cluster.RestoreKind, index uint64) error {
	err := f.restoreKind(rc, kind, index)
	if err == nil {
		// A snapshot's entries were not applied here one by one: say so in the audit log, unless
		// it records them already (this node's own snapshot, at a start).
		f.n.auditInstalled(index)
	}
	return err
}

// Snapshot fsyncs the audit log before Raft captures the state: a snapshot lets Raft compact the
// log entries it covers, which a restart then no longer replays, so their records must be on disk.
func (f *regionFSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.n.audit.Sync(); err != nil {
		return nil, err
	}
	return f.FSM.Snapshot()
}

func (f *regionFSM) restoreKind(rc io.ReadCloser, kind cluster.RestoreKind, index uint64) error {
	if unsafeRestoreUngated {
		return f.FSM.Restore(rc)
	}
	switch kind {
	case cluster.RestoreInstall:
		return f.FSM.RestoreChecked(rc, func(s *fsm.State) error {
			if missing := f.n.revs.missingFrom(s); len(missing) > 0 {
				f.n.refusedSnapshots.Add(1)
				f.n.log.Error("refusing a snapshot from the leader: it lacks revocations this node has applied; restoring it would make revoked keys usable again. Restore a snapshot taken after them on the leader.", "snapshot-index", s.AppliedIndex(), "missing", describeMissing(missing))
				return fmt.Errorf("%w: region: refusing a snapshot (index %d) that lacks %d revocation(s) this node has applied: %s", cluster.ErrSnapshotRefused, s.AppliedIndex(), len(missing), describeMissing(missing))
			}
			return nil
		})
	case cluster.RestoreStartup:
		return f.FSM.RestoreChecked(rc, func(s *fsm.State) error {
			var missing []revEntry
			for _, e := range f.n.revs.missingFrom(s) {
				if e.Index <= index {
					missing = append(missing, e)
				}
			}
			if len(missing) == 0 {
				return nil
			}
			f.n.refusedSnapshots.Add(1)
			err := fmt.Errorf("%w: region: this node's newest Raft snapshot (index %d, in %s) lacks %d revocation(s) this node has applied before that index: %s; restoring it would make revoked keys usable again",
				cluster.ErrSnapshotRefused, index, filepath.Join(f.n.cfg.DataDir, "snapshots"), len(missing), describeMissing(missing))
			f.n.startRefusal.Store(&err)
			f.n.log.Error("refusing to restore this node's snapshot at start; trying the previous snapshot or the log", "err", err)
			return err
		})
	}
	return f.FSM.Restore(rc)
}

// raftStat reads one of Raft's numeric statistics (term, commit_index, ...).
func (n *Node) raftStat(name string) uint64 {
	v, _ := strconv.ParseUint(n.cl.Stats()[name], 10, 64)
	return v
}

// auditPeerRequest records a membership change, leadership transfer or forwarded write another
// node asked this one (the leader) for over the cluster RPC, with the requesting node's identity
// (origin "peer"), and every such request refused because the node is not in the configuration.
func (n *Node) auditPeerRequest(r cluster.PeerRequest) {
	e := audit.Event{Kind: "cluster." + r.Op, Actor: r.Peer.String(), Detail: map[string]string{"origin": originPeer}}
	if r.Cmd != nil {
		// A write another node took and forwarded to this leader: which command, under which
		// request id (the forwarding node's own record names its API caller).
		if entry, err := fsm.Decode(r.Cmd); err == nil {
			e.Detail["command"] = entry.Command.Type()
			e.RequestID = entry.RequestID
			// The entry's origin is the forwarding node's word; every node's replicated record
			// names it as proposer. A node that claims to forward for another is on record here.
			if entry.Origin.Node != r.Peer.NodeID {
				e.Detail["proposer-mismatch"] = detailText(entry.Origin.Node)
				n.log.Warn("a forwarded write names another node as its proposer", "peer", r.Peer.String(), "proposer", entry.Origin.Node, "request-id", entry.RequestID)
			}
		} else {
			e.Detail["command"] = "(undecodable)"
		}
	}
	if r.Target != "" {
		e.Detail["node"] = r.Target
	}
	if r.Addr != "" {
		e.Detail["raft-address"] = r.Addr
	}
	switch {
	case r.Refused:
		e.Kind = audit.KindCallRefused
		e.Code = "PermissionDenied"
		e.Reason = r.Err.Error()
		e.Detail["op"] = "cluster." + r.Op
	case r.Err != nil:
		e.Reason = "failed: " + r.Err.Error()
	}
	n.audit.Record(e)
}

func (n *Node) auditRefusal(ctx context.Context, method string, id pki.Identity, code codes.Code) {
	n.audit.Record(audit.Event{Kind: audit.KindCallRefused, Actor: id.String(), Code: code.String(), Detail: map[string]string{"method": method}})
}
