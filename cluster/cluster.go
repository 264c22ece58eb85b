package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/internal/netutil"
)

// Cluster is one node of a Raft cluster with gossip membership. All
// methods are safe for concurrent use. After Shutdown (or Leave) every
// method that does work returns ErrShutdown.
type Cluster struct {
	cfg    Config
	logger *slog.Logger
	tracer trace.Tracer // nil unless Config.TracerProvider
	codec  ResponseCodec

	fsm    *trackingFSM
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	store  *raftboltdb.BoltStore
	logs   raft.LogStore
	snaps  *raft.FileSnapshotStore
	mux    *mux
	rpc    *rpcClient
	gossip *gossip

	metrics *collector

	// readyTerm is the term in which this node, as leader, has applied a
	// barrier: from then on its commit index covers every entry of earlier
	// terms, and reads may use it (see leaderReadIndex).
	readyTerm atomic.Uint64

	obsMu     sync.Mutex // guards observers, obsNext
	observers map[int]func(LeaderChange)
	obsNext   int

	unjoinedMu sync.Mutex           // guards unjoined
	unjoined   map[string]time.Time // id@addr -> when reconcile last logged it (noteUnjoined)

	// memberMu serialises, on the leader, every change of the configuration and of the
	// tombstones (Join, Remove, reconcile's address move) and an operator's restore: each reads
	// the configuration and the tombstones and writes on that reading.
	memberMu sync.Mutex

	restoreMu sync.Mutex // serialises Restore

	// fellBackToLog is set when, at the start, the FSM refused the only snapshot and the log
	// begins at index 1 (quarantineSnapshot): New then starts Raft again, from the log.
	fellBackToLog atomic.Bool

	// started is raft once NewRaft has returned, for the transport and mux,
	// whose goroutines may run before c.raft is set; startedCh is closed then.
	// NewRaft loads the configuration (snapshot and log) before it returns, so
	// until then no Raft stream is admitted: admitRaft waits.
	started   atomic.Pointer[raft.Raft]
	startedCh chan struct{}

	// applyGate is held for reading by every entry this node proposes as leader, from its
	// proposal until Raft resolves it, and for writing by RestoreChecked: its check then sees
	// every entry proposed here before it, and none is proposed until the restore is done.
	applyGate sync.RWMutex

	// logClosed silences the logger after shutdown (see gateHandler).
	logClosed *atomic.Bool

	shutdownCh   chan struct{}
	shutdownOnce sync.Once
	shutdownErr  error
	wg           sync.WaitGroup
	// futures counts the goroutines that wait on a Raft future for a caller (waitFuture,
	// applyLocal). Shutdown waits for them only for a while: see drainFSM.
	futures sync.WaitGroup
}

// Option adjusts New.
type Option func(*options)

type options struct {
	codec  ResponseCodec
	filter ConnFilter
}

// WithResponseCodec sets the codec of forwarded Apply responses (default
// DefaultCodec).
func WithResponseCodec(c ResponseCodec) Option { return func(o *options) { o.codec = c } }

// WithConnFilter installs a node-to-node connection filter; tests use it to
// partition a cluster (clustertest).
func WithConnFilter(f ConnFilter) Option { return func(o *options) { o.filter = f } }

// New opens (or creates) the node's Raft state in cfg.DataDir, starts the
// Raft transport and gossip, and joins cfg.Join. It does not wait for a
// leader: see WaitForLeader. fsm is wrapped to track its applied index;
// it must follow raft.FSM's rules (deterministic Apply, Restore discards
// all previous state, Persist tolerates concurrent Apply).
func New(cfg Config, fsm raft.FSM, opts ...Option) (_ *Cluster, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if fsm == nil {
		return nil, &ConfigError{Field: "fsm", Reason: "nil"}
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.codec == nil {
		o.codec = DefaultCodec{}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = discardLogger()
	}
	logClosed := new(atomic.Bool)
	logger = slog.New(gateHandler{h: logger.Handler(), closed: logClosed}).With("node-id", cfg.NodeID)
	c := &Cluster{
		tracer:     tracerOf(cfg.TracerProvider),
		logClosed:  logClosed,
		cfg:        cfg,
		logger:     logger,
		codec:      o.codec,
		fsm:        newTrackingFSM(fsm),
		observers:  make(map[int]func(LeaderChange)),
		unjoined:   make(map[string]time.Time),
		shutdownCh: make(chan struct{}),
		startedCh:  make(chan struct{}),
	}
	// Undo whatever was started if a later step fails.
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
			logClosed.Store(true)
		}
	}()

	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "raft"), 0o700); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	c.store, err = raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.DataDir, "raft", "raft.db"),
		// Fail rather than hang when another process holds the file.
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft store: %w", DamagedState(filepath.Join(cfg.DataDir, "raft", "raft.db"), cfg.DataDir, err))
	}
	cleanup = append(cleanup, func() { c.store.Close() })
	c.logs, err = raft.NewLogCache(512, c.store)
	if err != nil {
		return nil, fmt.Errorf("cluster: log cache: %w", err)
	}
	hclogger := newHCLogger(logger, "raft")
	c.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hclogger)
	if err != nil {
		return nil, fmt.Errorf("cluster: snapshot store: %w", err)
	}
	hasState, err := raft.HasExistingState(c.logs, c.store, c.snaps)
	if err != nil {
		return nil, fmt.Errorf("cluster: inspect raft state: %w", err)
	}

	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen %s: %w", cfg.RaftAddr, err)
	}
	// Pre-authentication limits: the mux tells the listener when a peer has completed the
	// handshake (netutil.Authenticated); until then a connection holds a pending slot only.
	ln = netutil.LimitHandshakes(ln, netutil.HandshakeLimits{
		Listener: "raft", HandshakeTimeout: handshakeTimeout, Registerer: cfg.Registerer,
	})
	advertise, err := net.ResolveTCPAddr("tcp", cfg.raftAdvertise())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("cluster: RaftAdvertise: %w", err)
	}
	c.mux = newMux(cfg.NodeID, ln, advertise, cfg.TLS, cfg.TLSSource, o.filter, logger)
	c.mux.start(c.serveRPC, c.admitPeer)
	cleanup = append(cleanup, c.mux.close)
	c.rpc = &rpcClient{m: c.mux, idle: make(map[string][]*rpcConn)}
	cleanup = append(cleanup, c.rpc.close)

	c.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  newStreamLayer(c.mux, c.serverAt),
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hclogger,
	})
	cleanup = append(cleanup, func() { c.trans.Close() })

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hclogger
	// NewRaft restores the newest local snapshot before it returns: the FSM is told so
	// (RestoreStartup), since the log that follows that snapshot is replayed after it.
	store := &indexingStore{SnapshotStore: c.snaps}
	c.fsm.store = store
	c.fsm.refused = c.quarantineSnapshot
	c.fsm.starting.Store(true)
	c.raft, err = raft.NewRaft(rc, c.fsm, c.logs, c.store, store, noPipeline{c.trans})
	if err != nil && c.fellBackToLog.Load() {
		// The FSM refused the only snapshot and it was taken out of the store, the log
		// beginning at index 1: Raft gave up on the snapshots it had listed, and starts from
		// the log now.
		c.raft, err = raft.NewRaft(rc, c.fsm, c.logs, c.store, store, noPipeline{c.trans})
	}
	c.fsm.starting.Store(false)
	if err != nil {
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	cleanup = append(cleanup, func() { _ = c.raft.Shutdown().Error() })
	c.started.Store(c.raft)
	close(c.startedCh)

	c.gossip, err = newGossip(c)
	if err != nil {
		return nil, err
	}
	c.gossip.setMeta(func(m *nodeMeta) { m.HasState = hasState })
	cleanup = append(cleanup, func() { _ = c.gossip.list.Shutdown() })

	if cfg.Registerer != nil {
		c.metrics = newCollector(c)
		if err := cfg.Registerer.Register(c.metrics); err != nil {
			return nil, fmt.Errorf("cluster: register metrics: %w", err)
		}
	}

	c.startObserver()
	c.goLoop(c.leaderLoop)
	c.goLoop(c.sweepLoop)
	if len(cfg.Join) > 0 {
		c.goLoop(c.joinLoop)
	}
	if cfg.BootstrapExpect > 0 && !hasState {
		c.goLoop(c.bootstrapLoop)
	} else if hasState {
		logger.Info("existing raft state found; not bootstrapping")
	}
	logger.Info("cluster node started", "raft-addr", cfg.raftAdvertise(),
		"gossip-addr", cfg.gossipAdvertise(), "bootstrap-expect", cfg.BootstrapExpect)
	return c, nil
}

func (c *Cluster) goLoop(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

func (c *Cluster) isShutdown() bool {
	select {
	case <-c.shutdownCh:
		return true
	default:
		return false
	}
}

// Shutdown stops the node without leaving the cluster (the others see it
// fail, and it rejoins when restarted with the same DataDir). The first
// call returns the error of stopping, if any; every later call returns
// ErrShutdown.
func (c *Cluster) Shutdown() error {
	err := ErrShutdown
	c.shutdownOnce.Do(func() {
		err = c.shutdown()
	})
	return err
}

func (c *Cluster) shutdown() error {
	close(c.shutdownCh)
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	c.drainFSM(2 * time.Second)
	note(c.raft.Shutdown().Error())
	note(c.trans.Close())
	c.rpc.close()
	c.mux.close()
	note(c.gossip.list.Shutdown())
	c.wg.Wait()
	if !waitGroupWithin(&c.futures, 5*time.Second) {
		c.logger.Error("Raft futures left unresolved at shutdown: hashicorp/raft stops its FSM loop without answering the committed entries it has not applied; their waiters are abandoned")
	}
	if c.metrics != nil {
		c.cfg.Registerer.Unregister(c.metrics)
	}
	note(c.store.Close())
	c.logger.Info("cluster node stopped")
	c.logClosed.Store(true)
	if first != nil {
		return fmt.Errorf("cluster: shutdown: %w", first)
	}
	return nil
}

// isMember reports whether id is a server (of any suffrage) in the latest
// Raft configuration, and whether that configuration is empty (a node not
// yet bootstrapped or joined).
func (c *Cluster) isMember(id string) (member, empty bool) {
	r := c.started.Load()
	if r == nil {
		return false, true
	}
	servers := r.GetConfiguration().Configuration().Servers
	for _, s := range servers {
		if string(s.ID) == id {
			return true, false
		}
	}
	return false, len(servers) == 0
}

// admitPeer decides whether peer, whose certificate names a node of this
// node's plane (the TLS handshake checked that), may open a connection for
// proto: only nodes of the current configuration may, for either protocol
// (admitRaft says which for Raft streams). A certificate of the region alone
// is not membership: a removed node, or any holder of a node certificate of
// the region, could otherwise send Raft appends and votes or drive the
// leader's cluster RPC.
func (c *Cluster) admitPeer(peerID string, proto byte) error {
	if proto == protoRaft {
		return c.admitRaft(peerID)
	}
	if member, _ := c.isMember(peerID); member {
		return nil
	}
	return fmt.Errorf("%w: %s is not in this node's Raft configuration (add it with krypton join at the leader)", ErrRejected, peerID)
}

// admitRaft decides whether peerID may send Raft messages to this node now.
// It is asked when a Raft stream opens and again on every read of it
// (muxConn.Read), so it is the current configuration that decides, not the
// one of the moment the stream opened. Until NewRaft has loaded the
// configuration it waits (a stream opened while the node starts is judged
// by the configuration it starts with). Admitted:
//   - a node of the latest configuration;
//   - any node of the plane while the configuration is empty (not yet
//     bootstrapped or joined), so that the leader that has just added this
//     node can reach it;
//   - while this node is not in its own configuration yet (a node that was
//     just added replays the log up to the entry adding it, and the entries
//     before it may not name the current leader: a node added later that now
//     leads), the leader it follows, which it can only have come to follow
//     through a message admitted here.
//
// Anyone else is refused, and their streams are closed (here on the next
// read, and by sweepLoop when this node observes the change).
func (c *Cluster) admitRaft(peerID string) error {
	r := c.waitStarted()
	if r == nil {
		return ErrShutdown
	}
	if raftAdmits(r, c.cfg.NodeID, peerID) {
		return nil
	}
	return fmt.Errorf("%w: %s is not in this node's Raft configuration (add it with krypton join at the leader)", ErrRejected, peerID)
}

// raftAdmits is admitRaft's rule against r's latest configuration.
func raftAdmits(r *raft.Raft, self, peerID string) bool {
	servers := r.GetConfiguration().Configuration().Servers
	if len(servers) == 0 {
		return true
	}
	selfIn := false
	for _, s := range servers {
		switch string(s.ID) {
		case peerID:
			return true
		case self:
			selfIn = true
		}
	}
	if !selfIn {
		_, leader := r.LeaderWithID()
		return leader != "" && string(leader) == peerID
	}
	return false
}

// waitStarted returns raft once NewRaft has returned, or nil if the node is
// shut down (or failed to start) first.
func (c *Cluster) waitStarted() *raft.Raft {
	if r := c.started.Load(); r != nil {
		return r
	}
	select {
	case <-c.startedCh:
		return c.started.Load()
	case <-c.mux.shutdownCh:
		return nil
	}
}

// sweepInterval is how often sweepLoop looks for streams to end.
const sweepInterval = 100 * time.Millisecond

// sweepLoop ends, on every node (followers too), the Raft streams to and
// from nodes admitRaft no longer admits: a removed node's stream is refused
// at its next message anyway (muxConn.Read), but must not stay open either.
// The leader that removes a node also ends its streams at once (dropPeer).
// hashicorp/raft tells followers of no configuration change (and its
// GetConfiguration future does not carry the index), hence a poll: each
// interval, admitRaft's rule for each open Raft stream, about a microsecond
// each.
func (c *Cluster) sweepLoop() {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		dropped := c.mux.dropUnless(func(peer string) bool { return raftAdmits(c.raft, c.cfg.NodeID, peer) })
		for _, p := range dropped {
			c.logger.Warn("closed a Raft stream of a node not in the configuration", "peer", p)
		}
		select {
		case <-c.shutdownCh:
			return
		case <-t.C:
		}
	}
}

// serverAt returns the ID of the server at addr in the latest Raft
// configuration, or "" (before Raft starts, or for an address it does not
// hold).
func (c *Cluster) serverAt(addr raft.ServerAddress) string {
	r := c.started.Load()
	if r == nil {
		return ""
	}
	for _, s := range r.GetConfiguration().Configuration().Servers {
		if s.Address == addr {
			return string(s.ID)
		}
	}
	return ""
}

// NodeID returns this node's id.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// RaftAddr returns the address other nodes reach this node's Raft and RPC
// port on.
func (c *Cluster) RaftAddr() string { return c.cfg.raftAdvertise() }

// Members returns the nodes gossip knows, sorted by id, including dead and
// departed ones it has seen.
func (c *Cluster) Members() ([]Member, error) {
	if c.isShutdown() {
		return nil, ErrShutdown
	}
	m, _ := c.gossip.members()
	for i := range m {
		_, m[i].Removed = c.fsm.tombstone(m[i].ID)
	}
	return m, nil
}

// drainFSM gives the FSM up to d to apply every entry already committed, before Raft is shut
// down. hashicorp/raft's FSM loop returns at shutdown without applying, or answering, the
// committed entries still queued for it (raft v1.7.3 fsm.go, runFSM), so the future of an entry
// this node proposed would never resolve and its waiter would block for ever (a test's cleanup,
// or a process's exit, hung on it). New proposals are refused once shutdownCh is closed
// (applyLocal, proposeMembership), so only entries already in flight are waited for.
func (c *Cluster) drainFSM(d time.Duration) {
	deadline := time.Now().Add(d)
	for c.raft.AppliedIndex() < c.raft.CommitIndex() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // a bounded poll: Raft offers no signal for "applied up to"
	}
}

// waitGroupWithin waits for wg at most d and reports whether it finished.
func waitGroupWithin(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}
