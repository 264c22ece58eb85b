package region

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Writes are prepared on the node that receives them and proposed through cluster.ApplyIdempotent,
// which forwards to the leader and rides out a leader change (DESIGN.md, "Who makes a write").

// ErrAmbiguous is returned when a write was sent but its outcome is unknown (the leader changed
// while it was in flight). Retrying with the same request id is safe: it applies at most once.
var ErrAmbiguous = transport.Coded(codes.Unavailable, "region: the write may or may not have been applied; retry with the same request id")

// apply proposes one command and returns its result; the state machine's refusals come back as
// errors. The command is validated first, here where the request arrived: a malformed one never
// reaches the Raft log (fsm.Validate; the state machine's checks stay the last line).
//
// For a retried request id the result is the first request's (Result.Duplicate): callers build
// their answer from it, never from their own arguments.
//
// The entry carries its origin (the API caller, or the node itself) for every node's audit record
// of it (auditapply.go): apply writes no record itself.
func (n *Node) apply(ctx context.Context, requestID string, cmd fsm.Command) (fsm.Result, error) {
	return n.applyAs(ctx, requestID, cmd, n.origin(ctx))
}

// applyAs is apply with the origin the entry carries for the audit records.
func (n *Node) applyAs(ctx context.Context, requestID string, cmd fsm.Command, origin fsm.Origin) (fsm.Result, error) {
	if n.shut.Load() {
		return fsm.Result{}, ErrShutdown
	}
	// A write's span: on a follower it covers the forward to the leader (cluster.ApplyIdempotent).
	ctx, span := tracing.StartSpan(ctx, n.tracer, "region.apply")
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(tracing.Op.String(cmd.Type()), tracing.NodeID.String(n.cfg.NodeID))
	}
	e := fsm.Entry{RequestID: requestID, At: time.Now().UnixNano(), Command: cmd, Origin: origin}
	if err := n.gateEntry(&e); err != nil { // a voter of an older release must decode it (upgrade.go)
		return fsm.Result{}, err
	}
	if err := fsm.Validate(e); err != nil {
		return fsm.Result{}, err
	}
	b, err := fsm.Encode(e)
	if err != nil {
		return fsm.Result{}, err
	}
	n.metrics.proposals.WithLabelValues(cmd.Type()).Inc()
	// With a request id the state machine applies the entry at most once (a second copy answers
	// the first's result), so the cluster may send it again when the leader changes or stops
	// answering mid-flight, until ctx ends (DESIGN.md, "Who makes a write"). The same bytes are
	// resent: same request id, same time, same sealed blobs.
	apply := n.cl.Apply
	if requestID != "" {
		apply = n.cl.ApplyIdempotent
	}
	v, err := apply(ctx, b)
	switch {
	case err == nil:
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrNoLeader):
		return fsm.Result{}, ErrNoLeader
	case errors.Is(err, cluster.ErrShutdown):
		return fsm.Result{}, ErrShutdown
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fsm.Result{}, err
	default:
		n.log.Warn("write outcome unknown", "request-id", requestID, "err", err)
		return fsm.Result{}, ErrAmbiguous
	}
	switch r := v.(type) {
	case fsm.Result:
		// Read your writes: a follower that forwarded the command answers from its own state.
		if err := n.cl.WaitApplied(ctx, r.Index); err != nil {
			return r, err
		}
		return r, nil
	case error:
		return fsm.Result{}, r
	default:
		return fsm.Result{}, errors.New("region: unexpected response from the state machine")
	}
}

// actor names the caller for the audit log.
func actor(ctx context.Context) string {
	if id, ok := transport.IdentityFromContext(ctx); ok {
		return id.String()
	}
	return "node"
}

// Origins of an audited command, in its record's detail "origin" (docs/audit.md): who made this
// node propose or do it.
const (
	// originAPI: a call of the node's API; the record's actor is the caller's identity.
	originAPI = "api"
	// originFeed: an event of governance's feed; the record's actor is "governance", its detail
	// the event's cursor, id and kind, and the governance node that served it.
	originFeed = "governance-feed"
	// originPeer: another node of the region, over the cluster RPC or the node service; the
	// record's actor is that node's identity.
	originPeer = "peer"
	// originNode: this node's own decision (an L1 check's lockout, a restore's settings); the
	// record's actor is "node".
	originNode = "node"
)

// record writes an audit event for a command or call that came through ctx: its actor is the
// API caller (origin "api"), or "node" for the node's own work (origin "node").
func (n *Node) record(ctx context.Context, e audit.Event) {
	e.Actor = actor(ctx)
	origin := originNode
	if _, ok := transport.IdentityFromContext(ctx); ok {
		origin = originAPI
	}
	if e.Detail == nil {
		e.Detail = map[string]string{}
	}
	e.Detail["origin"] = origin
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "err", err)
	}
}

// probedAnchor opens the anchor at uri and accepts it only once it has sealed and unsealed: a typo
// in a key name, a missing grant or a disabled key is refused when a tenant is created or re-keyed,
// not at its first wrap.
func (n *Node) probedAnchor(ctx context.Context, uri string) (anchor.Provider, error) {
	p, err := n.anchors.get(ctx, uri)
	if err != nil {
		return nil, err
	}
	err = anchor.Probe(ctx, p)
	n.countAnchor("probe", err)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// storableAnchor refuses an anchor URI that must not be stored: one that does not parse, or one
// that carries a secret (a pkcs11 pin-value), which every Raft log, snapshot and backup of the
// region would keep. It runs before the anchor is opened and before anything is proposed.
//
// It also refuses an endpoint override that would send the tenant key in clear (an awskms
// http:// endpoint), unless the node allows development anchors and the endpoint is on loopback
// (anchor.CheckTransport).
func (n *Node) storableAnchor(uri string) error {
	u, err := anchor.Parse(uri)
	if err != nil {
		return err
	}
	if err := anchor.CheckStorable(u); err != nil {
		return transport.Invalid("region: " + err.Error()) // names the fix (pin-source), never the value
	}
	if err := anchor.CheckTransport(u, n.cfg.AllowDevAnchor); err != nil {
		return transport.Invalid("region: " + err.Error()) // names the fix: https://
	}
	return nil
}

// CreateTenant creates a tenant whose L2 version 1 is sealed by the anchor at anchorURI, without
// an owner key (it cannot be rekeyed until one is registered: SetOwnerKey).
func (n *Node) CreateTenant(ctx context.Context, requestID, tenant, anchorURI string) (fsm.Tenant, error) {
	return n.CreateOwnedTenant(ctx, requestID, tenant, anchorURI, "")
}

// CreateOwnedTenant is CreateTenant with the tenant owner's public key (PKIX PEM; "" for none),
// whose consent rekeying the tenant needs (owner.go).
func (n *Node) CreateOwnedTenant(ctx context.Context, requestID, tenant, anchorURI, ownerKey string) (fsm.Tenant, error) {
	if err := transport.CheckName("tenant", tenant); err != nil {
		return fsm.Tenant{}, err
	}
	if err := n.storableAnchor(anchorURI); err != nil {
		return fsm.Tenant{}, err
	}
	if _, err := ownerKeyPEM(ownerKey); err != nil {
		return fsm.Tenant{}, err
	}
	p, err := n.probedAnchor(ctx, anchorURI)
	if err != nil {
		return fsm.Tenant{}, err
	}
	l2, err := wrap.NewTenantKey(wrap.KeyID{Tenant: tenant, Version: 1})
	if err != nil {
		return fsm.Tenant{}, err
	}
	sealed, err := anchor.SealTenantKey(ctx, p, l2, n.cfg.Region)
	n.countAnchor("seal", err)
	if err != nil {
		l2.Destroy()
		return fsm.Tenant{}, err
	}
	res, err := n.apply(ctx, requestID, fsm.CreateTenant{Tenant: tenant, Anchor: anchorURI, SealedL2: sealed, OwnerKey: ownerKey})
	if err != nil || res.Duplicate {
		l2.Destroy()
		if err != nil {
			return fsm.Tenant{}, err
		}
	} else {
		n.keys.putTenantKey(l2) // its audit record is written from the log (auditapply.go)
	}
	return n.state.Tenant(res.Tenant)
}

// CreateKey creates a service and its L3 version 1, sealed under the tenant's current L2.
func (n *Node) CreateKey(ctx context.Context, requestID, tenant, service string) (fsm.Service, error) {
	return n.sealNewVersion(ctx, requestID, tenant, service, 1)
}

// RotateKey makes a new L3 version current; the previous one becomes decrypt-only.
func (n *Node) RotateKey(ctx context.Context, requestID, tenant, service string) (fsm.Service, error) {
	if err := n.notHome(tenant); err != nil {
		return fsm.Service{}, err
	}
	for attempt := 0; ; attempt++ {
		svc, err := freshRead(ctx, n, func() (fsm.Service, error) { return n.state.Service(tenant, service) })
		if err != nil {
			return fsm.Service{}, err
		}
		s, err := n.sealNewVersion(ctx, requestID, tenant, service, svc.Current+1)
		// A stale view of the current version: catch up and try once more.
		if errors.Is(err, fsm.ErrBadVersion) && attempt == 0 {
			if err := n.cl.Barrier(ctx); err != nil {
				return fsm.Service{}, ErrNoLeader
			}
			continue
		}
		return s, err
	}
}

func (n *Node) sealNewVersion(ctx context.Context, requestID, tenant, service string, version uint32) (fsm.Service, error) {
	if err := transport.CheckName("tenant", tenant); err != nil {
		return fsm.Service{}, err
	}
	if err := transport.CheckName("service", service); err != nil {
		return fsm.Service{}, err
	}
	// A tenant acknowledged a moment ago may not be applied here yet: catch up before NotFound.
	t, err := freshRead(ctx, n, func() (fsm.Tenant, error) { return n.state.Tenant(tenant) })
	if err != nil {
		return fsm.Service{}, err
	}
	l2, err := n.tenantKey(ctx, tenant, t.CurrentL2)
	if err != nil {
		return fsm.Service{}, err
	}
	id := wrap.KeyID{Tenant: tenant, Service: service, Version: version}
	l3, err := wrap.NewServiceKey(id)
	if err != nil {
		return fsm.Service{}, err
	}
	sealed, err := l2.SealServiceKey(l3)
	if err != nil {
		l3.Destroy()
		return fsm.Service{}, err
	}
	var cmd fsm.Command = fsm.CreateService{Tenant: tenant, Service: service, SealedL3: sealed, SealedBy: t.CurrentL2}
	if version > 1 {
		cmd = fsm.RotateServiceKey{Tenant: tenant, Service: service, Version: version, SealedL3: sealed, SealedBy: t.CurrentL2}
	}
	res, err := n.apply(ctx, requestID, cmd)
	if err != nil || res.Duplicate {
		l3.Destroy()
		if err != nil {
			return fsm.Service{}, err
		}
	} else {
		n.keys.putServiceKey(l3)
	}
	svc, err := n.state.Service(res.Tenant, res.Service)
	if err != nil {
		return fsm.Service{}, err
	}
	// Describe the version this call made (or, for a retry, the one the first call with this
	// request id made), not whatever is current by now: a concurrent rotation may have followed.
	svc.Current = res.Version
	return svc, nil
}

// Scope names what a revocation covers: a tenant, one of its services, or one key version.
type Scope struct {
	Tenant  string
	Service string // empty: the whole tenant
	Version uint32 // 0: the whole service
}

// Revoke revokes a tenant, a service or one key version for good, and returns only when no node
// of the region can use it any longer (DESIGN.md, "The revocation fence").
func (n *Node) Revoke(ctx context.Context, requestID string, s Scope, reason string) (*kv1.FenceResult, error) {
	_, fence, err := n.revoke(ctx, requestID, s, reason)
	return fence, err
}

// revoke is Revoke, also returning the scope that was revoked: for a retried request id, the first
// request's, as the state machine recorded it.
func (n *Node) revoke(ctx context.Context, requestID string, s Scope, reason string) (Scope, *kv1.FenceResult, error) {
	if err := transport.CheckName("tenant", s.Tenant); err != nil {
		return Scope{}, nil, err
	}
	var cmd fsm.Command
	switch {
	case s.Service == "" && s.Version != 0:
		return Scope{}, nil, transport.Invalid("region: a key version needs a service")
	case s.Service == "":
		cmd = fsm.RevokeTenant{Tenant: s.Tenant, Reason: reason}
	case s.Version == 0:
		cmd = fsm.RevokeService{Tenant: s.Tenant, Service: s.Service, Reason: reason}
	default:
		cmd = fsm.RevokeKeyVersion{Tenant: s.Tenant, Service: s.Service, Version: s.Version, Reason: reason}
	}
	if s.Service != "" {
		if err := transport.CheckName("service", s.Service); err != nil {
			return Scope{}, nil, err
		}
	}
	res, err := n.apply(ctx, requestID, cmd)
	if errors.Is(err, fsm.ErrRevoked) {
		// Already revoked: that succeeds (admin.proto, RevokeKey), and it is fenced like the
		// first revocation, whose caller may have timed out before its fence and now retries
		// under a new request id. The leader refused this entry after the revocation had
		// committed, so after a read barrier this node has applied it, and a fence at its
		// applied index covers it.
		if err := n.cl.Barrier(ctx); err != nil {
			if ctx.Err() != nil {
				return Scope{}, nil, ErrFenceTimeout
			}
			return Scope{}, nil, ErrNoLeader
		}
		fence, err := n.fence(ctx, n.state.AppliedIndex())
		return s, fence, err
	}
	if err != nil {
		return Scope{}, nil, err
	}
	fence, err := n.fence(ctx, res.Index)
	return Scope{Tenant: res.Tenant, Service: res.Service, Version: res.Version}, fence, err
}

// LockTenant locks a tenant out (every call for its keys is refused) until UnlockTenant; its sealed
// keys stay intact. It returns when no node serves the tenant any longer.
func (n *Node) LockTenant(ctx context.Context, requestID, tenant, reason string) (*kv1.FenceResult, error) {
	_, fence, err := n.lockTenantResult(ctx, requestID, tenant, reason)
	return fence, err
}

// lockTenantResult is LockTenant, also returning the tenant that was locked (for a retried request id,
// the first request's).
func (n *Node) lockTenantResult(ctx context.Context, requestID, tenant, reason string) (string, *kv1.FenceResult, error) {
	if err := transport.CheckName("tenant", tenant); err != nil {
		return "", nil, err
	}
	res, err := n.apply(ctx, requestID, fsm.LockTenant{Tenant: tenant, Reason: reason})
	if err != nil {
		return "", nil, err
	}
	fence, err := n.fence(ctx, res.Index)
	return res.Tenant, fence, err
}

// UnlockTenant lifts a lockout, once the tenant's anchor answers a seal/unseal round trip again:
// unlocking a tenant whose root key still denies access would only fail every call later.
func (n *Node) UnlockTenant(ctx context.Context, requestID, tenant string) (fsm.Tenant, error) {
	if err := transport.CheckName("tenant", tenant); err != nil {
		return fsm.Tenant{}, err
	}
	t, err := freshRead(ctx, n, func() (fsm.Tenant, error) { return n.state.Tenant(tenant) })
	if err != nil {
		return fsm.Tenant{}, err
	}
	if t.Status == fsm.StatusLocked {
		if err := n.checkAnchor(ctx, t.Anchor); err != nil {
			n.countAnchor("check", err)
			return fsm.Tenant{}, err
		}
	}
	res, err := n.apply(ctx, requestID, fsm.UnlockTenant{Tenant: tenant})
	if err != nil {
		return fsm.Tenant{}, err
	}
	return n.state.Tenant(res.Tenant)
}

// RekeyTenant seals every L2 version of a tenant under a new anchor (DESIGN.md of package anchor:
// rotating L1 never changes L2, so nothing below it needs rewrapping). It needs the tenant owner's
// consent to exactly this rekey (owner.go), checked before the anchor is opened or any L2 unsealed.
func (n *Node) RekeyTenant(ctx context.Context, requestID, tenant, anchorURI, consent string) (fsm.Tenant, error) {
	if err := transport.CheckName("tenant", tenant); err != nil {
		return fsm.Tenant{}, err
	}
	if err := n.storableAnchor(anchorURI); err != nil {
		return fsm.Tenant{}, err
	}
	t, err := freshRead(ctx, n, func() (fsm.Tenant, error) { return n.state.Tenant(tenant) })
	if err != nil {
		return fsm.Tenant{}, err
	}
	switch {
	case t.Status == fsm.StatusRevoked:
		return fsm.Tenant{}, &fsm.Error{Err: fsm.ErrRevoked, Tenant: tenant}
	case t.AnchorDeleted:
		return fsm.Tenant{}, &fsm.Error{Err: fsm.ErrAnchorDeleted, Tenant: tenant}
	}
	st := owner.Statement{Tenant: tenant, Op: owner.OpRekey, Anchor: anchorURI, Region: n.cfg.Region, RequestID: requestID}
	fp, err := n.checkConsent(ctx, consent, st, n.rekeyConsentHow(tenant, anchorURI), true)
	if err != nil {
		return fsm.Tenant{}, err
	}
	p, err := n.probedAnchor(ctx, anchorURI)
	if err != nil {
		return fsm.Tenant{}, err
	}
	resealed := make([][]byte, len(t.L2))
	for i := range t.L2 {
		l2, err := n.tenantKey(ctx, tenant, uint32(i+1))
		if err != nil {
			return fsm.Tenant{}, err
		}
		sealed, err := anchor.SealTenantKey(ctx, p, l2, n.cfg.Region)
		n.countAnchor("seal", err)
		if err != nil {
			return fsm.Tenant{}, err
		}
		resealed[i] = sealed
	}
	// The record (auditapply.go) names the owner key whose consent was checked here.
	origin := n.origin(ctx)
	origin.Detail = map[string]string{"owner-key": originText(fp)}
	res, err := n.applyAs(ctx, requestID, fsm.SetAnchor{Tenant: tenant, Anchor: anchorURI, Resealed: resealed, Consent: consent}, origin)
	if err != nil {
		return fsm.Tenant{}, err
	}
	return n.state.Tenant(res.Tenant)
}

// SetSettings replaces the region's replicated settings (lease duration, L1 check period, ...).
func (n *Node) SetSettings(ctx context.Context, s fsm.Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	_, err := n.apply(ctx, "", fsm.SetSettings{Settings: s})
	return err
}
