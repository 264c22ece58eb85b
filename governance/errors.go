package governance

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors of the governance plane. Each carries its gRPC status (transport
// passes such errors through unchanged) and a stable key, so that an error
// returned by the state machine on the leader survives forwarding to a
// follower as the same sentinel (errors.Is works on both sides). None carries
// key material or echoes request bytes.
var (
	// ErrTenantNotFound is returned when a request names an unknown tenant.
	ErrTenantNotFound = newError("tenant-not-found", codes.NotFound, "governance: tenant not found")
	// ErrTenantExists is returned by CreateTenant for an existing tenant.
	ErrTenantExists = newError("tenant-exists", codes.AlreadyExists, "governance: tenant exists")
	// ErrServiceNotFound is returned when a request names a service
	// governance does not know (neither created nor reported by a region).
	ErrServiceNotFound = newError("service-not-found", codes.NotFound, "governance: service not found")
	// ErrServiceExists is returned by CreateService for an existing service.
	ErrServiceExists = newError("service-exists", codes.AlreadyExists, "governance: service exists")
	// ErrRevoked is returned when a change is refused because the tenant is
	// revoked (revocation is terminal).
	ErrRevoked = newError("revoked", codes.FailedPrecondition, "governance: tenant is revoked")
	// ErrNoAnchor is returned by UnlockTenant while the tenant's anchor is
	// deleted: set an anchor first.
	ErrNoAnchor = newError("no-anchor", codes.FailedPrecondition, "governance: tenant has no anchor (deleted); set one first")
	// ErrNotTenantRegion is returned by ResyncTenant for a region that is
	// not one of the tenant's.
	ErrNotTenantRegion = newError("not-tenant-region", codes.InvalidArgument, "governance: a named region is not one of the tenant's regions")
	// ErrRevisionMismatch is returned by SetPolicy when expected_revision is
	// not the current revision.
	ErrRevisionMismatch = newError("revision-mismatch", codes.Aborted, "governance: policy revision changed; re-read and retry")
	// ErrRequestIDReused is returned when a request_id already named a
	// different change.
	ErrRequestIDReused = newError("request-id-reused", codes.InvalidArgument, "governance: request_id reused for a different request")
	// ErrCursorAhead is returned when a cursor beyond the head of the log is
	// given (WatchRevocations, ReportCursor).
	ErrCursorAhead = newError("cursor-ahead", codes.OutOfRange, "governance: cursor is beyond the head of the log")
	// ErrInvalidCommand is returned by the state machine for a command that
	// fails its own validation (the server validates first, so this means a
	// bug or a forged entry).
	ErrInvalidCommand = newError("invalid-command", codes.InvalidArgument, "governance: invalid command")
	// ErrConsentDenied is returned by SetAnchor and SetOwnerKey when the tenant owner's consent
	// does not verify against the owner key governance holds (the handlers say why, before
	// proposing; this is the state machine's last word, where the owner key may have changed).
	ErrConsentDenied = newError("consent-denied", codes.PermissionDenied, "governance: the tenant owner's consent does not allow this change; the owner makes one with `krypton owner consent`")
	// ErrConsentUsed is returned when a consent was already used for another request.
	ErrConsentUsed = newError("consent-used", codes.PermissionDenied, "governance: this consent was already used; the owner makes a new one with `krypton owner consent`")
	// ErrNoOwnerKey is returned by SetAnchor for a tenant without an owner key.
	ErrNoOwnerKey = newError("no-owner-key", codes.FailedPrecondition, "governance: the tenant has no owner key, so its anchor cannot be moved nor a deleted anchor lifted; register the owner's key with `krypton tenant set-owner -owner-pub <file> <tenant>` (the owner makes it with `krypton owner keygen`)")
	// ErrLimit is returned when a write would exceed a size limit of the
	// state (tenants, services, inventory).
	ErrLimit = newError("limit", codes.ResourceExhausted, "governance: limit reached")
	// ErrNotOperator is returned when a node certificate calls an operator
	// RPC.
	ErrNotOperator = newError("not-operator", codes.PermissionDenied, "governance: only operators may call this")
	// ErrWrongRegion is returned when a node calls the feed for a region its
	// certificate does not name (or calls an operator RPC).
	ErrWrongRegion = newError("wrong-region", codes.PermissionDenied, "governance: the caller's certificate does not name this region")
	// ErrNotRegionVoter is returned when a region node that is not a voter of its region's Raft
	// configuration, as governance last learned it, reports for the region or follows its feed:
	// a node removed from its region is refused once governance has learned the configuration
	// that removed it.
	ErrNotRegionVoter = newError("not-region-voter", codes.PermissionDenied, "governance: this node is not a voter of its region's Raft configuration as governance last learned it, so it may not report for the region or follow its feed (a removed node stays refused; a node added lately is accepted once the region's leader has reported the new configuration)")
	// ErrReportRate is returned when a region's reports that do not advance its cursor arrive
	// faster than governance writes them (ReportCursor); retry after a second.
	ErrReportRate = newError("report-rate", codes.ResourceExhausted, "governance: this region's reports change governance's state faster than one a second; retry in a second")
	// ErrWaitTimeout is returned by Revoke and DeleteAnchor with wait when
	// the deadline passed before every region reported the event applied.
	// The event has committed; retry with the same request_id to wait again.
	ErrWaitTimeout = newError("wait-timeout", codes.DeadlineExceeded, "governance: committed, but not every region reported it applied before the deadline; retry with the same request_id to wait again")
	// ErrUnavailable is returned when no leader can be reached or the
	// serving node lost contact with it; retry (with the same request_id).
	ErrUnavailable = newError("unavailable", codes.Unavailable, "governance: no leader reachable; retry")
	// ErrSnapshotLacksRevocations is returned by Node.Restore (and by a
	// follower's install of a snapshot) when the snapshot lacks a revocation
	// of the event log: restoring it would undo a revocation, which is final.
	// The error wrapping it names what the snapshot lacks.
	ErrSnapshotLacksRevocations = newError("snapshot-lacks-revocations", codes.FailedPrecondition, "governance: the snapshot lacks revocations the event log holds; revocation is final: restore a snapshot taken after them")
	// ErrShutdown is returned by every call after Close.
	ErrShutdown = newError("shutdown", codes.Unavailable, "governance: node is shut down")
)

// Error is a governance sentinel: a stable key, a gRPC code and a fixed
// message.
type Error struct {
	key  string
	code codes.Code
	msg  string
}

func (e *Error) Error() string { return e.msg }

// GRPCStatus lets transport.ToStatus and grpc pass the error on with its own
// code.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

var errorsByKey = map[string]*Error{}

func newError(key string, code codes.Code, msg string) *Error {
	e := &Error{key: key, code: code, msg: msg}
	errorsByKey[key] = e
	return e
}

// invalid returns an InvalidArgument status naming what is wrong; msg must
// never hold request bytes.
func invalid(msg string) error { return status.Error(codes.InvalidArgument, "governance: "+msg) }
