// Package transport carries Krypton's gRPC API (package krypton.v1, generated
// into transport/kryptonv1) over the network: servers and clients with
// mutually authenticated TLS, interceptors for identity, authorisation,
// logging, metrics and panics, gRPC health checking, and the one table that
// maps domain errors to gRPC status codes.
//
// Identity comes only from the peer's verified certificate: node
// certificates name a node ID, callers' certificates a tenant and service
// (SPIFFE-style URI SAN), operators' certificates an operator. A call
// without a client certificate fails with codes.Unauthenticated, one whose
// certificate is not allowed with codes.PermissionDenied.
//
// The error table (etcd's toGRPCErrorMap is the model) maps every sentinel
// and typed error of the lower packages to a code, as docs/api.md lists:
// InvalidArgument for malformed or oversized input, NotFound for an unknown
// tenant, service or key version, PermissionDenied, Unauthenticated,
// FailedPrecondition for revoked keys and locked tenants, Unavailable for no
// serving lease, no quorum or an unreachable leader, AlreadyExists,
// Aborted, DeadlineExceeded and OutOfRange where the RPC comments say so.
// Anything unmapped becomes codes.Internal with a generic message. No status
// message or detail ever carries key material or echoes request bytes, and
// a client never rebuilds a domain error from a status message string.
//
// Regions, governance, gateways, the CLI and the chaos harness import this
// package; it imports none of them.
package transport
