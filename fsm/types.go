package fsm

import (
	"fmt"
	"time"
)

// Status is the state of a tenant, service, L2 or L3 key version.
type Status uint8

const (
	// StatusActive: usable for everything. The zero value is invalid so
	// that a forgotten field is caught.
	StatusActive Status = iota + 1
	// StatusDecryptOnly: a rotated-out key version; it unwraps, never wraps.
	StatusDecryptOnly
	// StatusLocked: a tenant locked out after its L1 anchor denied access.
	// Reversible by UnlockTenant.
	StatusLocked
	// StatusRevoked: terminal for a tenant, service or key version.
	StatusRevoked
)

var statusNames = [...]string{
	StatusActive:      "ACTIVE",
	StatusDecryptOnly: "DECRYPT_ONLY",
	StatusLocked:      "LOCKED",
	StatusRevoked:     "REVOKED",
}

func (s Status) String() string {
	if int(s) < len(statusNames) && statusNames[s] != "" {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// MarshalText encodes the status by name, so snapshots stay readable and do
// not depend on the constants' order.
func (s Status) MarshalText() ([]byte, error) {
	if int(s) >= len(statusNames) || statusNames[s] == "" {
		return nil, fmt.Errorf("fsm: invalid status %d", uint8(s))
	}
	return []byte(statusNames[s]), nil
}

// UnmarshalText decodes a status name.
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if n != "" && n == string(b) {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("fsm: invalid status %q", b)
}

// Tenant is a tenant as the region knows it. Times are Unix nanoseconds from
// the leader's clock, carried in the command that made the change.
type Tenant struct {
	Name   string `json:"name"`
	Anchor string `json:"anchor"` // L1 anchor URI
	// Status is StatusActive, StatusLocked or StatusRevoked.
	Status     Status `json:"status"`
	LockReason string `json:"lock-reason,omitempty"`
	// AnchorDeleted is the governance kill switch: the tenant's L1 pointer
	// was deleted (Anchor is then empty), so nothing of this tenant may be
	// used until a SetAnchor points it at an anchor that opens its sealed
	// L2 versions again. The sealed blobs stay as they were.
	AnchorDeleted bool   `json:"anchor-deleted,omitempty"`
	CurrentL2     uint32 `json:"current-l2"`
	CreatedAt     int64  `json:"created-at"`
	LockedAt      int64  `json:"locked-at,omitempty"`
	RevokedAt     int64  `json:"revoked-at,omitempty"`
	// L2 lists the tenant key versions, oldest first; L2[i].Version == i+1.
	L2 []L2Version `json:"l2"`
	// Quota is the tenant's quota on every node (SetQuota); zero: none.
	Quota Quota `json:"quota,omitzero"`
	// Home is a shared tenant's home region, whose leader makes every key version; the other
	// regions of Regions import them sealed (shared.go). Empty: a tenant of this region alone.
	Home    string   `json:"home,omitempty"`
	Regions []string `json:"regions,omitempty"`
}

// Shared reports whether t is a shared tenant (one key hierarchy across its regions).
func (t Tenant) Shared() bool { return t.Home != "" }

// L2Version is one version of a tenant key, sealed by the tenant's L1.
type L2Version struct {
	Version uint32 `json:"version"`
	Sealed  []byte `json:"sealed"` // sealed by L1; never plaintext
	// Status is StatusActive for the current version, StatusDecryptOnly for
	// older ones (they still open the L3 versions they sealed).
	Status    Status `json:"status"`
	CreatedAt int64  `json:"created-at"`
}

// Service is a service of a tenant.
type Service struct {
	Tenant    string `json:"tenant"`
	Name      string `json:"name"`
	Status    Status `json:"status"` // StatusActive or StatusRevoked
	Current   uint32 `json:"current"`
	CreatedAt int64  `json:"created-at"`
	RevokedAt int64  `json:"revoked-at,omitempty"`
	// Quota is the service's quota on every node (SetQuota), on top of its tenant's; zero: none.
	Quota Quota `json:"quota,omitzero"`
}

// KeyVersion is one version of a service key (L3), sealed by an L2 version.
// Its Status is its own: a version of a revoked service or tenant keeps the
// status it had, and Usable is the authority on whether it may be used.
// State.DescribeService gives the view a client sees (every version of a
// revoked service or tenant REVOKED).
type KeyVersion struct {
	Tenant    string `json:"tenant"`
	Service   string `json:"service"`
	Version   uint32 `json:"version"`
	Sealed    []byte `json:"sealed"`    // sealed by L2; never plaintext
	SealedBy  uint32 `json:"sealed-by"` // the L2 version that sealed it
	Status    Status `json:"status"`    // ACTIVE, DECRYPT_ONLY or REVOKED
	CreatedAt int64  `json:"created-at"`
	RotatedAt int64  `json:"rotated-at,omitempty"` // when it became DECRYPT_ONLY
	RevokedAt int64  `json:"revoked-at,omitempty"`
}

// RevocationKind says what a revocation log entry revoked.
type RevocationKind string

// Revocation kinds.
const (
	RevokedTenant     RevocationKind = "tenant"
	RevokedService    RevocationKind = "service"
	RevokedKeyVersion RevocationKind = "key-version"
	RevokedAnchor     RevocationKind = "anchor-deleted"
)

// Kinds of the other governance events the log records (see Revocation).
// They are not revocations; RevocationKind.IsRevocation tells them apart.
const (
	EventTenantCreated  RevocationKind = "tenant-created"
	EventServiceCreated RevocationKind = "service-created"
	EventLocked         RevocationKind = "locked"
	EventUnlocked       RevocationKind = "unlocked"
	EventAnchorSet      RevocationKind = "anchor-set"
	EventPolicySet      RevocationKind = "policy-set"
	EventTenantResynced RevocationKind = "tenant-resynced"
	EventQuotaSet       RevocationKind = "quota-set"
	EventRegionsSet     RevocationKind = "regions-set"
	EventTenantRemoved  RevocationKind = "tenant-removed"
)

// IsRevocation reports whether k revokes something or deletes an anchor,
// rather than recording another governance event.
func (k RevocationKind) IsRevocation() bool {
	switch k {
	case RevokedTenant, RevokedService, RevokedKeyVersion, RevokedAnchor:
		return true
	}
	return false
}

// eventKind is the log kind of a governance event's command.
func eventKind(c Command) RevocationKind {
	switch c.(type) {
	case RevokeTenant:
		return RevokedTenant
	case RevokeService:
		return RevokedService
	case RevokeKeyVersion:
		return RevokedKeyVersion
	case DeleteAnchor:
		return RevokedAnchor
	case CreateTenant:
		return EventTenantCreated
	case CreateService:
		return EventServiceCreated
	case LockTenant:
		return EventLocked
	case UnlockTenant:
		return EventUnlocked
	case SetAnchor:
		return EventAnchorSet
	case SetPolicy:
		return EventPolicySet
	case ResyncTenant:
		return EventTenantResynced
	case SetQuota:
		return EventQuotaSet
	case SetTenantRegions:
		return EventRegionsSet
	case RemoveTenant:
		return EventTenantRemoved
	}
	return RevocationKind(c.Type())
}

// Revocation is one entry of the region's revocation log. The log records
// every revocation and anchor deletion (local or from governance), and every
// other governance event the region applied (kinds Event*), refused ones
// included (Error says why), so that it can be checked against governance's
// own log: one entry per cursor, in cursor order.
type Revocation struct {
	Seq     uint64         `json:"seq"`   // 1, 2, 3, ... in log order
	Index   uint64         `json:"index"` // the Raft log index that applied it
	Kind    RevocationKind `json:"kind"`
	Tenant  string         `json:"tenant"`
	Service string         `json:"service,omitempty"`
	Version uint32         `json:"version,omitempty"`
	Reason  string         `json:"reason,omitempty"`
	// The source: a local operator request, or a governance event.
	RequestID string `json:"request-id,omitempty"`
	Cursor    uint64 `json:"cursor,omitempty"`
	EventID   string `json:"event-id,omitempty"`
	At        int64  `json:"at"`
	// Error is the stable code of the refusal (see fsm's codes) when a
	// governance event was refused: it advanced the cursor, changed nothing.
	Error string `json:"error,omitempty"`
}

// Settings are region settings replicated through the log so that every node
// agrees on them.
type Settings struct {
	// LeaseDuration is how long a node may serve after its last contact with
	// the leader.
	LeaseDuration time.Duration `json:"lease-duration"`
	// AnchorCheckPeriod is how often the leader checks each tenant's L1.
	AnchorCheckPeriod time.Duration `json:"anchor-check-period"`
	// AnchorGracePeriod is how long transient L1 failures are tolerated
	// before the tenant is locked out; 0 fails closed at the first one.
	AnchorGracePeriod time.Duration `json:"anchor-grace-period"`
	// DedupeWindow is how many request ids (the most recent, by log index)
	// are remembered for idempotent retries.
	DedupeWindow int `json:"dedupe-window"`
}

// DefaultSettings returns the settings of a new region.
func DefaultSettings() Settings {
	return Settings{
		LeaseDuration:     5 * time.Second,
		AnchorCheckPeriod: 30 * time.Second,
		AnchorGracePeriod: 5 * time.Minute,
		DedupeWindow:      10000,
	}
}

// MaxDedupeWindow bounds Settings.DedupeWindow.
const MaxDedupeWindow = 1 << 20

// Validate returns an error naming the first invalid field.
func (s Settings) Validate() error {
	switch {
	case s.LeaseDuration <= 0:
		return invalid(ErrInvalidCommand, "lease-duration")
	case s.AnchorCheckPeriod <= 0:
		return invalid(ErrInvalidCommand, "anchor-check-period")
	case s.AnchorGracePeriod < 0:
		return invalid(ErrInvalidCommand, "anchor-grace-period")
	case s.DedupeWindow < 1 || s.DedupeWindow > MaxDedupeWindow:
		return invalid(ErrInvalidCommand, "dedupe-window")
	}
	return nil
}

// Result is what an applied command returns.
type Result struct {
	Index   uint64 `json:"index"` // the log index that applied the command
	Tenant  string `json:"tenant,omitempty"`
	Service string `json:"service,omitempty"`
	Version uint32 `json:"version,omitempty"` // the new or affected version
	// Seq is the revocation log sequence number of a revocation.
	Seq uint64 `json:"seq,omitempty"`
	// Duplicate is set when the request id was already applied: the result
	// is the original one and nothing was applied again.
	Duplicate bool `json:"duplicate,omitempty"`
	// Cursor is the governance cursor after an ApplyGovernanceEvent.
	Cursor uint64 `json:"cursor,omitempty"`
	// Skipped is set when a governance event was at or below the cursor and
	// so was a no-op.
	Skipped bool `json:"skipped,omitempty"`
	// EventErr is the refusal of a governance event's command. The cursor
	// advances anyway: a refused event (a tenant this region never had, a
	// second revocation) must not stall the feed.
	EventErr error `json:"-"`
}

// Op is what Usable checks a key version for.
type Op uint8

const (
	// OpWrap needs an ACTIVE version; version 0 means the current one.
	OpWrap Op = iota + 1
	// OpUnwrap needs an ACTIVE or DECRYPT_ONLY version, named explicitly.
	OpUnwrap
)

// ChangeKind says what an applied command changed.
type ChangeKind uint8

// Change kinds. The region wipes keyring entries on TenantRevoked,
// ServiceRevoked, KeyVersionRevoked, TenantLocked and AnchorDeleted,
// recompiles a tenant's policy on PolicySet, and rebuilds from scratch on
// Restored. AnchorSet after AnchorDeleted lifts the kill switch.
const (
	TenantCreated ChangeKind = iota + 1
	TenantKeyRotated
	ServiceCreated
	ServiceKeyRotated
	TenantRevoked
	ServiceRevoked
	KeyVersionRevoked
	TenantLocked
	TenantUnlocked
	AnchorSet
	AnchorDeleted
	SettingsChanged
	// Restored: the whole state was replaced from a snapshot.
	Restored
	// PolicySet: a tenant's access policy was replaced.
	PolicySet
	// OwnerKeySet: a tenant's owner key was registered or replaced (State.OwnerKey has it).
	OwnerKeySet
	// QuotaSet: a tenant's (Service empty) or a service's quota was set.
	QuotaSet
	// TenantRemoved: a shared tenant left this region's residency; everything of it is gone.
	TenantRemoved
	// KeysImported: a shared tenant's key versions made in its home region were imported.
	KeysImported
)

var changeNames = [...]string{
	TenantCreated:     "tenant-created",
	TenantKeyRotated:  "tenant-key-rotated",
	ServiceCreated:    "service-created",
	ServiceKeyRotated: "service-key-rotated",
	TenantRevoked:     "tenant-revoked",
	ServiceRevoked:    "service-revoked",
	KeyVersionRevoked: "key-version-revoked",
	TenantLocked:      "tenant-locked",
	TenantUnlocked:    "tenant-unlocked",
	AnchorSet:         "anchor-set",
	AnchorDeleted:     "anchor-deleted",
	SettingsChanged:   "settings-changed",
	Restored:          "restored",
	PolicySet:         "policy-set",
	OwnerKeySet:       "owner-key-set",
	QuotaSet:          "quota-set",
	TenantRemoved:     "tenant-removed",
	KeysImported:      "keys-imported",
}

func (k ChangeKind) String() string {
	if int(k) < len(changeNames) && changeNames[k] != "" {
		return changeNames[k]
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// Change describes one applied change, for Options.OnChange.
type Change struct {
	Index   uint64
	Kind    ChangeKind
	Tenant  string
	Service string
	Version uint32 // the L2 version for tenant changes, L3 for service ones
	Reason  string
}
