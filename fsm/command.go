package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kryptonkms/krypton/policy"
)

// Command is one replicated change of the region's state. It is implemented
// only by the command types of this package. Every value a command needs
// (sealed blobs, versions, the time) is chosen by the leader before it
// proposes, so that Apply is deterministic.
type Command interface {
	// Type is the command's stable tag in the log encoding.
	Type() string
	// command seals the interface: a command from elsewhere would encode,
	// then fail to decode on every node and stop the region.
	command()
}

// CreateTenant creates a tenant with its L1 anchor and its first L2 version.
type CreateTenant struct {
	Tenant   string `json:"tenant"`
	Anchor   string `json:"anchor"`
	SealedL2 []byte `json:"sealed-l2"` // L2 v1, sealed by the anchor
	// OwnerKey is the tenant owner's public key (PKIX PEM), whose consent the region's own
	// rekey of the tenant needs (owner.go); empty for none.
	OwnerKey string `json:"owner-key,omitempty"`
	// Home and Regions make a shared tenant (Tenant.Home): Home one of Regions.
	Home    string   `json:"home,omitempty"`
	Regions []string `json:"regions,omitempty"`
}

// RotateTenantKey adds L2 version Version, which must be the current one
// plus one. The previous current version becomes DECRYPT_ONLY.
type RotateTenantKey struct {
	Tenant   string `json:"tenant"`
	Version  uint32 `json:"version"`
	SealedL2 []byte `json:"sealed-l2"`
}

// CreateService creates a service with its first L3 version, sealed by the
// tenant's current L2 version SealedBy.
type CreateService struct {
	Tenant   string `json:"tenant"`
	Service  string `json:"service"`
	SealedL3 []byte `json:"sealed-l3"`
	SealedBy uint32 `json:"sealed-by"`
}

// RotateServiceKey adds L3 version Version, which must be the current one
// plus one, and makes it current and ACTIVE; the previous current version
// becomes DECRYPT_ONLY (unless it is REVOKED, which is terminal).
type RotateServiceKey struct {
	Tenant   string `json:"tenant"`
	Service  string `json:"service"`
	Version  uint32 `json:"version"`
	SealedL3 []byte `json:"sealed-l3"`
	SealedBy uint32 `json:"sealed-by"`
}

// RevokeTenant revokes a tenant and so everything under it, for good.
type RevokeTenant struct {
	Tenant string `json:"tenant"`
	Reason string `json:"reason,omitempty"`
}

// RevokeService revokes a service and all its key versions, for good.
type RevokeService struct {
	Tenant  string `json:"tenant"`
	Service string `json:"service"`
	Reason  string `json:"reason,omitempty"`
}

// RevokeKeyVersion revokes one L3 version, for good.
type RevokeKeyVersion struct {
	Tenant  string `json:"tenant"`
	Service string `json:"service"`
	Version uint32 `json:"version"`
	Reason  string `json:"reason,omitempty"`
}

// LockTenant locks a tenant out, typically because its L1 denied access.
// Locking a locked tenant refreshes the reason.
type LockTenant struct {
	Tenant string `json:"tenant"`
	Reason string `json:"reason"`
}

// UnlockTenant lifts a lockout. Unlocking an active tenant does nothing.
type UnlockTenant struct {
	Tenant string `json:"tenant"`
}

// SetAnchor points a tenant at a new L1 anchor URI. If the new anchor is a
// different key, Resealed carries every L2 version re-sealed under it, in
// version order; if it is the same key under a new URI, Resealed is empty.
//
// After a DeleteAnchor it restores the pointer and lifts the kill switch;
// Resealed must then be empty (the deleted pointer cannot open the L2
// versions to reseal them), and the proposer must have checked that the
// new anchor opens every sealed L2 version. A proposer whose check failed
// proposes the event refused instead (ApplyGovernanceEvent.Refused), so
// the tenant stays locked out.
//
// Consent is the tenant owner's consent to a region's own SetAnchor (a rekey) of a tenant with
// an owner key (owner.go); a SetAnchor from governance's feed carries none.
type SetAnchor struct {
	Tenant   string   `json:"tenant"`
	Anchor   string   `json:"anchor"`
	Resealed [][]byte `json:"resealed,omitempty"`
	Consent  string   `json:"consent,omitempty"`
}

// DeleteAnchor deletes the tenant's L1 pointer: the kill switch. Every use
// of the tenant's keys is refused (ErrAnchorDeleted) until a SetAnchor sets
// a pointer again; the sealed L2 and L3 versions stay intact, so restoring
// the pointer loses nothing. It enters the revocation log.
type DeleteAnchor struct {
	Tenant string `json:"tenant"`
	Reason string `json:"reason,omitempty"`
}

// SetPolicy replaces a tenant's access policy. Policy.Revision must be
// greater than the current one (governance increments it on every change).
type SetPolicy struct {
	Tenant string        `json:"tenant"`
	Policy policy.Policy `json:"policy"`
}

// ApplyGovernanceEvent applies one event of the governance feed. Events are
// idempotent by Cursor: one at or below the region's governance cursor is a
// no-op. Event is any command but another ApplyGovernanceEvent.
//
// After is the cursor the proposer saw applied when it prepared the event:
// an event above the cursor applies only if After equals it, otherwise it
// is refused with ErrCursorMismatch and changes nothing. So events apply
// as a chain, in the order one proposer read them, even if a deposed
// leader's feed proposes concurrently: no event can jump ahead of one the
// current chain has not applied yet.
//
// Refused, if set, is the proposer's verdict that the event cannot be
// applied here (its tenant is unknown to the region, its new anchor does
// not open the sealed keys, its anchor did not answer in time): the event
// is recorded as refused and advances the cursor without running Event.
// It must be an error with one of fsm's sentinels.
type ApplyGovernanceEvent struct {
	Cursor  uint64  `json:"cursor"`
	After   uint64  `json:"after"`
	EventID string  `json:"event-id"`
	Event   Command `json:"-"`
	Refused error   `json:"-"`
}

// ResyncTenant converges a tenant with governance's view of it (a
// RESYNC_TENANT event): the proposer compares the event with the region's
// state and proposes only what is missing here. Create, if set, creates
// the tenant as CreateTenant does (the tenant must be missing); Services
// creates each service as CreateService does (each must be missing, sealed
// by the tenant's current L2 version, or version 1 with Create); Policy,
// if set, replaces a policy of a lower revision; Lock, if set, locks the
// tenant with that reason (a locked tenant's reason is replaced, as
// LockTenant does; the proposer sets Lock only when that changes
// something); Quotas sets quotas. It never unlocks,
// revives or re-points anything. It is all or nothing: if any part would
// be refused, nothing changes. With nothing set it changes nothing (the
// region already has what governance has) and still advances the cursor.
type ResyncTenant struct {
	Tenant   string          `json:"tenant"`
	Create   *CreateTenant   `json:"create,omitempty"`
	Services []CreateService `json:"services,omitempty"`
	Policy   *policy.Policy  `json:"policy,omitempty"`
	Lock     string          `json:"lock,omitempty"`
	// Quotas sets the tenant's quota (Service empty) and its services' quotas, as governance
	// holds them, each as SetQuota does (a service here, or one of Services). The proposer lists
	// only those that differ here and never a zero quota: a resync removes no quota.
	Quotas []SetQuota `json:"quotas,omitempty"`
	// Import, for a shared tenant, adds the key versions its home region made that this
	// region lacks (a TENANT_KEYS event; shared.go), after Create and before Services.
	Import *KeyImport `json:"import,omitempty"`
}

// KeyImport is the part of a shared tenant's hierarchy a region lacks: L2 versions sealed under
// L1 for this region, continuing the tenant's own (CurrentL2+1, ...), and L3 versions sealed
// under L2, each service's continuing its own (version 1 creates the service). Revoked marks a
// version governance revoked: it is imported REVOKED.
type KeyImport struct {
	L2 []ImportedL2 `json:"l2,omitempty"`
	L3 []ImportedL3 `json:"l3,omitempty"`
}

// ImportedL2 is one L2 version of a KeyImport.
type ImportedL2 struct {
	Version uint32 `json:"version"`
	Sealed  []byte `json:"sealed"`
}

// ImportedL3 is one L3 version of a KeyImport.
type ImportedL3 struct {
	Service  string `json:"service"`
	Version  uint32 `json:"version"`
	SealedBy uint32 `json:"sealed-by"`
	Sealed   []byte `json:"sealed"`
	Revoked  bool   `json:"revoked,omitempty"`
}

// SetTenantRegions records a shared tenant's new region set (a SET_REGIONS event that keeps
// this region): the home region's leader then seals its L2 versions for the regions added. For a
// tenant not here (yet), or with no Regions, it changes nothing: a region other than the home
// records a shared tenant's CREATE_TENANT and CREATE_SERVICE with it, and waits for its keys.
//
// With Home, it makes a tenant of this region (created without a home, with its own keys) shared:
// its versions stay as they are, the home makes every later one (log format 3).
type SetTenantRegions struct {
	Tenant  string   `json:"tenant"`
	Regions []string `json:"regions"`
	Home    string   `json:"home,omitempty"`
}

// RemoveTenant deletes a shared tenant from this region: every sealed L2 and L3 version, its
// services, policy and quotas (a SET_REGIONS event that removed this region from its residency).
// Its keyring entries are wiped (TenantRemoved). The revocation log keeps its entries. A tenant
// not here changes nothing.
type RemoveTenant struct {
	Tenant string `json:"tenant"`
	Reason string `json:"reason,omitempty"`
}

// SetSettings replaces the region settings.
type SetSettings struct {
	Settings Settings `json:"settings"`
}

// CompactRevocations drops from the revocation log the history entries with Seq up to Through:
// everything but the revocations in force (InForce) and the newest entry. The leader chooses
// Through (region's revocation-log compactor), so every node drops the same entries at the same
// index.
type CompactRevocations struct {
	Through uint64 `json:"through"`
}

func (CreateTenant) Type() string         { return "create-tenant" }
func (RotateTenantKey) Type() string      { return "rotate-tenant-key" }
func (CreateService) Type() string        { return "create-service" }
func (RotateServiceKey) Type() string     { return "rotate-service-key" }
func (RevokeTenant) Type() string         { return "revoke-tenant" }
func (RevokeService) Type() string        { return "revoke-service" }
func (RevokeKeyVersion) Type() string     { return "revoke-key-version" }
func (LockTenant) Type() string           { return "lock-tenant" }
func (UnlockTenant) Type() string         { return "unlock-tenant" }
func (SetAnchor) Type() string            { return "set-anchor" }
func (DeleteAnchor) Type() string         { return "delete-anchor" }
func (ApplyGovernanceEvent) Type() string { return "governance-event" }
func (SetSettings) Type() string          { return "set-settings" }
func (SetPolicy) Type() string            { return "set-policy" }
func (ResyncTenant) Type() string         { return "resync-tenant" }
func (SetTenantRegions) Type() string     { return "set-tenant-regions" }
func (RemoveTenant) Type() string         { return "remove-tenant" }
func (CompactRevocations) Type() string   { return "compact-revocations" }

func (CreateTenant) command()         {}
func (RotateTenantKey) command()      {}
func (CreateService) command()        {}
func (RotateServiceKey) command()     {}
func (RevokeTenant) command()         {}
func (RevokeService) command()        {}
func (RevokeKeyVersion) command()     {}
func (LockTenant) command()           {}
func (UnlockTenant) command()         {}
func (SetAnchor) command()            {}
func (DeleteAnchor) command()         {}
func (ApplyGovernanceEvent) command() {}
func (SetSettings) command()          {}
func (SetPolicy) command()            {}
func (ResyncTenant) command()         {}
func (SetTenantRegions) command()     {}
func (RemoveTenant) command()         {}
func (CompactRevocations) command()   {}

// newCommand returns a pointer to a zero command of the given tag.
func newCommand(tag string) Command {
	switch tag {
	case "create-tenant":
		return &CreateTenant{}
	case "rotate-tenant-key":
		return &RotateTenantKey{}
	case "create-service":
		return &CreateService{}
	case "rotate-service-key":
		return &RotateServiceKey{}
	case "revoke-tenant":
		return &RevokeTenant{}
	case "revoke-service":
		return &RevokeService{}
	case "revoke-key-version":
		return &RevokeKeyVersion{}
	case "lock-tenant":
		return &LockTenant{}
	case "unlock-tenant":
		return &UnlockTenant{}
	case "set-anchor":
		return &SetAnchor{}
	case "delete-anchor":
		return &DeleteAnchor{}
	case "governance-event":
		return &ApplyGovernanceEvent{}
	case "set-settings":
		return &SetSettings{}
	case "compact-revocations":
		return &CompactRevocations{}
	case "set-policy":
		return &SetPolicy{}
	case "set-tenant-regions":
		return &SetTenantRegions{}
	case "remove-tenant":
		return &RemoveTenant{}
	case "resync-tenant":
		return &ResyncTenant{}
	case "set-owner-key":
		return &SetOwnerKey{}
	case "set-quota":
		return &SetQuota{}
	}
	return nil
}

// deref turns the *T that newCommand returns into the T that Apply switches on.
func deref(c Command) Command {
	switch c := c.(type) {
	case *CreateTenant:
		return *c
	case *RotateTenantKey:
		return *c
	case *CreateService:
		return *c
	case *RotateServiceKey:
		return *c
	case *RevokeTenant:
		return *c
	case *RevokeService:
		return *c
	case *RevokeKeyVersion:
		return *c
	case *LockTenant:
		return *c
	case *UnlockTenant:
		return *c
	case *SetAnchor:
		return *c
	case *DeleteAnchor:
		return *c
	case *ApplyGovernanceEvent:
		return *c
	case *SetSettings:
		return *c
	case *CompactRevocations:
		return *c
	case *SetPolicy:
		return *c
	case *ResyncTenant:
		return *c
	case *SetTenantRegions:
		return *c
	case *RemoveTenant:
		return *c
	case *SetOwnerKey:
		return *c
	case *SetQuota:
		return *c
	}
	return c
}

// Entry is what the leader proposes: a command with the request id that
// makes retries idempotent and the leader's clock reading.
type Entry struct {
	// RequestID, if set, makes the entry idempotent: applying an entry whose
	// id is remembered (see Settings.DedupeWindow) returns the original
	// Result and changes nothing.
	RequestID string
	// At is the leader's clock when it proposed, in Unix nanoseconds. It is
	// the only time Apply uses.
	At      int64
	Command Command
	// Origin says who made the proposer propose the entry, for every node's audit record of it
	// (origin.go). It does not change what the entry does.
	Origin Origin
}

// EncodingVersion is the version of the log entry encoding that Encode
// writes and Decode accepts.
const EncodingVersion = 1

// MaxRequestID bounds Entry.RequestID in bytes.
const MaxRequestID = 128

type wireEntry struct {
	V         int             `json:"v"`
	Type      string          `json:"type"`
	RequestID string          `json:"request-id,omitempty"`
	At        int64           `json:"at"`
	Cmd       json.RawMessage `json:"cmd"`
	Origin    *Origin         `json:"origin,omitempty"`
}

type wireEvent struct {
	Cursor  uint64          `json:"cursor"`
	After   uint64          `json:"after"`
	EventID string          `json:"event-id"`
	Type    string          `json:"type"`
	Cmd     json.RawMessage `json:"cmd"`
	Refused *wireError      `json:"refused,omitempty"`
}

// Encode returns the log encoding of e: a JSON object with a version, the
// command's type tag and the command. It checks that the result decodes.
func Encode(e Entry) ([]byte, error) {
	if e.Command == nil {
		return nil, errors.New("fsm: encode: nil command")
	}
	cmd, err := encodeCommand(e.Command)
	if err != nil {
		return nil, err
	}
	w := wireEntry{V: EncodingVersion, Type: e.Command.Type(), RequestID: e.RequestID, At: e.At, Cmd: cmd}
	if e.Origin.Kind != "" || e.Origin.Actor != "" || e.Origin.Node != "" || len(e.Origin.Detail) > 0 {
		o := e.Origin
		w.Origin = &o
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	// An entry that does not decode would stop every node that applies it:
	// refuse it here, on the proposer, instead. Proposals are rare enough
	// for the extra decode.
	if _, err := Decode(b); err != nil {
		return nil, fmt.Errorf("fsm: encode: entry would not decode: %w", err)
	}
	return b, nil
}

func encodeCommand(c Command) (json.RawMessage, error) {
	if g, ok := c.(*ApplyGovernanceEvent); ok {
		c = *g
	}
	g, ok := c.(ApplyGovernanceEvent)
	if !ok {
		return json.Marshal(c)
	}
	if g.Event == nil {
		return nil, errors.New("fsm: encode: governance event without a command")
	}
	if _, nested := deref(g.Event).(ApplyGovernanceEvent); nested {
		return nil, errors.New("fsm: encode: nested governance event")
	}
	inner, err := json.Marshal(g.Event)
	if err != nil {
		return nil, err
	}
	w := wireEvent{Cursor: g.Cursor, After: g.After, EventID: g.EventID, Type: g.Event.Type(), Cmd: inner}
	if g.Refused != nil {
		if w.Refused, err = toWireError(g.Refused); err != nil {
			return nil, err
		}
	}
	return json.Marshal(w)
}

// Decode parses a log entry written by Encode. It refuses unknown versions,
// unknown types and unknown fields: a node that does not fully understand
// an entry must stop rather than apply part of it.
func Decode(b []byte) (Entry, error) {
	var w wireEntry
	if err := strictUnmarshal(b, &w); err != nil {
		return Entry{}, fmt.Errorf("fsm: decode entry: %w", err)
	}
	if w.V != EncodingVersion {
		return Entry{}, fmt.Errorf("fsm: decode entry: unsupported encoding version %d", w.V)
	}
	c, err := decodeCommand(w.Type, w.Cmd, true)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{RequestID: w.RequestID, At: w.At, Command: c}
	if w.Origin != nil {
		e.Origin = *w.Origin
	}
	return e, nil
}

func decodeCommand(tag string, raw json.RawMessage, outer bool) (Command, error) {
	c := newCommand(tag)
	if c == nil {
		return nil, fmt.Errorf("fsm: decode entry: unknown command type %q", tag)
	}
	if _, ok := c.(*ApplyGovernanceEvent); ok {
		if !outer {
			return nil, errors.New("fsm: decode entry: nested governance event")
		}
		var w wireEvent
		if err := strictUnmarshal(raw, &w); err != nil {
			return nil, fmt.Errorf("fsm: decode entry: %s: %w", tag, err)
		}
		inner, err := decodeCommand(w.Type, w.Cmd, false)
		if err != nil {
			return nil, err
		}
		g := ApplyGovernanceEvent{Cursor: w.Cursor, After: w.After, EventID: w.EventID, Event: inner}
		if w.Refused != nil {
			if g.Refused, err = fromWireError(w.Refused); err != nil {
				return nil, fmt.Errorf("fsm: decode entry: %s: %w", tag, err)
			}
		}
		return g, nil
	}
	if err := strictUnmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("fsm: decode entry: %s: %w", tag, err)
	}
	return deref(c), nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}
