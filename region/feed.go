package region

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The governance feed (DESIGN.md, "Governance feed"): the region's leader follows the governance
// log from the cursor stored in its own state machine, turns each event into a region command,
// and proposes it as an fsm.ApplyGovernanceEvent chained to the cursor it read. Once everything a
// stream message covers is applied and fenced, it reports the message's head cursor. This file
// handles the stream; feedevents.go turns events into commands.

// Audit kinds of the governance events a region applies.
const (
	auditGovAnchorDelete = "tenant.anchor-delete"
	auditGovAnchorSet    = "tenant.anchor-set"
	auditGovPolicy       = "policy.set"
	auditQuotaSet        = "quota.set"
	auditGovTenant       = "tenant.create"
	auditGovService      = audit.KindKeyCreate
	auditGovResync       = "tenant.resync"
	auditGovSetRegions   = "tenant.set-regions"
	auditGovRemoveTenant = "tenant.remove"
	auditGovRefused      = "governance.event-refused"
	auditPolicyDenied    = "policy.deny"
)

// errResync ends a feed session so that the next one re-reads the applied cursor.
var errResync = errors.New("region: governance feed out of step with the applied cursor; resyncing")

// feedMetrics are the feed's collectors; labels are event kinds and outcomes only.
type feedMetrics struct {
	connected prometheus.Gauge
	cursor    prometheus.Gauge
	head      prometheus.Gauge
	reported  prometheus.Gauge
	events    *prometheus.CounterVec
	lag       prometheus.Gauge
}

func newFeedMetrics(reg prometheus.Registerer) *feedMetrics {
	m := &feedMetrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krypton_governance_feed_connected",
			Help: "1 while this node (as leader) holds an open governance stream.",
		}),
		cursor: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krypton_governance_feed_applied_cursor",
			Help: "The governance cursor this region has applied, as the feed last saw it.",
		}),
		head: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krypton_governance_feed_head_cursor",
			Help: "The head of the governance log in the last stream message.",
		}),
		reported: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krypton_governance_feed_reported_cursor",
			Help: "The last cursor this region reported to governance as applied and fenced.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_governance_events_total",
			Help: "Governance events this node proposed as leader, by kind and outcome (applied, refused, skipped).",
		}, []string{"kind", "outcome"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krypton_governance_feed_lag_seconds",
			Help: "Age of the newest governance event applied, at the time it was applied (governance's clock against this node's).",
		}),
	}
	reg.MustRegister(m.connected, m.cursor, m.head, m.reported, m.events, m.lag)
	return m
}

// feed runs the governance feed while this node leads.
type feed struct {
	n       *Node
	metrics *feedMetrics

	mu    sync.Mutex // guards conns
	conns map[string]*grpc.ClientConn

	// anchorWaits remembers since when an event has waited for an anchor that does not answer
	// (by cursor); only the feed goroutine touches it.
	anchorWaits map[uint64]time.Time
	// inventory is the digest of the key inventory last reported, inventoryAt the applied index
	// it was computed at; only the feed goroutine touches them.
	inventory   [32]byte
	inventoryAt uint64
	// source is the governance node the current session follows, for the audit records of the
	// events it applies; only the feed goroutine touches it.
	source string
	// published is the fingerprint of each shared home tenant as last published to governance,
	// publishedAt the applied index at the last complete pass, sealed the L2 versions sealed for
	// the tenant's other regions (shared.go); only the feed goroutine touches them.
	published   map[string][32]byte
	publishedAt uint64
	sealed      map[sealKey][]byte
	// floored names the shared tenants whose own key versions this region reported this session
	// (migrate.go); only the feed goroutine touches it.
	floored map[string]bool
}

func newFeed(n *Node) *feed {
	return &feed{n: n, metrics: newFeedMetrics(n.reg), conns: map[string]*grpc.ClientConn{}, anchorWaits: map[uint64]time.Time{},
		published: map[string][32]byte{}, sealed: map[sealKey][]byte{}, floored: map[string]bool{}}
}

// loop starts a feed session runner whenever this node becomes leader and stops it when it loses
// leadership or the node stops. It owns every goroutine it starts.
func (f *feed) loop() {
	defer f.n.wg.Done()
	defer f.closeConns()
	kick := make(chan struct{}, 1)
	cancelWatch := f.n.cl.OnLeaderChange(func(cluster.LeaderChange) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	defer cancelWatch()
	var running *feedRun
	stop := func() {
		if running != nil {
			running.cancel()
			<-running.done
			running = nil
			f.metrics.connected.Set(0)
		}
	}
	defer stop()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		leader := f.n.cl.IsLeader()
		switch {
		case leader && running == nil:
			running = f.start()
			f.n.log.Info("governance feed started", "governance", f.n.cfg.Governance)
		case !leader && running != nil:
			stop()
			f.n.log.Info("governance feed stopped: no longer the leader")
		}
		select {
		case <-f.n.stop:
			return
		case <-kick:
		case <-t.C:
		}
	}
}

// feedRun is one term's feed: run in a goroutine until cancel, then done is closed.
type feedRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (f *feed) start() *feedRun {
	ctx, cancel := context.WithCancel(context.Background())
	r := &feedRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		f.run(ctx)
	}()
	return r
}

// run keeps a session open, reconnecting with backoff, until ctx ends.
func (f *feed) run(ctx context.Context) {
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	addrs := f.n.cfg.Governance
	for i := 0; ctx.Err() == nil; i++ {
		addr := addrs[i%len(addrs)]
		progressed, err := f.session(ctx, addr)
		f.metrics.connected.Set(0)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			backoff = minBackoff
		}
		f.n.log.Warn("governance feed session ended; reconnecting", "governance", addr, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (f *feed) client(ctx context.Context, addr string) (kv1.GovernanceServiceClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	conn := f.conns[addr]
	if conn == nil {
		var err error
		conn, err = transport.Dial(ctx, addr, transport.ClientConfig{Source: f.n.cfg.CertSource,
			// Only governance feeds a region: a region node, gateway or anything else answering at
			// a governance address is refused at the handshake.
			Server: pki.Identity{Kind: pki.KindGovernance}, TracerProvider: f.n.cfg.TracerProvider})
		if err != nil {
			return nil, err
		}
		f.conns[addr] = conn
	}
	return kv1.NewGovernanceServiceClient(conn), nil
}

// dropConn forgets a connection after a failed session, so that the next one dials afresh.
func (f *feed) dropConn(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.conns[addr]; c != nil {
		c.Close()
		delete(f.conns, addr)
	}
}

func (f *feed) closeConns() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
}

// session follows one stream until it fails. progressed says whether it applied or reported
// anything (the backoff then starts over).
func (f *feed) session(ctx context.Context, addr string) (progressed bool, err error) {
	n := f.n
	// Everything committed before this node's term must be applied before the cursor is read,
	// and fenced before anything is reported: a previous leader may have applied events and died
	// before its fence.
	if err := n.cl.Barrier(ctx); err != nil {
		return false, fmt.Errorf("read barrier: %w", err)
	}
	// A restore (operator's, or a snapshot from a new leader) rewinds the applied cursor to the
	// snapshot's: the session must then end, so that the next one resumes from there and the
	// events after it apply again, rather than go on reporting the stream's head as applied.
	restores := n.restores.Load()
	f.source = addr
	// A new session (maybe a new term after another leader's): publish every shared tenant once.
	clear(f.published)
	clear(f.floored)
	f.publishedAt = 0
	cursor := n.state.GovernanceCursor()
	unfenced := n.state.AppliedIndex()
	f.metrics.cursor.Set(float64(cursor))

	client, err := f.client(ctx, addr)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchRevocations(sctx, &kv1.WatchRevocationsRequest{AfterCursor: cursor, Region: n.cfg.Region})
	if err != nil {
		f.dropConn(addr)
		return false, err
	}
	// Governance sends at least a heartbeat every 5 seconds: a stream silent for much longer is
	// dead in a way TCP has not noticed yet (keepalive takes longer).
	watchdog := time.AfterFunc(feedSilence, cancel)
	defer watchdog.Stop()
	first := true
	for {
		msg, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.OutOfRange {
				n.log.Error("this region has applied governance events beyond governance's head (was governance restored from an older backup?); an operator must decide", "applied-cursor", cursor, "err", err)
			}
			if ctx.Err() == nil {
				f.dropConn(addr)
			}
			return progressed, err
		}
		watchdog.Reset(feedSilence)
		f.metrics.connected.Set(1)
		f.metrics.head.Set(float64(msg.GetHeadCursor()))
		if n.restores.Load() != restores {
			f.inventory, f.inventoryAt = [32]byte{}, 0
			n.log.Info("the state was restored from a snapshot; the governance feed resumes from its cursor", "snapshot-cursor", n.state.GovernanceCursor(), "session-cursor", cursor)
			return progressed, errResync
		}
		for _, ev := range msg.GetEvents() {
			if ev.GetCursor() <= cursor {
				continue // a duplicate delivery: applied already
			}
			index, err := f.applyEvent(ctx, cursor, ev)
			if err != nil {
				return progressed, err
			}
			cursor = ev.GetCursor()
			unfenced = max(unfenced, index)
			progressed = true
			f.metrics.cursor.Set(float64(cursor))
		}
		// Report only what is applied and fenced: every voter has applied it, or can no longer
		// serve under a lease granted before it (DESIGN.md, "The revocation fence").
		if unfenced > 0 {
			if _, err := n.fence(ctx, unfenced); err != nil {
				return progressed, fmt.Errorf("fence: %w", err)
			}
			unfenced = 0
		}
		// Nor report past a restore that landed while this message was applied: what it covers
		// may no longer be in the state.
		if n.restores.Load() != restores {
			f.inventory, f.inventoryAt = [32]byte{}, 0
			return progressed, errResync
		}
		req := &kv1.ReportCursorRequest{Region: n.cfg.Region, AppliedCursor: msg.GetHeadCursor()}
		// The Raft configuration goes with every report: governance accepts reports only from the
		// voters of the latest configuration it learned, so a node removed from this region is
		// refused there once this report tells it so (governance/DESIGN.md, "Who may report").
		if req.ConfigurationIndex, req.Voters, err = n.cl.Configuration(); err != nil {
			return progressed, fmt.Errorf("raft configuration: %w", err)
		}
		// Governance refuses a configuration index beyond the commit index; the index
		// Configuration returns is the commit index itself (a position at or after the
		// configuration's entry, cluster.Cluster.Configuration).
		req.CommitIndex = req.ConfigurationIndex
		f.addInventory(req, first)
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = client.ReportCursor(rctx, req)
		rcancel()
		if err != nil {
			if req.HasInventory {
				f.inventory, f.inventoryAt = [32]byte{}, 0 // send it again next time
			}
			return progressed, fmt.Errorf("report cursor: %w", err)
		}
		first = false
		progressed = true
		f.metrics.reported.Set(float64(msg.GetHeadCursor()))
		f.publishShared(ctx, client)
	}
}

// addInventory attaches the region's key inventory (versions not revoked) to a report when it
// changed since the last report, or on the first report of a stream.
func (f *feed) addInventory(req *kv1.ReportCursorRequest, first bool) {
	// Walking the state on every heartbeat would cost O(key versions) each time: only look when
	// something was applied since the last look.
	applied := f.n.state.AppliedIndex()
	if !first && applied == f.inventoryAt {
		return
	}
	f.inventoryAt = applied
	var refs []*kv1.KeyRef
	h := sha256.New()
	var buf [4]byte
	for _, t := range f.n.state.ListTenants() {
		if t.Status == fsm.StatusRevoked {
			continue
		}
		svcs, _ := f.n.state.ListServices(t.Name)
		for _, s := range svcs {
			if s.Status == fsm.StatusRevoked {
				continue
			}
			versions, _ := f.n.state.ListKeyVersions(t.Name, s.Name)
			for _, kv := range versions {
				if kv.Status == fsm.StatusRevoked || len(refs) >= 100000 {
					continue
				}
				refs = append(refs, &kv1.KeyRef{Tenant: t.Name, Service: s.Name, Version: kv.Version})
				h.Write([]byte(t.Name + "\x00" + s.Name + "\x00"))
				binary.BigEndian.PutUint32(buf[:], kv.Version)
				h.Write(buf[:])
			}
		}
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if first || sum != f.inventory {
		req.Inventory, req.HasInventory = refs, true
		f.inventory = sum
	}
}

// applyEvent prepares one event and proposes it chained to cursor. It returns the index that
// applied it, or an error that ends the session (the next one resyncs and retries the event).
func (f *feed) applyEvent(ctx context.Context, cursor uint64, ev *kv1.RevocationEvent) (uint64, error) {
	n := f.n
	cmd, refused, err := f.prepare(ctx, ev)
	if err != nil {
		return 0, err
	}
	delete(f.anchorWaits, ev.GetCursor())
	g := fsm.ApplyGovernanceEvent{Cursor: ev.GetCursor(), After: cursor, EventID: ev.GetEventId(), Event: cmd, Refused: refused}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kind := eventKindName(ev.GetKind())
	res, err := n.applyAs(actx, "", g, f.origin(ev, kind))
	switch {
	case errors.Is(err, fsm.ErrCursorMismatch):
		return 0, errResync
	case err != nil:
		return 0, fmt.Errorf("applying governance event %d: %w", ev.GetCursor(), err)
	case res.Skipped:
		f.metrics.events.WithLabelValues(kind, "skipped").Inc()
		return 0, errResync
	}
	if t := ev.GetTime(); t != nil {
		f.metrics.lag.Set(time.Since(t.AsTime()).Seconds())
	}
	f.afterApply(ev, res)
	return res.Index, nil
}

// origin is the fsm.Origin of a governance event's entry: what every node's audit record of it
// carries beyond the command (auditapply.go).
func (f *feed) origin(ev *kv1.RevocationEvent, kind string) fsm.Origin {
	d := map[string]string{"event": kind, "governance": originText(f.source)}
	if r := ev.GetReason(); r != "" {
		d["reason"] = originText(r)
	}
	if ev.GetKind() == kv1.EventKind_EVENT_KIND_SET_ANCHOR {
		// The owner key whose consent governance verified.
		d["owner-key"] = "(none)"
		if fp := ev.GetOwnerKeyFingerprint(); owner.ValidFingerprint(fp) {
			d["owner-key"] = fp
		}
	}
	return fsm.Origin{Kind: fsm.OriginFeed, Actor: "governance", Node: f.n.cfg.NodeID, Detail: d}
}

// afterApply logs and counts an applied event. Its audit record is written from the log, on every
// node (auditapply.go).
func (f *feed) afterApply(ev *kv1.RevocationEvent, res fsm.Result) {
	n := f.n
	kind := eventKindName(ev.GetKind())
	tenant := validOrEmpty(ev.GetTarget().GetTenant())
	if res.EventErr != nil {
		f.metrics.events.WithLabelValues(kind, "refused").Inc()
		n.log.Warn("governance event refused in this region", "cursor", ev.GetCursor(), "kind", kind, "tenant", tenant, "err", res.EventErr)
		return
	}
	f.metrics.events.WithLabelValues(kind, "applied").Inc()
	n.log.Info("governance event applied", "cursor", ev.GetCursor(), "kind", kind, "tenant", tenant, "service", validOrEmpty(ev.GetTarget().GetService()), "index", res.Index)
}

// feedSilence is how long a stream may go without a message before the feed gives up on it.
const feedSilence = 20 * time.Second

// recordAs writes an audit event whose Actor the caller set.
func (n *Node) recordAs(e audit.Event) {
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "err", err)
	}
}
