package governance

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Audit event kinds of governance decisions.
const (
	AuditTenantCreate  = "governance.tenant.create"
	AuditServiceCreate = "governance.service.create"
	AuditAnchorSet     = "governance.anchor.set"
	AuditAnchorDelete  = "governance.anchor.delete"
	AuditOwnerSet      = "governance.owner.set"
	AuditPolicySet     = "governance.policy.set"
	AuditTenantLock    = "governance.tenant.lock"
	AuditTenantUnlock  = "governance.tenant.unlock"
	AuditRevoke        = "governance.revoke"
	AuditRevokeDryRun  = "governance.revoke.dry-run"
	AuditWatchStart    = "governance.watch.start"
	AuditTenantResync  = "governance.tenant.resync"
)

// api implements kv1.GovernanceServiceServer over a Node.
type api struct {
	kv1.UnimplementedGovernanceServiceServer
	n      *Node
	limits reportLimits // ReportCursor's writes per region
}

// operator refuses callers that are not operators. transport's policy admits operators and nodes to
// the service; nodes may only follow the feed.
func operator(ctx context.Context) error {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	if id.Kind != pki.KindOperator {
		return ErrNotOperator
	}
	return nil
}

// regionNode refuses callers that are not a node of region.
func regionNode(ctx context.Context, region string) error {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	if id.Kind != pki.KindNode || id.Region == "" || id.Region != region {
		return ErrWrongRegion
	}
	return nil
}

// propose fills in what only the proposing node may choose (time, event id) and the request's
// fingerprint, commits the command, and returns the state machine's result or its error.
func (n *Node) propose(ctx context.Context, c *govfsm.Command) (*govfsm.Result, error) {
	if err := validateCommand(c); err != nil {
		return nil, err
	}
	if c.Op != govfsm.OpReport {
		fp, err := json.Marshal(c) // the request's parameters: nothing chosen yet
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(fp)
		c.Fingerprint = hex.EncodeToString(sum[:16])
		var id [16]byte
		rand.Read(id[:])
		c.EventID = hex.EncodeToString(id[:])
	}
	c.Time = time.Now().UnixNano()
	b, err := c.Encode()
	if err != nil {
		return nil, err
	}
	resp, err := n.cl.Apply(ctx, b)
	if err != nil {
		return nil, n.clusterErr(err)
	}
	r, ok := resp.(*govfsm.Result)
	if !ok {
		return nil, fmt.Errorf("governance: unexpected apply response %T", resp)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	return r, nil
}

// clusterErr maps cluster errors to the API's. Ambiguous outcomes (leadership lost, forwarding
// failed) are UNAVAILABLE: the client retries with the same request_id and learns the outcome.
func (n *Node) clusterErr(err error) error {
	switch {
	case errors.Is(err, cluster.ErrShutdown):
		return ErrShutdown
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader),
		errors.Is(err, cluster.ErrLeadershipLost), errors.Is(err, cluster.ErrForward):
		return ErrUnavailable
	}
	n.log.Warn("cluster call failed", "err", err)
	return ErrUnavailable
}

// barrier makes the local state reflect every acknowledged write.
func (n *Node) barrier(ctx context.Context) error {
	if err := n.cl.Barrier(ctx); err != nil {
		return n.clusterErr(err)
	}
	return nil
}

// waitRegions blocks until every region has reported a cursor at or beyond cursor, waking on every
// state change (reports are replicated, so any node sees them).
func (n *Node) waitRegions(ctx context.Context, cursor uint64, regions []string) ([]*kv1.RegionCursor, error) {
	for {
		changed := n.fsm.Changed()
		out := make([]*kv1.RegionCursor, 0, len(regions))
		done := true
		for _, r := range regions {
			rep := n.fsm.Report(r)
			out = append(out, reportProto(&rep))
			if rep.Cursor < cursor {
				done = false
			}
		}
		if done {
			return out, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, ErrWaitTimeout
			}
			return nil, ctx.Err()
		case <-n.stop:
			return nil, ErrShutdown
		}
	}
}

// operatorEvent is an event as an operator's answer shows it: the anchor URI redacted
// (anchor.Redact). The feed to the regions (watch.go) sends it as set.
func operatorEvent(e *govfsm.Event) *kv1.RevocationEvent {
	pe := EventProto(e)
	if pe != nil {
		pe.AnchorUri = anchor.Redact(pe.AnchorUri)
	}
	return pe
}

func eventDetail(e *govfsm.Event) map[string]string {
	if e == nil {
		return nil
	}
	return map[string]string{"cursor": strconv.FormatUint(e.Cursor, 10), "event-id": e.ID}
}

func (s *api) CreateTenant(ctx context.Context, req *kv1.GovernanceCreateTenantRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := checkAnchor(req.GetAnchorUri(), s.n.cfg.AllowDevAnchor); err != nil {
		return nil, err
	}
	regions, err := normRegions(req.GetRegions(), s.n.cfg.Regions)
	if err != nil {
		return nil, err
	}
	if k := req.GetOwnerPublicKey(); k != "" {
		if err := checkOwnerKey(k); err != nil {
			return nil, err
		}
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpCreateTenant, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), AnchorURI: req.GetAnchorUri(), Regions: regions, OwnerKey: req.GetOwnerPublicKey()})
	if err != nil {
		return nil, err
	}
	d := eventDetail(r.Event)
	d["anchor"] = anchor.Redact(req.GetAnchorUri())
	d["regions"] = fmt.Sprint(regions)
	d["owner-key"] = ownerKeyText(r.Tenant.OwnerFingerprint())
	s.n.record(ctx, audit.Event{Kind: AuditTenantCreate, Tenant: req.GetTenant(), RequestID: req.GetRequestId(), Detail: d})
	return TenantProto(r.Tenant), nil
}

func (s *api) GetTenant(ctx context.Context, req *kv1.GetTenantRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	t, err := s.n.fsm.Tenant(req.GetTenant())
	if err != nil {
		return nil, err
	}
	return TenantProto(t), nil
}

func (s *api) ListTenants(ctx context.Context, req *kv1.GovernanceListTenantsRequest) (*kv1.GovernanceListTenantsResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	size, after, err := transport.Page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	ts := s.n.fsm.Tenants(after, size+1)
	out := &kv1.GovernanceListTenantsResponse{}
	if len(ts) > size {
		ts = ts[:size]
		out.NextPageToken = transport.NextPageToken(ts[size-1].Name)
	}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, TenantProto(t))
	}
	return out, nil
}

func (s *api) CreateService(ctx context.Context, req *kv1.GovernanceCreateServiceRequest) (*kv1.GovernanceServiceInfo, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := checkName("service", req.GetService()); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpCreateService, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Service: req.GetService()})
	if err != nil {
		return nil, err
	}
	s.n.record(ctx, audit.Event{Kind: AuditServiceCreate, Tenant: req.GetTenant(), Service: req.GetService(), RequestID: req.GetRequestId(), Detail: eventDetail(r.Event)})
	if r.Service == nil {
		return nil, govfsm.ErrServiceNotFound
	}
	return serviceProto(r.Service), nil
}

func (s *api) ListServices(ctx context.Context, req *kv1.GovernanceListServicesRequest) (*kv1.GovernanceListServicesResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	size, after, err := transport.Page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	svcs, err := s.n.fsm.Services(req.GetTenant(), after, size+1)
	if err != nil {
		return nil, err
	}
	out := &kv1.GovernanceListServicesResponse{}
	if len(svcs) > size {
		svcs = svcs[:size]
		out.NextPageToken = transport.NextPageToken(svcs[size-1].Name)
	}
	for _, sv := range svcs {
		out.Services = append(out.Services, serviceProto(sv))
	}
	return out, nil
}

func (s *api) SetAnchor(ctx context.Context, req *kv1.SetAnchorRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := checkAnchor(req.GetAnchorUri(), s.n.cfg.AllowDevAnchor); err != nil {
		return nil, err
	}
	st := owner.Statement{Tenant: req.GetTenant(), Op: owner.OpSetAnchor, Anchor: req.GetAnchorUri(), RequestID: req.GetRequestId()}
	how := fmt.Sprintf("krypton owner consent -key <owner.key> -op set-anchor -anchor <uri> -request-id <id> -out consent.jws %s", req.GetTenant())
	if err := s.checkConsent(ctx, req.GetConsent(), st, how, true); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetAnchor, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), AnchorURI: req.GetAnchorUri(), Consent: req.GetConsent()})
	if err != nil {
		return nil, err
	}
	d := eventDetail(r.Event)
	d["anchor"] = anchor.Redact(req.GetAnchorUri())
	d["owner-key"] = ownerKeyText(r.Event.OwnerKey)
	if !r.Retry {
		// What the change replaced: the anchor in place, or the kill switch it lifts.
		if r.Previous == "" {
			d["old-anchor"] = "(deleted: this lifts the kill switch)"
		} else {
			d["old-anchor"] = anchor.Redact(r.Previous)
		}
	}
	s.n.record(ctx, audit.Event{Kind: AuditAnchorSet, Tenant: req.GetTenant(), RequestID: req.GetRequestId(), Detail: d})
	return TenantProto(r.Tenant), nil
}

// SetOwnerKey registers a tenant's owner key, or replaces it with the current key's consent.
func (s *api) SetOwnerKey(ctx context.Context, req *kv1.SetOwnerKeyRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if req.GetOwnerPublicKey() == "" {
		return nil, invalid("owner_public_key is required (krypton owner keygen makes one)")
	}
	nk, err := owner.ParsePublicKey(req.GetOwnerPublicKey())
	if err != nil {
		return nil, checkOwnerKey(req.GetOwnerPublicKey())
	}
	st := owner.Statement{Tenant: req.GetTenant(), Op: owner.OpSetOwner, OwnerKey: nk.Fingerprint(), RequestID: req.GetRequestId()}
	how := fmt.Sprintf("krypton owner consent -key <current-owner.key> -op set-owner -owner-pub <new-owner.pub> -request-id <id> -out consent.jws %s", req.GetTenant())
	if err := s.checkConsent(ctx, req.GetConsent(), st, how, false); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetOwnerKey, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), OwnerKey: req.GetOwnerPublicKey(), Consent: req.GetConsent()})
	if err != nil {
		return nil, err
	}
	d := map[string]string{"owner-key": ownerKeyText(nk.Fingerprint())}
	if !r.Retry {
		if r.Previous == "" {
			d["old-owner-key"] = "(none: registered on the operator's word)"
		} else {
			d["old-owner-key"] = r.Previous
			d["consented-by"] = r.Previous
		}
	}
	s.n.record(ctx, audit.Event{Kind: AuditOwnerSet, Tenant: req.GetTenant(), RequestID: req.GetRequestId(), Detail: d})
	return TenantProto(r.Tenant), nil
}

func ownerKeyText(fp string) string {
	if fp == "" {
		return "(none)"
	}
	return fp
}

// checkConsent verifies a consent against the tenant's owner key as governance holds it, before
// anything is proposed, with an error that says what is wrong and how to make a consent (how); the
// state machine verifies it again where it applies. needKey refuses a tenant without an owner key
// (ErrNoOwnerKey); otherwise such a tenant takes no consent (the first owner key).
func (s *api) checkConsent(ctx context.Context, consent string, st owner.Statement, how string, needKey bool) error {
	if err := s.n.barrier(ctx); err != nil {
		return err
	}
	t, err := s.n.fsm.Tenant(st.Tenant)
	if err != nil {
		return err
	}
	if t.Revoked {
		return govfsm.ErrRevoked
	}
	if t.OwnerKey == "" {
		if needKey {
			return govfsm.ErrNoOwnerKey
		}
		if consent != "" {
			return invalid("the tenant has no owner key yet: registering its first takes no consent")
		}
		return nil
	}
	key, err := owner.ParsePublicKey(t.OwnerKey)
	if err != nil {
		return govfsm.ErrConsentDenied
	}
	_, err = owner.Verify(consent, key, st, time.Now())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, owner.ErrMalformed):
		return invalid(strings.TrimPrefix(err.Error(), "owner: malformed: ") + "; the tenant's owner makes a consent with `" + how + "`, and the operator gives it with -consent consent.jws")
	}
	return status.Error(codes.PermissionDenied, "governance: "+strings.TrimPrefix(err.Error(), "owner: ")+
		"; the tenant's owner (key "+key.Fingerprint()+") makes a consent with `"+how+"`, and the operator gives it with -consent consent.jws")
}

func (s *api) DeleteAnchor(ctx context.Context, req *kv1.DeleteAnchorRequest) (*kv1.DeleteAnchorResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := requireReason(req.GetReason()); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpDeleteAnchor, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Reason: req.GetReason()})
	if err != nil {
		return nil, err
	}
	s.n.record(ctx, audit.Event{Kind: AuditAnchorDelete, Tenant: req.GetTenant(), RequestID: req.GetRequestId(), Reason: req.GetReason(), Detail: eventDetail(r.Event)})
	out := &kv1.DeleteAnchorResponse{Event: operatorEvent(r.Event)}
	if req.GetWait() {
		if out.Regions, err = s.n.waitRegions(ctx, r.Event.Cursor, r.Tenant.Regions); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *api) SetPolicy(ctx context.Context, req *kv1.SetPolicyRequest) (*kv1.Policy, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if req.GetPolicy() == nil {
		return nil, invalid("policy is required")
	}
	tenant := req.GetPolicy().GetTenant()
	if err := checkName("policy.tenant", tenant); err != nil {
		return nil, err
	}
	rules, err := rulesFromProto(req.GetPolicy().GetRules())
	if err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetPolicy, RequestID: req.GetRequestId(), Tenant: tenant, Rules: rules, ExpectedRevision: req.GetExpectedRevision()})
	if err != nil {
		return nil, err
	}
	d := eventDetail(r.Event)
	d["rules"] = strconv.Itoa(len(rules))
	d["revision"] = strconv.FormatUint(r.Policy.Revision, 10)
	s.n.record(ctx, audit.Event{Kind: AuditPolicySet, Tenant: tenant, RequestID: req.GetRequestId(), Detail: d})
	return policyProto(r.Policy, tenant), nil
}

func (s *api) GetPolicy(ctx context.Context, req *kv1.GetPolicyRequest) (*kv1.Policy, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	p, err := s.n.fsm.Policy(req.GetTenant())
	if err != nil {
		return nil, err
	}
	return policyProto(p, req.GetTenant()), nil
}

func blastProto(b *govfsm.BlastRadius) *kv1.BlastRadius {
	if b == nil {
		return nil
	}
	out := &kv1.BlastRadius{Tenants: b.Tenants, Regions: b.Regions}
	for _, k := range b.Services {
		out.Services = append(out.Services, &kv1.KeyRef{Tenant: k.Tenant, Service: k.Service})
	}
	for _, k := range b.KeyVersions {
		out.KeyVersions = append(out.KeyVersions, &kv1.KeyRef{Tenant: k.Tenant, Service: k.Service, Version: k.Version})
	}
	return out
}

func (s *api) Revoke(ctx context.Context, req *kv1.RevokeRequest) (*kv1.RevokeResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	t := req.GetTarget()
	if err := checkScope(t); err != nil {
		return nil, err
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	detail := func(d map[string]string) map[string]string {
		if d == nil {
			d = map[string]string{}
		}
		d["scope"] = scopeString(t)
		return d
	}
	if req.GetDryRun() {
		if err := s.n.barrier(ctx); err != nil {
			return nil, err
		}
		b, err := s.n.fsm.Blast(t.GetTenant(), t.GetService(), t.GetVersion())
		if err != nil {
			return nil, err
		}
		s.n.record(ctx, audit.Event{Kind: AuditRevokeDryRun, Tenant: t.GetTenant(), Service: t.GetService(), Version: t.GetVersion(),
			RequestID: req.GetRequestId(), Reason: req.GetReason(), Detail: detail(nil)})
		return &kv1.RevokeResponse{BlastRadius: blastProto(b)}, nil
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := requireReason(req.GetReason()); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpRevoke, RequestID: req.GetRequestId(), Tenant: t.GetTenant(), Service: t.GetService(), Version: t.GetVersion(), Reason: req.GetReason()})
	if err != nil {
		return nil, err
	}
	s.n.record(ctx, audit.Event{Kind: AuditRevoke, Tenant: t.GetTenant(), Service: t.GetService(), Version: t.GetVersion(),
		RequestID: req.GetRequestId(), Reason: req.GetReason(), Detail: detail(eventDetail(r.Event))})
	out := &kv1.RevokeResponse{Event: operatorEvent(r.Event)}
	// The blast radius from this node's state; it may lag the leader's by the entry just committed,
	// which does not change what it covers.
	if b, err := s.n.fsm.Blast(t.GetTenant(), t.GetService(), t.GetVersion()); err == nil {
		out.BlastRadius = blastProto(b)
	}
	if req.GetWait() {
		if out.Regions, err = s.n.waitRegions(ctx, r.Event.Cursor, r.Tenant.Regions); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func scopeString(t *kv1.KeyScope) string {
	s := t.GetTenant()
	if t.GetService() != "" {
		s += "/" + t.GetService()
	}
	if t.GetVersion() != 0 {
		s += "/" + strconv.FormatUint(uint64(t.GetVersion()), 10)
	}
	return s
}

func (s *api) LockTenant(ctx context.Context, req *kv1.GovernanceLockTenantRequest) (*kv1.GovernanceTenant, error) {
	return s.lock(ctx, govfsm.OpLockTenant, req.GetRequestId(), req.GetTenant(), req.GetReason())
}

func (s *api) UnlockTenant(ctx context.Context, req *kv1.GovernanceUnlockTenantRequest) (*kv1.GovernanceTenant, error) {
	return s.lock(ctx, govfsm.OpUnlockTenant, req.GetRequestId(), req.GetTenant(), "")
}

func (s *api) lock(ctx context.Context, op govfsm.Op, rid, tenant, reason string) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(rid); err != nil {
		return nil, err
	}
	if err := checkName("tenant", tenant); err != nil {
		return nil, err
	}
	check := checkReason
	if op == govfsm.OpLockTenant {
		check = requireReason
	}
	if err := check(reason); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: op, RequestID: rid, Tenant: tenant, Reason: reason})
	if err != nil {
		return nil, err
	}
	kind := AuditTenantLock
	if op == govfsm.OpUnlockTenant {
		kind = AuditTenantUnlock
	}
	s.n.record(ctx, audit.Event{Kind: kind, Tenant: tenant, RequestID: rid, Reason: reason, Detail: eventDetail(r.Event)})
	return TenantProto(r.Tenant), nil
}

// ResyncTenant emits a RESYNC_TENANT event for the named regions (all the tenant's if none), and
// with wait returns once they have reported it.
func (s *api) ResyncTenant(ctx context.Context, req *kv1.ResyncTenantRequest) (*kv1.ResyncTenantResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	var regions []string
	if len(req.GetRegions()) > 0 {
		var err error
		// Whether they are the tenant's is the state machine's to say.
		if regions, err = normRegions(req.GetRegions(), nil); err != nil {
			return nil, err
		}
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpResyncTenant, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Regions: regions})
	if err != nil {
		return nil, err
	}
	d := eventDetail(r.Event)
	d["regions"] = fmt.Sprint(r.Event.Regions)
	d["services"] = strconv.Itoa(len(r.Event.Services))
	s.n.record(ctx, audit.Event{Kind: AuditTenantResync, Tenant: req.GetTenant(), RequestID: req.GetRequestId(), Detail: d})
	out := &kv1.ResyncTenantResponse{Event: operatorEvent(r.Event)}
	if req.GetWait() {
		if out.Regions, err = s.n.waitRegions(ctx, r.Event.Cursor, r.Event.Regions); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// reportRefresh is how often a region's unchanged cursor report is written again (ReportCursor).
const reportRefresh = time.Minute

// Report writes that do not advance a region's cursor (a new inventory or configuration, a refresh)
// are limited per region on each governance node to a burst of reportBurst, then one per
// reportEvery: a voter of the region cannot grow governance's log faster than that. Writes that
// advance the cursor are not limited: there is at most one per event of the log.
const (
	reportEvery = time.Second
	reportBurst = 20
	// maxReportLimiters bounds the limiters kept (one per region that reported lately); beyond it
	// they start afresh. Region names come from certificates the CA issued.
	maxReportLimiters = 4096
)

// reportLimits holds the per-region limiters of ReportCursor. golang.org/x/time/rate is the token
// bucket (transport's OIDC limiter uses it too).
type reportLimits struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (l *reportLimits) allow(region string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) >= maxReportLimiters {
		l.m = map[string]*rate.Limiter{}
	}
	lim := l.m[region]
	if lim == nil {
		lim = rate.NewLimiter(rate.Every(reportEvery), reportBurst)
		l.m[region] = lim
	}
	return lim.Allow()
}

// ReportCursor records a region's position (DESIGN.md, "Who may report"). Everything that can be
// refused is refused here, before the log: the caller must be a node of the region and, once
// governance has learned the region's Raft configuration, one of its voters; the report must be
// well formed and not beyond the head; a report that changes nothing is answered from the state;
// one that changes something without advancing the cursor is rate-limited.
func (s *api) ReportCursor(ctx context.Context, req *kv1.ReportCursorRequest) (*kv1.ReportCursorResponse, error) {
	if err := checkName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if err := regionNode(ctx, req.GetRegion()); err != nil {
		return nil, err
	}
	id, _ := transport.IdentityFromContext(ctx)
	if len(req.GetInventory()) > govfsm.MaxInventory {
		return nil, invalid(fmt.Sprintf("more than %d inventory entries", govfsm.MaxInventory))
	}
	voters := slices.Sorted(slices.Values(req.GetVoters()))
	if len(voters) > govfsm.MaxVoters {
		return nil, invalid(fmt.Sprintf("more than %d voters", govfsm.MaxVoters))
	}
	if !govfsm.ValidConfig(req.GetConfigurationIndex(), voters) {
		return nil, invalid("the reported configuration needs both configuration_index and voters, each voter a valid node name, none twice")
	}
	c := &govfsm.Command{Op: govfsm.OpReport, Region: req.GetRegion(), Cursor: req.GetAppliedCursor(), HasInventory: req.GetHasInventory(),
		Node: id.NodeID, ConfigIndex: req.GetConfigurationIndex(), Voters: voters}
	if c.HasInventory {
		c.Inventory = make([]govfsm.KeyRef, 0, len(req.GetInventory()))
		for _, k := range req.GetInventory() {
			if checkName("inventory tenant", k.GetTenant()) != nil || checkName("inventory service", k.GetService()) != nil || k.GetVersion() == 0 {
				return nil, invalid("inventory holds a malformed key reference")
			}
			c.Inventory = append(c.Inventory, govfsm.KeyRef{Tenant: k.GetTenant(), Service: k.GetService(), Version: k.GetVersion()})
		}
	}
	changes, last, err := s.n.fsm.CheckReport(c)
	if err != nil {
		return nil, err
	}
	if c.Cursor > s.n.fsm.Head() {
		return nil, govfsm.ErrCursorAhead
	}
	if !changes && c.HasInventory {
		// Cursors and configuration indexes only grow, so this node's state can say they change
		// nothing; an inventory can change back and forth, so "the same as mine" needs this node's
		// state to include every acknowledged write first.
		if err := s.n.barrier(ctx); err != nil {
			return nil, err
		}
		if changes, last, err = s.n.fsm.CheckReport(c); err != nil {
			return nil, err
		}
	}
	// A region reports after every feed message, heartbeats included. A report that changes nothing
	// is written at most once per reportRefresh, so that a quiet region costs a Raft write a minute
	// rather than one a heartbeat; its reported-at time is then up to reportRefresh old.
	if !changes && last.ReportedAt != 0 && time.Since(time.Unix(0, last.ReportedAt)) < reportRefresh {
		return &kv1.ReportCursorResponse{RecordedCursor: last.Cursor}, nil
	}
	if c.Cursor <= last.Cursor && !s.limits.allow(c.Region) {
		return nil, ErrReportRate
	}
	r, err := s.n.propose(ctx, c)
	if err != nil {
		return nil, err
	}
	return &kv1.ReportCursorResponse{RecordedCursor: r.Recorded}, nil
}

func (s *api) Status(ctx context.Context, _ *kv1.GovernanceStatusRequest) (*kv1.GovernanceStatusResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	n := s.n
	leader, _ := n.cl.Leader()
	out := &kv1.GovernanceStatusResponse{
		NodeId:       n.cfg.NodeID,
		LeaderId:     leader,
		Term:         n.cl.Term(),
		CommitIndex:  n.cl.CommitIndex(),
		AppliedIndex: n.cl.AppliedIndex(),
		HeadCursor:   n.fsm.Head(),
	}
	now := time.Now()
	for _, l := range n.fsm.Lags() {
		rl := &kv1.RegionLag{Cursor: reportProto(&l.RegionReport), PendingEvents: l.Pending, Lag: durationpb.New(0)}
		if l.Pending > 0 {
			rl.Lag = durationpb.New(max(0, now.Sub(time.Unix(0, l.OldestPending))))
		}
		out.Regions = append(out.Regions, rl)
	}
	return out, nil
}
