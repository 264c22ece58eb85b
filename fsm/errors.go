package fsm

import (
	"errors"
	"strconv"
	"strings"

	"github.com/kryptonkms/krypton/internal/staterr"
	"github.com/kryptonkms/krypton/wrap"
)

// Sentinel errors. Apply, the queries and Usable return these, bare (Usable)
// or inside an *Error that names the subject (everything else): test with
// errors.Is. Each has a stable code (see codes) so that a response forwarded
// between nodes decodes to the same sentinel. Those governance's state
// machine makes too are package staterr's, defined once there: fsm's own
// sentinel keeps its "fsm: " text and matches the shared one with errors.Is
// (and its code is the shared one's key).
var (
	// ErrTenantExists is returned when CreateTenant names a tenant that
	// exists or existed: revoked tenants stay as tombstones and their names
	// are never reused.
	ErrTenantExists error = staterr.Own(staterr.ErrTenantExists, "fsm: tenant exists")
	// ErrTenantNotFound is returned when a command or query names an unknown
	// tenant.
	ErrTenantNotFound error = staterr.Own(staterr.ErrTenantNotFound, "fsm: tenant not found")
	// ErrServiceExists is returned when CreateService names a service that
	// exists or existed in the tenant.
	ErrServiceExists error = staterr.Own(staterr.ErrServiceExists, "fsm: service exists")
	// ErrServiceNotFound is returned when a command or query names an
	// unknown service.
	ErrServiceNotFound error = staterr.Own(staterr.ErrServiceNotFound, "fsm: service not found")
	// ErrVersionNotFound is returned when a key version does not exist (or
	// when an unwrap asks for version 0, which only a wrap may use).
	ErrVersionNotFound = errors.New("fsm: key version not found")
	// ErrRevoked is returned when the tenant, service or key version is
	// revoked. Revocation is terminal.
	ErrRevoked error = staterr.Own(staterr.ErrRevoked, "fsm: revoked")
	// ErrLocked is returned when the tenant is locked out (its L1 anchor
	// denied access) and the operation needs it unlocked.
	ErrLocked = errors.New("fsm: tenant locked")
	// ErrAnchorDeleted is returned when the tenant's L1 anchor pointer was
	// deleted (the governance kill switch), until a SetAnchor restores it.
	ErrAnchorDeleted = errors.New("fsm: anchor deleted")
	// ErrDecryptOnly is returned by Usable when a wrap names a key version
	// that has been rotated out and may only unwrap.
	ErrDecryptOnly = errors.New("fsm: key version is decrypt-only")
	// ErrBadVersion is returned when a rotation does not carry exactly the
	// next version, or a blob claims to be sealed by an L2 version other
	// than the tenant's current one.
	ErrBadVersion = errors.New("fsm: unexpected key version")
	// ErrInvalidName is returned when a tenant or service name is refused
	// by wrap.ValidateName (1-64 bytes, [a-z0-9] then [a-z0-9._-]). The
	// *Error that carries it also matches wrap.ErrInvalidName.
	ErrInvalidName = errors.New("fsm: invalid name")
	// ErrInvalidCommand is returned when a command is malformed: a missing
	// or oversized blob, a bad anchor URI, bad settings, a nested governance
	// event, an oversized request id.
	ErrInvalidCommand error = staterr.Own(staterr.ErrInvalidCommand, "fsm: invalid command")
	// ErrRequestIDReused is returned when a request id that is still
	// remembered is reused for a different kind of command.
	ErrRequestIDReused error = staterr.Own(staterr.ErrRequestIDReused, "fsm: request id reused for a different command")
	// ErrCursorMismatch is returned when a governance event's After is not
	// the region's governance cursor: the proposer's view is stale (another
	// feed applied events meanwhile). Nothing changed; re-read the cursor.
	ErrCursorMismatch = errors.New("fsm: governance cursor moved")
	// ErrAnchorMismatch records a SetAnchor refused because the new anchor
	// does not open the tenant's sealed L2 versions.
	ErrAnchorMismatch = errors.New("fsm: anchor does not open the tenant's sealed keys")
	// ErrAnchorUnavailable records a governance event refused because the
	// tenant's anchor did not answer while the region prepared it.
	ErrAnchorUnavailable = errors.New("fsm: anchor unavailable")
	// ErrConsentDenied is returned when a region's own rekey or owner-key change of a tenant
	// with an owner key does not carry a consent by that key for exactly this change (tenant,
	// operation, anchor or new key, region, request id), valid at the entry's time.
	ErrConsentDenied error = staterr.Own(staterr.ErrConsentDenied, "fsm: the tenant owner's consent does not allow this change; the owner makes one with `krypton owner consent`")
	// ErrConsentUsed is returned when the consent was already applied (a consent is used once).
	ErrConsentUsed error = staterr.Own(staterr.ErrConsentUsed, "fsm: this consent was already used; the owner makes a new one with `krypton owner consent`")
)

// codes maps each sentinel to its stable wire code. Codes never change
// meaning; add new ones at the end. A shared error's code is its staterr key,
// which governance's state machine sends for the same refusal.
var codes = []struct {
	err  error
	code string
}{
	{ErrTenantExists, staterr.ErrTenantExists.Key()},
	{ErrTenantNotFound, staterr.ErrTenantNotFound.Key()},
	{ErrServiceExists, staterr.ErrServiceExists.Key()},
	{ErrServiceNotFound, staterr.ErrServiceNotFound.Key()},
	{ErrVersionNotFound, "version-not-found"},
	{ErrRevoked, staterr.ErrRevoked.Key()},
	{ErrLocked, "locked"},
	{ErrAnchorDeleted, "anchor-deleted"},
	{ErrDecryptOnly, "decrypt-only"},
	{ErrBadVersion, "bad-version"},
	{ErrInvalidName, "invalid-name"},
	{ErrInvalidCommand, staterr.ErrInvalidCommand.Key()},
	{ErrRequestIDReused, staterr.ErrRequestIDReused.Key()},
	{ErrCursorMismatch, "cursor-mismatch"},
	{ErrAnchorMismatch, "anchor-mismatch"},
	{ErrAnchorUnavailable, "anchor-unavailable"},
	{ErrConsentDenied, staterr.ErrConsentDenied.Key()},
	{ErrConsentUsed, staterr.ErrConsentUsed.Key()},
}

// codeOf returns the wire code of err's sentinel, or "" if it has none.
func codeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// sentinelOf returns the sentinel for a wire code, or nil.
func sentinelOf(code string) error {
	for _, c := range codes {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

// Error is a refusal: one of the sentinels above and what it concerns. It
// never carries key material, and never echoes an invalid name (which may be
// arbitrary bytes); Field then says which input was bad.
type Error struct {
	Err     error  // one of the sentinels
	Tenant  string // the tenant concerned, if any
	Service string // the service concerned, if any
	Version uint32 // the key version concerned, if any
	Field   string // the offending input, for ErrInvalidName and ErrInvalidCommand
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	sep := " ("
	add := func(k, v string) {
		b.WriteString(sep)
		b.WriteString(k)
		b.WriteString(" ")
		b.WriteString(v)
		sep = ", "
	}
	if e.Tenant != "" {
		add("tenant", strconv.Quote(e.Tenant))
	}
	if e.Service != "" {
		add("service", strconv.Quote(e.Service))
	}
	if e.Version != 0 {
		add("version", strconv.FormatUint(uint64(e.Version), 10))
	}
	if e.Field != "" {
		add("field", e.Field)
	}
	if sep == ", " {
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the sentinel. An ErrInvalidName refusal also matches
// wrap.ErrInvalidName, the one definition of a valid name, so that callers
// can map both with one rule.
func (e *Error) Unwrap() []error {
	if e.Err == ErrInvalidName {
		return []error{e.Err, wrap.ErrInvalidName}
	}
	return []error{e.Err}
}

// refuse builds a refusal. Queries take names unvalidated, so a name that is
// not valid is left out rather than echoed (it may be arbitrary bytes).
func refuse(err error, tenant, service string, version uint32) *Error {
	if tenant != "" && !validName(tenant) {
		tenant = ""
	}
	if service != "" && !validName(service) {
		service = ""
	}
	return &Error{Err: err, Tenant: tenant, Service: service, Version: version}
}

func invalid(err error, field string) *Error {
	return &Error{Err: err, Field: field}
}
