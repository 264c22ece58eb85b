package region

import (
	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/transport"
)

// Errors of a region node. Each carries its gRPC status (a transport.CodedError, as governance's
// are: transport passes such errors through unchanged), and none carries key material.
var (
	// ErrNoLease is returned by the wrap service when this node holds no serving lease: it has not
	// heard from the leader within a lease period, or has not applied the log the leader had
	// committed, so it may have missed a revocation.
	ErrNoLease = transport.Coded(codes.Unavailable, "region: this node holds no serving lease; try another node")
	// ErrNoLeader is returned when an operation needs the leader and none is known.
	ErrNoLeader = transport.Coded(codes.Unavailable, "region: no leader")
	// ErrNotLeader is returned by node-service calls that only the leader answers.
	ErrNotLeader = transport.Coded(codes.Unavailable, "region: not the leader")
	// ErrShutdown is returned by every call after Shutdown.
	ErrShutdown = transport.Coded(codes.Unavailable, "region: node is shut down")
	// ErrNotVoter is returned to a node that is not a voter of the region's Raft configuration.
	ErrNotVoter = transport.Coded(codes.PermissionDenied, "region: caller is not a voter of this region")
	// ErrDevAnchor is returned when a tenant names a file:// anchor on a node that does not allow
	// development anchors.
	ErrDevAnchor = transport.Coded(codes.InvalidArgument, "region: file:// is for development only; pass -dev-anchor to krypton server to use it (never in production)")
	// ErrMissingKey is returned when a request names no tenant or service.
	ErrMissingKey = transport.Coded(codes.InvalidArgument, "region: the request names no key (tenant and service are required)")
	// ErrFenceTimeout is returned when a revocation committed but the call's deadline ended before
	// every node confirmed or lost its lease. The revocation stands; retrying with the same
	// request id waits again.
	ErrFenceTimeout = transport.Coded(codes.DeadlineExceeded, "region: revocation committed, but not yet effective on every node before the deadline")
)
