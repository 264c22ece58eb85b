package region

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// The governance feed (DESIGN.md, "Governance feed"): the region's leader follows the governance
// log from the cursor stored in its own state machine, turns each event into a region command,
// and proposes it as an fsm.ApplyGovernanceEvent chained to the cursor it read. Once everything a
// stream message covers is applied and fenced, it reports the message's head cursor.

// Audit kinds of the governance events a region applies.
const (
	auditGovRevoke       = audit.KindKeyRevoke
	auditGovLock         = audit.KindTenantLock
	auditGovUnlock       = audit.KindTenantUnlock
	auditGovAnchorDelete = "tenant.anchor-delete"
	auditGovAnchorSet    = "tenant.anchor-set"
	auditGovPolicy       = "policy.set"
	auditGovTenant       = "tenant.create"
	auditGovService      = audit.KindKeyCreate
	auditGovResync       = "tenant.resync"
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
}

func newFeed(n *Node) *feed {
	return &feed{n: n, metrics: newFeedMetrics(n.reg), conns: map[string]*grpc.ClientConn{}, anchorWaits: map[uint64]time.Time{}}
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
		conn, err = transport.Dial(ctx, addr, transport.ClientConfig{Roots: f.n.cfg.Roots, Certificate: f.n.cfg.Certificate,
			// Only governance feeds a region: a region node, gateway or anything else answering at
			// a governance address is refused at the handshake.
			Server: pki.Identity{Kind: pki.KindGovernance}})
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
	// The anchor a SET_ANCHOR replaces, for the audit record ("" if deleted or no tenant).
	oldAnchor := ""
	if t, err := n.state.Tenant(ev.GetTarget().GetTenant()); err == nil {
		oldAnchor = t.Anchor
	}
	cmd, refused, err := f.prepare(ctx, ev)
	if err != nil {
		return 0, err
	}
	delete(f.anchorWaits, ev.GetCursor())
	g := fsm.ApplyGovernanceEvent{Cursor: ev.GetCursor(), After: cursor, EventID: ev.GetEventId(), Event: cmd, Refused: refused}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := n.apply(actx, "", g)
	kind := eventKindName(ev.GetKind())
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
	f.afterApply(ctx, ev, cmd, res, oldAnchor)
	return res.Index, nil
}

// afterApply logs, audits and counts an applied event, and keeps a new L3 in the keyring.
func (f *feed) afterApply(ctx context.Context, ev *kv1.RevocationEvent, cmd fsm.Command, res fsm.Result, oldAnchor string) {
	n := f.n
	kind := eventKindName(ev.GetKind())
	target := ev.GetTarget()
	e := audit.Event{
		Actor:   "governance",
		Tenant:  validOrEmpty(target.GetTenant()),
		Service: validOrEmpty(target.GetService()),
		Version: target.GetVersion(),
		Reason:  ev.GetReason(),
		Detail: map[string]string{"cursor": fmt.Sprint(ev.GetCursor()), "event-id": validOrEmpty(ev.GetEventId()), "event": kind,
			"origin": originFeed, "governance": f.source},
	}
	if res.EventErr != nil {
		f.metrics.events.WithLabelValues(kind, "refused").Inc()
		n.log.Warn("governance event refused in this region", "cursor", ev.GetCursor(), "kind", kind, "tenant", e.Tenant, "err", res.EventErr)
		e.Kind = auditGovRefused
		e.Code = status.Code(transport.ToStatus(res.EventErr)).String()
		e.Detail["refusal"] = res.EventErr.Error()
		n.recordAs(e)
		return
	}
	f.metrics.events.WithLabelValues(kind, "applied").Inc()
	n.log.Info("governance event applied", "cursor", ev.GetCursor(), "kind", kind, "tenant", e.Tenant, "service", e.Service, "index", res.Index)
	switch c := cmd.(type) {
	case fsm.RevokeTenant, fsm.RevokeService, fsm.RevokeKeyVersion:
		e.Kind = auditGovRevoke
	case fsm.LockTenant:
		e.Kind = auditGovLock
		e.Reason = c.Reason
	case fsm.UnlockTenant:
		e.Kind = auditGovUnlock
	case fsm.DeleteAnchor:
		e.Kind = auditGovAnchorDelete
		e.Detail["kill-switch"] = "on"
	case fsm.SetAnchor:
		e.Kind = auditGovAnchorSet
		// Old and new root of trust, and the owner key whose consent governance verified.
		e.Detail["anchor"] = anchor.Redact(c.Anchor)
		e.Detail["old-anchor"] = anchor.Redact(oldAnchor)
		if oldAnchor == "" {
			e.Detail["old-anchor"] = "(deleted: this lifts the kill switch)"
		}
		if fp := ev.GetOwnerKeyFingerprint(); owner.ValidFingerprint(fp) {
			e.Detail["owner-key"] = fp
		} else {
			e.Detail["owner-key"] = "(none)"
		}
		if len(c.Resealed) > 0 {
			e.Detail["resealed"] = fmt.Sprint(len(c.Resealed))
		}
	case fsm.SetPolicy:
		e.Kind = auditGovPolicy
		e.Detail["revision"] = fmt.Sprint(c.Policy.Revision)
		e.Detail["rules"] = fmt.Sprint(len(c.Policy.Rules))
	case fsm.CreateTenant:
		e.Kind = auditGovTenant
		e.Version = 1
	case fsm.CreateService:
		e.Kind = auditGovService
		e.Version = 1
	case fsm.ResyncTenant:
		e.Kind = auditGovResync
		e.Detail["tenant-created"] = fmt.Sprint(c.Create != nil)
		e.Detail["services-created"] = fmt.Sprint(len(c.Services))
		e.Detail["policy-set"] = fmt.Sprint(c.Policy != nil)
		e.Detail["locked"] = fmt.Sprint(c.Lock != "")
	default:
		e.Kind = "governance." + kind
	}
	n.recordAs(e)
}

// feedSilence is how long a stream may go without a message before the feed gives up on it.
const feedSilence = 20 * time.Second

// eventDeadline bounds one anchor or key operation while an event is prepared.
const eventDeadline = 10 * time.Second

// prepare turns an event into the command to propose, or into a refusal decided here (refused
// set, cmd still naming the event's subject for the log). An error means "not now": the event
// is retried by the next session.
func (f *feed) prepare(ctx context.Context, ev *kv1.RevocationEvent) (cmd fsm.Command, refused error, err error) {
	n := f.n
	target := ev.GetTarget()
	tenant, service := target.GetTenant(), target.GetService()
	reason := ev.GetReason()
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	switch ev.GetKind() {
	case kv1.EventKind_EVENT_KIND_REVOKE_TENANT:
		return fsm.RevokeTenant{Tenant: tenant, Reason: reason}, nil, nil
	case kv1.EventKind_EVENT_KIND_REVOKE_SERVICE:
		return fsm.RevokeService{Tenant: tenant, Service: service, Reason: reason}, nil, nil
	case kv1.EventKind_EVENT_KIND_REVOKE_VERSION:
		return fsm.RevokeKeyVersion{Tenant: tenant, Service: service, Version: target.GetVersion(), Reason: reason}, nil, nil
	case kv1.EventKind_EVENT_KIND_DELETE_ANCHOR:
		return fsm.DeleteAnchor{Tenant: tenant, Reason: reason}, nil, nil
	case kv1.EventKind_EVENT_KIND_LOCK_TENANT:
		if reason == "" {
			reason = "locked by governance"
		}
		return fsm.LockTenant{Tenant: tenant, Reason: governanceLockPrefix + reason}, nil, nil
	case kv1.EventKind_EVENT_KIND_UNLOCK_TENANT:
		return f.prepareUnlock(ctx, tenant)
	case kv1.EventKind_EVENT_KIND_SET_POLICY:
		return fsm.SetPolicy{Tenant: tenant, Policy: policyFromProto(ev.GetPolicy())}, nil, nil
	case kv1.EventKind_EVENT_KIND_SET_ANCHOR:
		return f.prepareSetAnchor(ctx, ev, tenant, ev.GetAnchorUri())
	case kv1.EventKind_EVENT_KIND_CREATE_TENANT:
		return f.prepareCreateTenant(ctx, ev, tenant, ev.GetAnchorUri())
	case kv1.EventKind_EVENT_KIND_CREATE_SERVICE:
		return f.prepareCreateService(ctx, ev, tenant, service)
	case kv1.EventKind_EVENT_KIND_RESYNC_TENANT:
		return f.prepareResync(ctx, ev, tenant)
	}
	// A kind this node does not know may be a revocation: stop here, loudly, rather than skip it.
	n.log.Error("governance event of an unknown kind; this node must be upgraded before the feed can go on", "cursor", ev.GetCursor(), "kind", int32(ev.GetKind()))
	return nil, nil, fmt.Errorf("region: governance event %d has unknown kind %d", ev.GetCursor(), int32(ev.GetKind()))
}

// anchorTrouble decides what to do when an anchor failed while preparing an event: a definite
// failure refuses the event (with definite); a transient one retries it, until the event has
// waited Config.GovernanceAnchorWait, after which it is refused as ErrAnchorUnavailable so that
// a customer's flaky KMS cannot hold back every later revocation of the region.
func (f *feed) anchorTrouble(ev *kv1.RevocationEvent, tenant string, err error, definite error) (refused error, retry error) {
	if !transientAnchorErr(err) {
		return definite, nil
	}
	first, ok := f.anchorWaits[ev.GetCursor()]
	if !ok {
		first = time.Now()
		f.anchorWaits[ev.GetCursor()] = first
	}
	if time.Since(first) < f.n.cfg.GovernanceAnchorWait {
		return nil, fmt.Errorf("region: anchor of tenant %s unavailable while applying governance event %d: %w", tenant, ev.GetCursor(), err)
	}
	return &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: validOrEmpty(tenant)}, nil
}

// transientAnchorErr reports whether an anchor failure may pass by itself.
func transientAnchorErr(err error) bool {
	if anchor.IsDenied(err) {
		return false
	}
	// wrap.ErrLockedMemory: this node's RLIMIT_MEMLOCK is full for now, which says nothing of the
	// anchor and must not refuse the event for good.
	return anchor.IsTransient(err) || errors.Is(err, anchor.ErrUnavailable) || errors.Is(err, anchor.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrShutdown) || errors.Is(err, wrap.ErrLockedMemory)
}

func (f *feed) prepareUnlock(ctx context.Context, tenant string) (fsm.Command, error, error) {
	t, err := f.n.state.Tenant(tenant)
	if err != nil || t.Status != fsm.StatusLocked || t.AnchorDeleted {
		// Nothing to check: the state machine refuses or ignores it.
		return fsm.UnlockTenant{Tenant: tenant}, nil, nil
	}
	actx, cancel := context.WithTimeout(ctx, eventDeadline)
	defer cancel()
	if err := f.n.checkAnchor(actx, t.Anchor); err != nil {
		f.n.countAnchor("check", err)
		// Governance lifted its lock, but the root key does not answer: hand the tenant to the L1
		// check, which lifts this lockout as soon as the key answers, rather than stall the feed.
		return fsm.LockTenant{Tenant: tenant, Reason: lockPrefix + "unlocked by governance; waiting for the root key to answer"}, nil, nil
	}
	return fsm.UnlockTenant{Tenant: tenant}, nil, nil
}

// prepareSetAnchor checks the new anchor. If it opens every sealed L2 version as it is (the same
// L1 key, maybe under a new URI), the pointer just moves; this is the only way to lift a deleted
// anchor. Otherwise a tenant whose anchor is in place is re-sealed under the new one, as
// RekeyTenant does; a tenant whose anchor was deleted cannot be, and the event is refused
// (ErrAnchorMismatch): it stays locked out (fsm/DESIGN.md, "The kill switch is reversible").
func (f *feed) prepareSetAnchor(ctx context.Context, ev *kv1.RevocationEvent, tenant, uri string) (fsm.Command, error, error) {
	n := f.n
	cmd := fsm.SetAnchor{Tenant: tenant, Anchor: uri}
	t, err := n.state.Tenant(tenant)
	if err != nil {
		return cmd, err, nil
	}
	if t.Status == fsm.StatusRevoked {
		return cmd, &fsm.Error{Err: fsm.ErrRevoked, Tenant: tenant}, nil
	}
	actx, cancel := context.WithTimeout(ctx, eventDeadline)
	defer cancel()
	p, err := n.anchors.get(actx, uri)
	if err == nil {
		err = f.opensAll(actx, p, t)
	}
	if err == nil {
		return cmd, nil, nil
	}
	opensErr := err
	if t.AnchorDeleted {
		n.log.Warn("governance set an anchor that does not open the tenant's sealed keys; the tenant stays locked out", "tenant", tenant, "err", opensErr)
		refused, retry := f.anchorTrouble(ev, tenant, opensErr, &fsm.Error{Err: fsm.ErrAnchorMismatch, Tenant: tenant})
		return cmd, refused, retry
	}
	// A new key: reseal every L2 version under it, unsealed through the anchor in place.
	p, err = n.probedAnchor(actx, uri)
	if err != nil {
		refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorMismatch, Tenant: tenant})
		return cmd, refused, retry
	}
	for i := range t.L2 {
		l2, err := n.tenantKey(actx, tenant, uint32(i+1))
		if err != nil {
			refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: tenant})
			return cmd, refused, retry
		}
		sealed, err := anchor.SealTenantKey(actx, p, l2, n.cfg.Region)
		n.countAnchor("seal", err)
		if err != nil {
			refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorMismatch, Tenant: tenant})
			return cmd, refused, retry
		}
		cmd.Resealed = append(cmd.Resealed, sealed)
	}
	return cmd, nil, nil
}

// opensAll checks that p opens every sealed L2 version of t.
func (f *feed) opensAll(ctx context.Context, p anchor.Provider, t fsm.Tenant) error {
	for _, l2 := range t.L2 {
		k, err := anchor.UnsealTenantKey(ctx, p, l2.Sealed, anchor.Context{Region: f.n.cfg.Region, Tenant: t.Name, Version: l2.Version})
		f.n.countAnchor("unseal", err)
		if err != nil {
			return err
		}
		k.Destroy()
	}
	return nil
}

func (f *feed) prepareCreateTenant(ctx context.Context, ev *kv1.RevocationEvent, tenant, uri string) (fsm.Command, error, error) {
	n := f.n
	cmd := fsm.CreateTenant{Tenant: tenant, Anchor: uri}
	if !validName(tenant) {
		return cmd, &fsm.Error{Err: fsm.ErrInvalidName, Field: "tenant"}, nil
	}
	if _, err := n.state.Tenant(tenant); err == nil {
		return cmd, &fsm.Error{Err: fsm.ErrTenantExists, Tenant: tenant}, nil
	}
	actx, cancel := context.WithTimeout(ctx, eventDeadline)
	defer cancel()
	l2, sealed, refused, retry := f.newSealedTenantKey(actx, ev, tenant, uri)
	if l2 == nil {
		return cmd, refused, retry
	}
	l2.Destroy() // unsealed again on first use, through the anchor
	cmd.SealedL2 = sealed
	return cmd, nil, nil
}

// newSealedTenantKey makes a tenant's first L2 and seals it through the anchor at uri (probed
// first), as CREATE_TENANT and the RESYNC_TENANT of a missing tenant both do. On success the
// caller destroys l2; otherwise l2 is nil and refused or retry says why, as anchorTrouble does.
func (f *feed) newSealedTenantKey(actx context.Context, ev *kv1.RevocationEvent, tenant, uri string) (l2 *wrap.TenantKey, sealed []byte, refused, retry error) {
	n := f.n
	p, err := n.probedAnchor(actx, uri)
	if err != nil {
		refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: tenant})
		return nil, nil, refused, retry
	}
	l2, err = wrap.NewTenantKey(wrap.KeyID{Tenant: tenant, Version: 1})
	if err != nil {
		return nil, nil, nil, err
	}
	sealed, err = anchor.SealTenantKey(actx, p, l2, n.cfg.Region)
	n.countAnchor("seal", err)
	if err != nil {
		l2.Destroy()
		refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: tenant})
		return nil, nil, refused, retry
	}
	return l2, sealed, nil, nil
}

func (f *feed) prepareCreateService(ctx context.Context, ev *kv1.RevocationEvent, tenant, service string) (fsm.Command, error, error) {
	n := f.n
	cmd := fsm.CreateService{Tenant: tenant, Service: service}
	if !validName(tenant) || !validName(service) {
		return cmd, &fsm.Error{Err: fsm.ErrInvalidName, Field: "service"}, nil
	}
	t, err := n.state.Tenant(tenant)
	switch {
	case err != nil:
		return cmd, err, nil
	case t.Status == fsm.StatusRevoked:
		return cmd, &fsm.Error{Err: fsm.ErrRevoked, Tenant: tenant}, nil
	case t.AnchorDeleted:
		return cmd, &fsm.Error{Err: fsm.ErrAnchorDeleted, Tenant: tenant}, nil
	case t.Status == fsm.StatusLocked:
		return cmd, &fsm.Error{Err: fsm.ErrLocked, Tenant: tenant}, nil
	}
	if _, err := n.state.Service(tenant, service); err == nil {
		return cmd, &fsm.Error{Err: fsm.ErrServiceExists, Tenant: tenant, Service: service}, nil
	}
	actx, cancel := context.WithTimeout(ctx, eventDeadline)
	defer cancel()
	l2, err := n.tenantKey(actx, tenant, t.CurrentL2)
	if err != nil {
		refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: tenant})
		return cmd, refused, retry
	}
	l3, err := wrap.NewServiceKey(wrap.KeyID{Tenant: tenant, Service: service, Version: 1})
	if err != nil {
		return cmd, nil, err
	}
	defer l3.Destroy() // opened again from its sealed blob on first use
	sealed, err := l2.SealServiceKey(l3)
	if err != nil {
		return cmd, nil, err
	}
	cmd.SealedL3, cmd.SealedBy = sealed, t.CurrentL2
	return cmd, nil, nil
}

// resyncLockReason is the lock a RESYNC_TENANT applies for a tenant governance has locked (the
// event does not carry the original LOCK_TENANT's reason).
const resyncLockReason = governanceLockPrefix + "locked by governance (resync)"

// governanceLockPrefix starts the reason of every lock the feed applies for governance.
const governanceLockPrefix = "governance: "

// prepareResync compares a RESYNC_TENANT event with this region's state and proposes only what is
// missing here (DESIGN.md, "Resync"): the tenant, created as CREATE_TENANT would (L2 sealed
// through the anchor, with the same anchor-wait and refusal rules) together with every listed
// service, or, for a tenant present here, each listed service that is missing (L3 sealed under the
// current L2); the policy if this region's is older; governance's lock if governance has the
// tenant locked and this region does not hold that lock. What is present is left alone: a resync of a converged tenant
// proposes an empty command and creates no key version. It never revives or unlocks anything: a
// tenant revoked here is refused (ErrRevoked); a tenant whose anchor is deleted here (the kill
// switch, or a SET_ANCHOR this region refused) or that is locked here is refused if services are
// missing (ErrAnchorDeleted, ErrLocked: its L2 cannot be used to seal them), as CREATE_SERVICE is.
func (f *feed) prepareResync(ctx context.Context, ev *kv1.RevocationEvent, tenant string) (fsm.Command, error, error) {
	n := f.n
	cmd := fsm.ResyncTenant{Tenant: tenant}
	if !validName(tenant) {
		return cmd, &fsm.Error{Err: fsm.ErrInvalidName, Field: "tenant"}, nil
	}
	services := ev.GetServices()
	for _, s := range services {
		if !validName(s) {
			return cmd, &fsm.Error{Err: fsm.ErrInvalidName, Field: "service"}, nil
		}
	}
	var newPolicy *policy.Policy
	if p := ev.GetPolicy(); p.GetRevision() > 0 {
		pol := policyFromProto(p)
		newPolicy = &pol
	}
	actx, cancel := context.WithTimeout(ctx, eventDeadline)
	defer cancel()

	t, err := n.state.Tenant(tenant)
	if errors.Is(err, fsm.ErrTenantNotFound) {
		// Missing here: create it with every service, as CREATE_TENANT and CREATE_SERVICE would.
		uri := ev.GetAnchorUri()
		create := &fsm.CreateTenant{Tenant: tenant, Anchor: uri}
		l2, sealed, refused, retry := f.newSealedTenantKey(actx, ev, tenant, uri)
		if l2 == nil {
			return cmd, refused, retry
		}
		defer l2.Destroy() // it seals the services below; unsealed again on first use
		create.SealedL2 = sealed
		cmd.Create = create
		if cmd.Services, err = sealNewServices(l2, tenant, 1, services); err != nil {
			return cmd, nil, err
		}
		cmd.Policy = newPolicy
		if ev.GetLocked() {
			cmd.Lock = resyncLockReason
		}
		return cmd, nil, nil
	}
	if err != nil {
		return cmd, err, nil
	}
	if t.Status == fsm.StatusRevoked {
		return cmd, &fsm.Error{Err: fsm.ErrRevoked, Tenant: tenant}, nil
	}
	var missing []string
	for _, s := range services {
		if _, err := n.state.Service(tenant, s); errors.Is(err, fsm.ErrServiceNotFound) {
			missing = append(missing, s) // a service revoked here exists: it stays revoked
		}
	}
	if newPolicy != nil {
		if cur, err := n.state.Policy(tenant); err == nil && cur.Revision >= newPolicy.Revision {
			newPolicy = nil
		}
	}
	cmd.Policy = newPolicy
	// Governance's lock, unless this region holds it already. A lockout of the L1 check (another
	// reason) is taken over, as LOCK_TENANT does, so that the check's lifting it does not lift
	// governance's lock too. A deleted anchor locks the tenant out already.
	if ev.GetLocked() && !t.AnchorDeleted && (t.Status != fsm.StatusLocked || !strings.HasPrefix(t.LockReason, governanceLockPrefix)) {
		cmd.Lock = resyncLockReason
	}
	if len(missing) == 0 {
		return cmd, nil, nil
	}
	switch {
	case t.AnchorDeleted:
		return cmd, &fsm.Error{Err: fsm.ErrAnchorDeleted, Tenant: tenant}, nil
	case t.Status == fsm.StatusLocked:
		return cmd, &fsm.Error{Err: fsm.ErrLocked, Tenant: tenant}, nil
	}
	l2, err := n.tenantKey(actx, tenant, t.CurrentL2)
	if err != nil {
		refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: tenant})
		return cmd, refused, retry
	}
	if cmd.Services, err = sealNewServices(l2, tenant, t.CurrentL2, missing); err != nil {
		return cmd, nil, err
	}
	return cmd, nil, nil
}

// sealNewServices generates L3 version 1 of each service and seals it under l2 (version l2v).
func sealNewServices(l2 *wrap.TenantKey, tenant string, l2v uint32, services []string) ([]fsm.CreateService, error) {
	out := make([]fsm.CreateService, 0, len(services))
	for _, s := range services {
		l3, err := wrap.NewServiceKey(wrap.KeyID{Tenant: tenant, Service: s, Version: 1})
		if err != nil {
			return nil, err
		}
		sealed, err := l2.SealServiceKey(l3)
		l3.Destroy() // opened again from its sealed blob on first use
		if err != nil {
			return nil, err
		}
		out = append(out, fsm.CreateService{Tenant: tenant, Service: s, SealedL3: sealed, SealedBy: l2v})
	}
	return out, nil
}

// policyFromProto converts governance's policy into the state machine's plain types. Rules the
// state machine refuses (bad operations, patterns) make the whole event refused there.
func policyFromProto(p *kv1.Policy) policy.Policy {
	out := policy.Policy{Revision: p.GetRevision()}
	for _, r := range p.GetRules() {
		rule := policy.Rule{Caller: r.GetCaller(), Service: r.GetService()}
		for _, op := range r.GetOperations() {
			rule.Operations = append(rule.Operations, policy.Op(op))
		}
		out.Rules = append(out.Rules, rule)
	}
	return out
}

func eventKindName(k kv1.EventKind) string {
	switch k {
	case kv1.EventKind_EVENT_KIND_REVOKE_TENANT:
		return "revoke-tenant"
	case kv1.EventKind_EVENT_KIND_REVOKE_SERVICE:
		return "revoke-service"
	case kv1.EventKind_EVENT_KIND_REVOKE_VERSION:
		return "revoke-version"
	case kv1.EventKind_EVENT_KIND_LOCK_TENANT:
		return "lock-tenant"
	case kv1.EventKind_EVENT_KIND_UNLOCK_TENANT:
		return "unlock-tenant"
	case kv1.EventKind_EVENT_KIND_DELETE_ANCHOR:
		return "delete-anchor"
	case kv1.EventKind_EVENT_KIND_SET_ANCHOR:
		return "set-anchor"
	case kv1.EventKind_EVENT_KIND_SET_POLICY:
		return "set-policy"
	case kv1.EventKind_EVENT_KIND_CREATE_TENANT:
		return "create-tenant"
	case kv1.EventKind_EVENT_KIND_CREATE_SERVICE:
		return "create-service"
	case kv1.EventKind_EVENT_KIND_RESYNC_TENANT:
		return "resync-tenant"
	}
	return "unknown"
}

func validName(s string) bool { return wrap.ValidateName(s) == nil }

// validOrEmpty keeps a name out of logs unless it is a valid name (it came from the network).
func validOrEmpty(s string) string {
	if validName(s) || isHexID(s) {
		return s
	}
	return ""
}

func isHexID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// recordAs writes an audit event whose Actor the caller set.
func (n *Node) recordAs(e audit.Event) {
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "err", err)
	}
}
