package govfsm

import "github.com/kryptonkms/krypton/internal/staterr"

// Errors of the governance state machine. They carry no gRPC code (governance's API maps each to
// one, as transport does for package fsm) and a stable key, so that an error the state machine
// returns on the leader survives forwarding to a follower as the same sentinel (Codec; errors.Is
// works on both sides). None carries key material or echoes request bytes. Those the region's
// state machine makes too are package staterr's, defined once there: the sentinel here keeps its
// "governance: " text, matches the shared one with errors.Is, and its key is the shared one's
// (transport's table maps them, for both planes).
var (
	// ErrTenantNotFound is returned when a request names an unknown tenant.
	ErrTenantNotFound = newShared(staterr.ErrTenantNotFound, "governance: tenant not found")
	// ErrTenantExists is returned by CreateTenant for an existing tenant.
	ErrTenantExists = newShared(staterr.ErrTenantExists, "governance: tenant exists")
	// ErrServiceNotFound is returned when a request names a service governance does not know
	// (neither created nor reported by a region).
	ErrServiceNotFound = newShared(staterr.ErrServiceNotFound, "governance: service not found")
	// ErrServiceExists is returned by CreateService for an existing service.
	ErrServiceExists = newShared(staterr.ErrServiceExists, "governance: service exists")
	// ErrRevoked is returned when a change is refused because the tenant is revoked (revocation is
	// terminal).
	ErrRevoked = newShared(staterr.ErrRevoked, "governance: tenant is revoked")
	// ErrNoAnchor is returned by UnlockTenant while the tenant's anchor is deleted: set an anchor
	// first.
	ErrNoAnchor = newError("no-anchor", "governance: tenant has no anchor (deleted); set one first")
	// ErrNotTenantRegion is returned by ResyncTenant for a region that is not one of the tenant's.
	ErrNotTenantRegion = newError("not-tenant-region", "governance: a named region is not one of the tenant's regions")
	// ErrNotShared is returned by SetTenantRegions for a tenant created without a home region
	// (each of its regions has its own keys: a region added could open none of its blobs).
	ErrNotShared = newError("not-shared", "governance: the tenant has no home region (created without -home): its regions keep separate keys, so its region set cannot change")
	// ErrNotHome is returned by PublishTenantKeys from a region other than the tenant's home.
	ErrNotHome = newError("not-home", "governance: only the tenant's home region publishes its keys")
	// ErrStaleAnchor is returned by PublishTenantKeys for an L2 sealed under an anchor its region
	// no longer has (the pointer moved meanwhile): the home region fetches the anchors again.
	ErrStaleAnchor = newError("stale-anchor", "governance: a sealed L2 was sealed under an anchor its region no longer has; fetch the tenant's anchors again (TenantAnchors) and reseal")
	// ErrRevisionMismatch is returned by SetPolicy when expected_revision is not the current
	// revision.
	ErrRevisionMismatch = newError("revision-mismatch", "governance: policy revision changed; re-read and retry")
	// ErrRequestIDReused is returned when a request_id already named a different change.
	ErrRequestIDReused = newShared(staterr.ErrRequestIDReused, "governance: request_id reused for a different request")
	// ErrCursorAhead is returned when a cursor beyond the head of the log is given
	// (WatchRevocations, ReportCursor).
	ErrCursorAhead = newError("cursor-ahead", "governance: cursor is beyond the head of the log")
	// ErrInvalidCommand is returned for a command that fails the state machine's own validation
	// (the server validates first, so this means a bug or a forged entry).
	ErrInvalidCommand = newShared(staterr.ErrInvalidCommand, "governance: invalid command")
	// ErrConsentDenied is returned by SetAnchor and SetOwnerKey when the tenant owner's consent
	// does not verify against the owner key governance holds (the handlers say why, before
	// proposing; this is the state machine's last word, where the owner key may have changed).
	ErrConsentDenied = newShared(staterr.ErrConsentDenied, "governance: the tenant owner's consent does not allow this change; the owner makes one with `krypton owner consent`")
	// ErrConsentUsed is returned when a consent was already used for another request.
	ErrConsentUsed = newShared(staterr.ErrConsentUsed, "governance: this consent was already used; the owner makes a new one with `krypton owner consent`")
	// ErrNoOwnerKey is returned by SetAnchor for a tenant without an owner key.
	ErrNoOwnerKey = newError("no-owner-key", "governance: the tenant has no owner key, so its anchor cannot be moved nor a deleted anchor lifted; register the owner's key with `krypton tenant set-owner -owner-pub <file> <tenant>` (the owner makes it with `krypton owner keygen`)")
	// ErrLimit is returned when a write would exceed a size limit of the state (tenants, services,
	// inventory).
	ErrLimit = newError("limit", "governance: limit reached")
	// ErrNotRegionVoter is returned when a region node that is not a voter of its region's Raft
	// configuration, as governance last learned it, reports for the region or follows its feed: a
	// node removed from its region is refused once governance has learned the configuration that
	// removed it.
	ErrNotRegionVoter = newError("not-region-voter", "governance: this node is not a voter of its region's Raft configuration as governance last learned it, so it may not report for the region or follow its feed (a removed node stays refused; a node added lately is accepted once the region's leader has reported the new configuration)")
	// ErrSnapshotLacksRevocations is returned when a snapshot to restore lacks a revocation of the
	// event log: restoring it would undo a revocation, which is final. The error wrapping it names
	// what the snapshot lacks.
	ErrSnapshotLacksRevocations = newError("snapshot-lacks-revocations", "governance: the snapshot lacks revocations the event log holds; revocation is final: restore a snapshot taken after them")
)

// Error is a sentinel of the state machine: a stable key and a fixed message, and for a shared
// error the staterr sentinel it stands for.
type Error struct {
	key    string
	msg    string
	shared *staterr.Sentinel // nil for governance's own errors
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the staterr sentinel of a shared error (so errors.Is matches the shared error),
// and nil for governance's own.
func (e *Error) Unwrap() error {
	if e.shared == nil {
		return nil
	}
	return e.shared
}

// Errors lists governance's own sentinels, for the API's table of codes (which must map each);
// the shared ones (package staterr) are mapped by transport's table.
func Errors() []*Error { return append([]*Error(nil), errorList...) }

var (
	errorsByKey = map[string]*Error{}
	errorList   []*Error
)

func newError(key, msg string) *Error {
	e := &Error{key: key, msg: msg}
	errorsByKey[key] = e
	errorList = append(errorList, e)
	return e
}

// newShared is governance's sentinel for a shared error: the shared key, governance's own text.
func newShared(shared *staterr.Error, msg string) *Error {
	e := &Error{key: shared.Key(), msg: msg, shared: staterr.Own(shared, msg)}
	errorsByKey[e.key] = e
	return e
}
