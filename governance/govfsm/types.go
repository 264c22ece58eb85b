package govfsm

import (
	"github.com/kryptonkms/krypton/internal/owner"
)

// Kind is the kind of a log event; the values are those of kv1.EventKind (governance's
// TestKindsAreTheWireKinds holds them to it: this package links no API code).
type Kind int32

// Event kinds.
const (
	KindRevokeTenant  Kind = 1
	KindRevokeService Kind = 2
	KindRevokeVersion Kind = 3
	KindLockTenant    Kind = 4
	KindUnlockTenant  Kind = 5
	KindDeleteAnchor  Kind = 6
	KindSetAnchor     Kind = 7
	KindSetPolicy     Kind = 8
	KindCreateTenant  Kind = 9
	KindCreateService Kind = 10
	KindResyncTenant  Kind = 11
	KindSetQuota      Kind = 12
	KindTenantKeys    Kind = 13
	KindSetRegions    Kind = 14
)

// String returns the kind in kebab case ("revoke-tenant"), as metrics and the audit log name it.
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
	case KindSetQuota:
		return "set-quota"
	case KindTenantKeys:
		return "tenant-keys"
	case KindSetRegions:
		return "set-regions"
	}
	return "unknown"
}

// AllKinds lists every kind, for metrics.
var AllKinds = []Kind{KindCreateTenant, KindCreateService, KindSetAnchor, KindDeleteAnchor, KindSetPolicy,
	KindLockTenant, KindUnlockTenant, KindRevokeTenant, KindRevokeService, KindRevokeVersion, KindResyncTenant, KindSetQuota, KindTenantKeys, KindSetRegions}

// Event is one entry of the governance log. Events are immutable once appended; Cursor is its
// position (1, 2, 3, ... without gaps).
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
	// Services and Locked are set by RESYNC_TENANT only: the tenant's services that are not
	// revoked, and governance's lock.
	Services []string `json:"services,omitempty"`
	Locked   bool     `json:"locked,omitempty"`
	// OwnerKey is set by SET_ANCHOR: the fingerprint of the owner key that consented (empty for a
	// tenant without one, before owner keys).
	OwnerKey string `json:"owner-key,omitempty"`
	// Quota is set by SET_QUOTA: the tenant's (Service empty) or the service's new quota; nil
	// removes it. RESYNC_TENANT sets it to the tenant's quota (nil: none).
	Quota *Quota `json:"quota,omitempty"`
	// ServiceQuotas is set by RESYNC_TENANT only: the quotas of the tenant's services that have
	// one, sorted by service.
	ServiceQuotas []ServiceQuota `json:"service-quotas,omitempty"`
	// Home is set for a shared tenant's CREATE_TENANT, TENANT_KEYS and SET_REGIONS: the region
	// that makes its keys. Keys (TENANT_KEYS) is the tenant's sealed hierarchy as governance holds
	// it then, Revoked the key versions governance revoked; Removed (SET_REGIONS) the regions
	// taken out of the set, which wipe the tenant.
	Home    string      `json:"home,omitempty"`
	Keys    *TenantKeys `json:"keys,omitempty"`
	Revoked []KeyRef    `json:"revoked-versions,omitempty"`
	Removed []string    `json:"removed,omitempty"`
	// RegionAnchors is the tenant's per-region anchors (region -> URI) when the event was made, on
	// every event that carries AnchorURI (the tenant's anchor for the regions not named). The feed
	// sends each region only its own pointer, as AnchorURI (governance's eventForRegion).
	RegionAnchors map[string]string `json:"region-anchors,omitempty"`
}

// ServiceQuota is one service's quota, in a RESYNC_TENANT event.
type ServiceQuota struct {
	Service string `json:"service"`
	Quota   Quota  `json:"quota"`
}

// TenantKeys is a shared tenant's sealed key hierarchy, as its home region published it:
// governance stores and forwards it and can open none of it. L2 holds each L2 version sealed
// under L1 once per region of the tenant (bound to that region), by region then version; L3 each
// service key version sealed under an L2 version, by service then version.
type TenantKeys struct {
	L2 []SealedL2 `json:"l2,omitempty"`
	L3 []SealedL3 `json:"l3,omitempty"`
}

// SealedL2 is one L2 version sealed under L1 for one region.
type SealedL2 struct {
	Region  string `json:"r"`
	Version uint32 `json:"v"`
	Sealed  []byte `json:"b"`
	// Anchor is, in a publish-keys command only, the anchor URI the home region sealed it under:
	// a blob sealed under an anchor its region no longer has is refused (ErrStaleAnchor). Never
	// stored.
	Anchor string `json:"a,omitempty"`
}

// Floor is a region's own newest versions of a tenant made shared: its L2 version and each
// service's key version. The home region numbers the shared versions above the highest.
type Floor struct {
	L2       uint32            `json:"l2"`
	Services map[string]uint32 `json:"s,omitempty"`
}

// SealedL3 is one L3 version sealed under L2 version SealedBy.
type SealedL3 struct {
	Service  string `json:"s"`
	Version  uint32 `json:"v"`
	SealedBy uint32 `json:"by"`
	Sealed   []byte `json:"b"`
}

// Quota is a tenant's or a service's quota on every node of its regions (the region's fsm.Quota:
// rate in requests/s, burst, calls in flight; 0 is unlimited).
type Quota struct {
	Rate        uint32 `json:"rate,omitempty"`
	Burst       uint32 `json:"burst,omitempty"`
	Concurrency uint32 `json:"concurrency,omitempty"`
}

// Bounds of a quota's fields, the region's (fsm.MaxQuota*).
const (
	MaxQuotaRate        = 10_000_000
	MaxQuotaBurst       = 10_000_000
	MaxQuotaConcurrency = 1_000_000
)

// ValidQuota reports whether q is within bounds (a burst needs a rate).
func ValidQuota(q *Quota) bool {
	return q == nil || q.Rate <= MaxQuotaRate && q.Burst <= MaxQuotaBurst && q.Concurrency <= MaxQuotaConcurrency && (q.Burst == 0 || q.Rate != 0)
}

// Policy is a tenant's access policy (see kv1.Policy for the rules' meaning).
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
	Quota           *Quota // nil if none
	Home            string // a shared tenant's home region; empty: each region has its own keys
	// RegionAnchors are the per-region anchors (region -> URI); a region not named uses
	// AnchorURI. Each URI is empty while the anchor is deleted.
	RegionAnchors map[string]string
	// FloorPending: a tenant made shared, the regions yet to report their own versions.
	FloorPending []string
}

// OwnerFingerprint names the tenant's owner key ("" if none).
func (t *Tenant) OwnerFingerprint() string {
	if t.OwnerKey == "" {
		return ""
	}
	return owner.Fingerprint(t.OwnerKey)
}

// Service is a copy of one service's state.
type Service struct {
	Tenant    string
	Name      string
	CreatedAt int64
	Cursor    uint64
	Revoked   bool
	Quota     *Quota // nil if none
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
