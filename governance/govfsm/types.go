package govfsm

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/internal/owner"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Kind is the kind of a log event; the values are those of kv1.EventKind.
type Kind int32

// Event kinds.
const (
	KindRevokeTenant  = Kind(kv1.EventKind_EVENT_KIND_REVOKE_TENANT)
	KindRevokeService = Kind(kv1.EventKind_EVENT_KIND_REVOKE_SERVICE)
	KindRevokeVersion = Kind(kv1.EventKind_EVENT_KIND_REVOKE_VERSION)
	KindLockTenant    = Kind(kv1.EventKind_EVENT_KIND_LOCK_TENANT)
	KindUnlockTenant  = Kind(kv1.EventKind_EVENT_KIND_UNLOCK_TENANT)
	KindDeleteAnchor  = Kind(kv1.EventKind_EVENT_KIND_DELETE_ANCHOR)
	KindSetAnchor     = Kind(kv1.EventKind_EVENT_KIND_SET_ANCHOR)
	KindSetPolicy     = Kind(kv1.EventKind_EVENT_KIND_SET_POLICY)
	KindCreateTenant  = Kind(kv1.EventKind_EVENT_KIND_CREATE_TENANT)
	KindCreateService = Kind(kv1.EventKind_EVENT_KIND_CREATE_SERVICE)
	KindResyncTenant  = Kind(kv1.EventKind_EVENT_KIND_RESYNC_TENANT)
)

// String returns the kind in kebab case ("revoke-tenant"), as metrics and the
// audit log name it.
func (k Kind) String() string {
	switch k {
	case KindRevokeTenant:
		return "revoke-tenant"
	case KindRevokeService:
		return "revoke-service"
	case KindRevokeVersion:
		return "revoke-version"
	case KindLockTenant:
		return "lock-tenant"
	case KindUnlockTenant:
		return "unlock-tenant"
	case KindDeleteAnchor:
		return "delete-anchor"
	case KindSetAnchor:
		return "set-anchor"
	case KindSetPolicy:
		return "set-policy"
	case KindCreateTenant:
		return "create-tenant"
	case KindCreateService:
		return "create-service"
	case KindResyncTenant:
		return "resync-tenant"
	}
	return "unknown"
}

// allKinds lists every kind, for metrics.
var allKinds = []Kind{KindCreateTenant, KindCreateService, KindSetAnchor, KindDeleteAnchor, KindSetPolicy,
	KindLockTenant, KindUnlockTenant, KindRevokeTenant, KindRevokeService, KindRevokeVersion, KindResyncTenant}

// Event is one entry of the governance log. Events are immutable once
// appended; Cursor is its position (1, 2, 3, ... without gaps).
type Event struct {
	Cursor    uint64   `json:"cursor"`
	ID        string   `json:"id"`
	Kind      Kind     `json:"kind"`
	Tenant    string   `json:"tenant"`
	Service   string   `json:"service,omitempty"`
	Version   uint32   `json:"version,omitempty"`
	Time      int64    `json:"time"` // Unix nanoseconds, by the proposing node's clock, never decreasing
	Reason    string   `json:"reason,omitempty"`
	AnchorURI string   `json:"anchor,omitempty"`
	Regions   []string `json:"regions,omitempty"`
	Policy    *Policy  `json:"policy,omitempty"`
	// Services and Locked are set by RESYNC_TENANT only: the tenant's
	// services that are not revoked, and governance's lock.
	Services []string `json:"services,omitempty"`
	Locked   bool     `json:"locked,omitempty"`
	// OwnerKey is set by SET_ANCHOR: the fingerprint of the owner key that
	// consented (empty for a tenant without one, before owner keys).
	OwnerKey string `json:"owner-key,omitempty"`
}

// Proto returns the event as the API sends it.
func (e *Event) Proto() *kv1.RevocationEvent {
	if e == nil {
		return nil
	}
	out := &kv1.RevocationEvent{
		Cursor:    e.Cursor,
		EventId:   e.ID,
		Kind:      kv1.EventKind(e.Kind),
		Target:    &kv1.KeyScope{Tenant: e.Tenant, Service: e.Service, Version: e.Version},
		Time:      ts(e.Time),
		Reason:    e.Reason,
		AnchorUri: e.AnchorURI,
		Regions:   append([]string(nil), e.Regions...),
		Services:  append([]string(nil), e.Services...),
		Locked:    e.Locked,

		OwnerKeyFingerprint: e.OwnerKey,
	}
	if e.Policy != nil {
		out.Policy = e.Policy.Proto(e.Tenant)
	}
	return out
}

// Policy is a tenant's access policy (see kv1.Policy for the rules'
// meaning).
type Policy struct {
	Rules     []Rule `json:"rules,omitempty"`
	Revision  uint64 `json:"revision"`
	UpdatedAt int64  `json:"updated,omitempty"`
}

// Rule is one policy rule.
type Rule struct {
	Caller     string  `json:"caller"`
	Service    string  `json:"service"`
	Operations []int32 `json:"ops"` // kv1.Operation values, sorted, no duplicates
}

// Proto returns the policy of tenant as the API sends it.
func (p *Policy) Proto(tenant string) *kv1.Policy {
	out := &kv1.Policy{Tenant: tenant, Revision: p.Revision}
	if p.UpdatedAt != 0 {
		out.UpdatedAt = ts(p.UpdatedAt)
	}
	for _, r := range p.Rules {
		pr := &kv1.PolicyRule{Caller: r.Caller, Service: r.Service}
		for _, op := range r.Operations {
			pr.Operations = append(pr.Operations, kv1.Operation(op))
		}
		out.Rules = append(out.Rules, pr)
	}
	return out
}

func (p *Policy) clone() *Policy {
	c := &Policy{Revision: p.Revision, UpdatedAt: p.UpdatedAt}
	for _, r := range p.Rules {
		c.Rules = append(c.Rules, Rule{Caller: r.Caller, Service: r.Service, Operations: append([]int32(nil), r.Operations...)})
	}
	return c
}

// KeyRef names one key version of a tenant's service.
type KeyRef struct {
	Tenant  string `json:"t"`
	Service string `json:"s"`
	Version uint32 `json:"v"`
}

// Tenant is a copy of one tenant's state.
type Tenant struct {
	Name            string
	AnchorURI       string // empty while the anchor is deleted
	Regions         []string
	Locked          bool // by LockTenant
	Revoked         bool
	AnchorDeletedAt int64 // Unix ns; 0 unless deleted
	CreatedAt       int64
	Cursor          uint64 // last event that changed the tenant
	OwnerKey        string // the owner's public key (PKIX PEM); empty if none
}

// OwnerFingerprint names the tenant's owner key ("" if none).
func (t *Tenant) OwnerFingerprint() string {
	if t.OwnerKey == "" {
		return ""
	}
	return owner.Fingerprint(t.OwnerKey)
}

// State is the tenant's state as the API reports it.
func (t *Tenant) State() kv1.TenantState {
	switch {
	case t.Revoked:
		return kv1.TenantState_TENANT_STATE_REVOKED
	case t.Locked || t.AnchorDeletedAt != 0:
		return kv1.TenantState_TENANT_STATE_LOCKED
	}
	return kv1.TenantState_TENANT_STATE_ACTIVE
}

// Proto returns the tenant as the API sends it to operators: the anchor URI
// as anchor.Redact shows it (a pkcs11 pin-value as "xxxxx", also in a URI
// stored before pin-value was refused). The feed's events carry the URI as
// set, for the regions.
func (t *Tenant) Proto() *kv1.GovernanceTenant {
	out := &kv1.GovernanceTenant{
		Name:      t.Name,
		AnchorUri: anchor.Redact(t.AnchorURI),
		Regions:   append([]string(nil), t.Regions...),
		State:     t.State(),
		CreatedAt: ts(t.CreatedAt),
		Cursor:    t.Cursor,

		OwnerKeyFingerprint: t.OwnerFingerprint(),
	}
	if t.AnchorDeletedAt != 0 {
		out.AnchorDeletedAt = ts(t.AnchorDeletedAt)
	}
	return out
}

// Service is a copy of one service's state.
type Service struct {
	Tenant    string
	Name      string
	CreatedAt int64
	Cursor    uint64
	Revoked   bool
}

// Proto returns the service as the API sends it.
func (s *Service) Proto() *kv1.GovernanceServiceInfo {
	return &kv1.GovernanceServiceInfo{Tenant: s.Tenant, Name: s.Name, CreatedAt: ts(s.CreatedAt), Revoked: s.Revoked, Cursor: s.Cursor}
}

// RegionReport is what a region last reported.
type RegionReport struct {
	Region     string
	Cursor     uint64
	ReportedAt int64 // Unix ns; 0 if never
	// The region's Raft configuration governance last learned (0, none: not yet).
	ConfigIndex uint64
	Voters      []string
}

// Proto returns the report as the API sends it.
func (r *RegionReport) Proto() *kv1.RegionCursor {
	out := &kv1.RegionCursor{Region: r.Region, AppliedCursor: r.Cursor, ConfigurationIndex: r.ConfigIndex, Voters: r.Voters}
	if r.ReportedAt != 0 {
		out.ReportedAt = ts(r.ReportedAt)
	}
	return out
}

func ts(ns int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, ns).UTC()) }
