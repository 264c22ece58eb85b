package region

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/quota"
	"github.com/kryptonkms/krypton/policy"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Event translation for the governance feed (feed.go handles the stream): prepare turns each
// governance event into the region command to propose, or into a refusal decided here.

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
	case kv1.EventKind_EVENT_KIND_SET_QUOTA:
		// A quota out of bounds is refused by the state machine, as an event refused.
		return fsm.SetQuota{Tenant: tenant, Service: service, Quota: quotaOf(quota.FromProto(ev.GetQuota()))}, nil, nil
	case kv1.EventKind_EVENT_KIND_SET_ANCHOR:
		return f.prepareSetAnchor(ctx, ev, tenant, ev.GetAnchorUri())
	case kv1.EventKind_EVENT_KIND_CREATE_TENANT:
		if ev.GetHomeRegion() != "" {
			return f.prepareCreateShared(ctx, ev, tenant)
		}
		return f.prepareCreateTenant(ctx, ev, tenant, ev.GetAnchorUri())
	case kv1.EventKind_EVENT_KIND_CREATE_SERVICE:
		if t, err := n.state.Tenant(tenant); err == nil && t.Shared() && t.Home != n.cfg.Region {
			return awaitKeys(tenant, t.Regions), nil, nil // its L3 comes from the home region
		}
		return f.prepareCreateService(ctx, ev, tenant, service)
	case kv1.EventKind_EVENT_KIND_TENANT_KEYS:
		return f.prepareImport(ctx, ev, tenant)
	case kv1.EventKind_EVENT_KIND_SET_REGIONS:
		return f.prepareSetRegions(ev, tenant)
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
	if t.Home == n.cfg.Region {
		// Another region's pointer may have moved: publish again, sealed under the anchors
		// governance has now.
		delete(f.published, tenant)
	}
	if t.Status == fsm.StatusRevoked {
		return cmd, &fsm.Error{Err: fsm.ErrRevoked, Tenant: tenant}, nil
	}
	if uri == "" {
		// Per-region anchors: another region's pointer was set after the kill switch; this
		// region has none yet and stays locked out.
		return cmd, &fsm.Error{Err: fsm.ErrAnchorDeleted, Tenant: tenant}, nil
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

// resyncQuotas are the quotas of a RESYNC_TENANT event (the tenant's, its services') that differ
// here: each non-zero one of the tenant, or of a service that is here and not revoked or that the
// resync creates (creating). A resync removes no quota (an event from a governance that sends
// none leaves the region's as they are).
func (n *Node) resyncQuotas(ev *kv1.RevocationEvent, tenant string, creating []string) []fsm.SetQuota {
	var out []fsm.SetQuota
	if q := quotaOf(quota.FromProto(ev.GetQuota())); !q.IsZero() {
		if t, err := n.state.Tenant(tenant); err != nil || t.Quota != q {
			out = append(out, fsm.SetQuota{Tenant: tenant, Quota: q})
		}
	}
	for _, sq := range ev.GetServiceQuotas() {
		q := quotaOf(quota.FromProto(sq.GetQuota()))
		if q.IsZero() {
			continue
		}
		if slices.Contains(creating, sq.GetService()) {
			out = append(out, fsm.SetQuota{Tenant: tenant, Service: sq.GetService(), Quota: q})
			continue
		}
		if s, err := n.state.Service(tenant, sq.GetService()); err == nil && s.Status != fsm.StatusRevoked && s.Quota != q {
			out = append(out, fsm.SetQuota{Tenant: tenant, Service: sq.GetService(), Quota: q})
		}
	}
	return out
}

// prepareResync compares a RESYNC_TENANT event with this region's state and proposes only what is
// missing here (DESIGN.md, "Resync"): the tenant, created as CREATE_TENANT would (L2 sealed
// through the anchor, with the same anchor-wait and refusal rules) together with every listed
// service, or, for a tenant present here, each listed service that is missing (L3 sealed under the
// current L2); the policy if this region's is older; governance's lock if governance has the
// tenant locked and this region does not hold that lock; the tenant's and its services' quotas
// where they differ (resyncQuotas). What is present is left alone: a resync of a converged tenant
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
	if home := ev.GetHomeRegion(); home != "" && home != n.cfg.Region {
		// A shared tenant: its keys come from its home region (TENANT_KEYS), never made here.
		if _, err := n.state.Tenant(tenant); errors.Is(err, fsm.ErrTenantNotFound) {
			return awaitKeys(tenant, nil), nil, nil
		}
		services = nil
	}
	for _, s := range services {
		if !validName(s) {
			return cmd, &fsm.Error{Err: fsm.ErrInvalidName, Field: "service"}, nil
		}
	}
	for _, sq := range ev.GetServiceQuotas() {
		if !validName(sq.GetService()) {
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
		cmd.Quotas = n.resyncQuotas(ev, tenant, services)
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
	cmd.Quotas = n.resyncQuotas(ev, tenant, missing)
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
	case kv1.EventKind_EVENT_KIND_SET_QUOTA:
		return "set-quota"
	case kv1.EventKind_EVENT_KIND_TENANT_KEYS:
		return "tenant-keys"
	case kv1.EventKind_EVENT_KIND_SET_REGIONS:
		return "set-regions"
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
