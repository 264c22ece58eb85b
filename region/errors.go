package region

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors of a region node. Each carries its gRPC status (transport passes such errors through
// unchanged), and none carries key material.
var (
	// ErrNoLease is returned by the wrap service when this node holds no serving lease: it has not
	// heard from the leader within a lease period, or has not applied the log the leader had
	// committed, so it may have missed a revocation.
	ErrNoLease = &codedError{codes.Unavailable, "region: this node holds no serving lease; try another node"}
	// ErrNoLeader is returned when an operation needs the leader and none is known.
	ErrNoLeader = &codedError{codes.Unavailable, "region: no leader"}
	// ErrNotLeader is returned by node-service calls that only the leader answers.
	ErrNotLeader = &codedError{codes.Unavailable, "region: not the leader"}
	// ErrShutdown is returned by every call after Shutdown.
	ErrShutdown = &codedError{codes.Unavailable, "region: node is shut down"}
	// ErrNotVoter is returned to a node that is not a voter of the region's Raft configuration.
	ErrNotVoter = &codedError{codes.PermissionDenied, "region: caller is not a voter of this region"}
	// ErrDevAnchor is returned when a tenant names a file:// anchor on a node that does not allow
	// development anchors.
	ErrDevAnchor = &codedError{codes.InvalidArgument, "region: file:// is for development only; pass -dev-anchor to krypton server to use it (never in production)"}
	// ErrMissingKey is returned when a request names no tenant or service.
	ErrMissingKey = &codedError{codes.InvalidArgument, "region: the request names no key (tenant and service are required)"}
	// ErrFenceTimeout is returned when a revocation committed but the call's deadline ended before
	// every node confirmed or lost its lease. The revocation stands; retrying with the same
	// request id waits again.
	ErrFenceTimeout = &codedError{codes.DeadlineExceeded, "region: revocation committed, but not yet effective on every node before the deadline"}
)

// codedError is a sentinel with a fixed gRPC status.
type codedError struct {
	code codes.Code
	msg  string
}

func (e *codedError) Error() string { return e.msg }

// GRPCStatus lets transport.ToStatus and grpc pass the error on with its own code.
func (e *codedError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// codedErrorInvalid is an InvalidArgument refusal with a message that carries no input bytes.
type codedErrorInvalid struct{ msg string }

func (e *codedErrorInvalid) Error() string { return e.msg }

func (e *codedErrorInvalid) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.msg)
}
