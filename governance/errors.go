package governance

import (
	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/transport"
)

// Errors of governance's API and node (the state machine's own are package govfsm's, mapped to
// codes by fsmCodes). Each carries its gRPC status (transport passes such errors through
// unchanged). None carries key material or echoes request bytes.
var (
	// ErrNotOperator is returned when a node certificate calls an operator RPC.
	ErrNotOperator = newError(codes.PermissionDenied, "governance: only operators may call this")
	// ErrWrongRegion is returned when a node calls the feed for a region its certificate does not
	// name (or calls an operator RPC).
	ErrWrongRegion = newError(codes.PermissionDenied, "governance: the caller's certificate does not name this region")
	// ErrReportRate is returned when a region's reports that do not advance its cursor arrive
	// faster than governance writes them (ReportCursor); retry after a second.
	ErrReportRate = newError(codes.ResourceExhausted, "governance: this region's reports change governance's state faster than one a second; retry in a second")
	// ErrWaitTimeout is returned by Revoke and DeleteAnchor with wait when the deadline passed
	// before every region reported the event applied. The event has committed; retry with the same
	// request_id to wait again.
	ErrWaitTimeout = newError(codes.DeadlineExceeded, "governance: committed, but not every region reported it applied before the deadline; retry with the same request_id to wait again")
	// ErrUnavailable is returned when no leader can be reached or the serving node lost contact
	// with it; retry (with the same request_id).
	ErrUnavailable = newError(codes.Unavailable, "governance: no leader reachable; retry")
	// ErrShutdown is returned by every call after Close.
	ErrShutdown = newError(codes.Unavailable, "governance: node is shut down")
)

// newError is a sentinel of governance's API: a gRPC code and a fixed message (transport's
// CodedError, as region's are).
func newError(code codes.Code, msg string) *transport.CodedError { return transport.Coded(code, msg) }

// fsmCodes is the code of each of governance's own state-machine errors (package govfsm), as
// transport's table is for package fsm's: the server's error translation
// (transport.ServerConfig.Errors) sends the sentinel's fixed message under it.
// TestEveryStateMachineErrorHasACode holds it complete. The errors both state machines make
// (package staterr: tenant not found, revoked, ...) are mapped once, by transport's own table,
// with governance's text.
var fsmCodes = []transport.ErrorRow{
	{Err: govfsm.ErrNoAnchor, Code: codes.FailedPrecondition},
	{Err: govfsm.ErrNotTenantRegion, Code: codes.InvalidArgument},
	{Err: govfsm.ErrNotShared, Code: codes.FailedPrecondition},
	{Err: govfsm.ErrNotHome, Code: codes.PermissionDenied},
	{Err: govfsm.ErrStaleAnchor, Code: codes.Aborted},
	{Err: govfsm.ErrRevisionMismatch, Code: codes.Aborted},
	{Err: govfsm.ErrCursorAhead, Code: codes.OutOfRange},
	{Err: govfsm.ErrNoOwnerKey, Code: codes.FailedPrecondition},
	{Err: govfsm.ErrLimit, Code: codes.ResourceExhausted},
	{Err: govfsm.ErrNotRegionVoter, Code: codes.PermissionDenied},
	{Err: govfsm.ErrSnapshotLacksRevocations, Code: codes.FailedPrecondition},
}

// invalid returns an InvalidArgument status naming what is wrong; msg must never hold request
// bytes.
func invalid(msg string) error { return transport.Invalid("governance: " + msg) }
