package transport

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/fipsmode"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/staterr"
	"github.com/kryptonkms/krypton/wrap"
)

// ErrShutdown is returned by Server.Shutdown and AdminHTTP.Shutdown when
// called after the first call.
var ErrShutdown = errors.New("transport: shut down")

// errorRow maps one domain error to a gRPC code and a fixed wire message.
// The message is written here, never taken from the error: a domain error's
// text may hold a provider's diagnostic or a position in a blob, and a fixed
// string is the only one that provably carries no key bytes nor request
// bytes. fsm's *Error is the exception, see subject.
type errorRow struct {
	err  error
	code codes.Code
	msg  string
}

// errorTable is the one table from domain errors to gRPC codes (etcd's
// v3rpc/util.go toGRPCErrorMap is the model). ToStatus tests the rows in
// order with errors.Is and the first match wins, so an error that wraps
// several sentinels (errors.Join, wrap.BatchError) gets the code of the
// earliest row. docs/api.md "Error model" says what each code means.
var errorTable = []errorRow{
	// Package wrap. A blob that does not open says so without saying why:
	// tampering and a wrong context are deliberately the same answer
	// (docs/api.md, Unwrap). ErrKeyMismatch is InvalidArgument, not
	// PermissionDenied: the blob names another key than the one it was
	// presented for (from its public header), which is a malformed request,
	// not an authorisation decision — authorisation is the key-use policy's (package policy).
	{wrap.ErrAuthentication, codes.InvalidArgument, "wrap: blob does not authenticate"},
	{wrap.ErrKeyMismatch, codes.InvalidArgument, "wrap: blob is for another key"},
	{wrap.ErrMalformed, codes.InvalidArgument, "wrap: malformed blob"},
	{wrap.ErrUnsupportedVersion, codes.InvalidArgument, "wrap: unsupported blob version"},
	{wrap.ErrContextTooLarge, codes.InvalidArgument, "wrap: context too large"},
	{wrap.ErrInvalidName, codes.InvalidArgument, "wrap: invalid name"},
	{wrap.ErrInvalidKeyID, codes.InvalidArgument, "wrap: invalid key id"},
	// A key destroyed under a running call: the keyring wiped it (revocation,
	// lockout, shutdown). Retrying finds the key's new state, here or on
	// another node.
	{wrap.ErrDestroyed, codes.Unavailable, "wrap: key no longer held; retry"},
	// The process's locked-memory budget (RLIMIT_MEMLOCK) has no room for the key even after
	// evicting every key its keyrings would give back: retry later, or raise the limit.
	{wrap.ErrLockedMemory, codes.Unavailable, "locked memory exhausted; raise RLIMIT_MEMLOCK"},
	// Both are the server's own mistakes: the key bytes and the batch
	// slices are built by the node, never taken from a request.
	{wrap.ErrInvalidKey, codes.Internal, "transport: internal error"},
	{wrap.ErrBatchMismatch, codes.Internal, "transport: internal error"},

	// Package fsm. Its *Error text names the tenant, service and version
	// (names it validated, never an invalid one), which helps an operator
	// and carries no key material: subject appends it. The refusals both
	// state machines make (fsm's and governance's, package govfsm) are
	// package staterr's, mapped once here for both planes: a row with no
	// message sends the text of the plane's own sentinel (a
	// *staterr.Sentinel, "fsm: tenant not found" or "governance: tenant not
	// found"), fixed like every message here.
	{staterr.ErrTenantNotFound, codes.NotFound, ""},
	{staterr.ErrServiceNotFound, codes.NotFound, ""},
	{fsm.ErrVersionNotFound, codes.NotFound, "fsm: key version not found"},
	{staterr.ErrTenantExists, codes.AlreadyExists, ""},
	{staterr.ErrServiceExists, codes.AlreadyExists, ""},
	{staterr.ErrRevoked, codes.FailedPrecondition, ""},
	{fsm.ErrLocked, codes.FailedPrecondition, "fsm: tenant locked"},
	{fsm.ErrAnchorDeleted, codes.FailedPrecondition, "fsm: anchor deleted"},
	{fsm.ErrDecryptOnly, codes.FailedPrecondition, "fsm: key version is decrypt-only"},
	// Two rotations raced, or a sealed key names an L2 version that moved
	// on: nothing is wrong with the request, and a retry sees the new state.
	{fsm.ErrBadVersion, codes.Aborted, "fsm: unexpected key version; retry"},
	{fsm.ErrInvalidName, codes.InvalidArgument, "fsm: invalid name"},
	{staterr.ErrInvalidCommand, codes.InvalidArgument, ""},
	{staterr.ErrRequestIDReused, codes.InvalidArgument, ""},
	// The state machine's last word on a tenant owner's consent (the region's handlers say
	// why before proposing): an authorisation decision, the owner's.
	{staterr.ErrConsentDenied, codes.PermissionDenied, ""},
	{staterr.ErrConsentUsed, codes.PermissionDenied, ""},

	// Package anchor. Definite denials by the customer's provider are
	// FailedPrecondition (the tenant's root key refuses; nothing will change
	// until its owner acts); transient failures are Unavailable. A sealed
	// tenant key that does not open is the provider's denial too. The
	// provider's own diagnostic (ARNs, request ids) stays in the log.
	{anchor.ErrDisabled, codes.FailedPrecondition, "anchor: root key disabled"},
	{anchor.ErrPendingDeletion, codes.FailedPrecondition, "anchor: root key pending deletion"},
	{anchor.ErrDestroyed, codes.FailedPrecondition, "anchor: root key destroyed"},
	{anchor.ErrKeyNotFound, codes.FailedPrecondition, "anchor: root key not found"},
	{anchor.ErrAccessDenied, codes.FailedPrecondition, "anchor: access to root key denied"},
	{anchor.ErrKeyUnusable, codes.FailedPrecondition, "anchor: root key unusable"},
	{anchor.ErrInvalidCiphertext, codes.FailedPrecondition, "anchor: sealed tenant key does not open"},
	{anchor.ErrUnavailable, codes.Unavailable, "anchor: provider unavailable; retry"},
	{anchor.ErrClosed, codes.Unavailable, "anchor: provider closed; retry"},
	{anchor.ErrInvalidURI, codes.InvalidArgument, "anchor: invalid anchor URI"},
	{anchor.ErrUnknownScheme, codes.InvalidArgument, "anchor: unknown anchor scheme"},
	{anchor.ErrNotRegistered, codes.InvalidArgument, "anchor: anchor scheme not supported by this server"},
	{anchor.ErrSecretInURI, codes.InvalidArgument, "anchor: a stored anchor URI must hold no PIN: give pin-source=file:/path/to/pin, not pin-value"},
	{anchor.ErrPlainEndpoint, codes.InvalidArgument, "anchor: an anchor's endpoint must be https:// (http:// only for a loopback emulator on a node started with -dev-anchor)"},
	{anchor.ErrDevelopment, codes.InvalidArgument, "anchor: development anchors (file://) are not allowed by this server"},
	// The region builds the plaintext and context it seals: its mistake.
	{anchor.ErrPlaintextSize, codes.Internal, "transport: internal error"},
	{anchor.ErrInvalidContext, codes.Internal, "transport: internal error"},

	// Package pki, for the identity interceptor and for handlers that check
	// a peer themselves.
	{pki.ErrUnverified, codes.Unauthenticated, "transport: no verified client certificate"},
	{pki.ErrNoIdentity, codes.Unauthenticated, "transport: client certificate names no krypton identity"},
	{pki.ErrAmbiguousIdentity, codes.Unauthenticated, "transport: client certificate names more than one krypton identity"},
	{pki.ErrInvalidIdentity, codes.Unauthenticated, "transport: client certificate names an invalid krypton identity"},
	{pki.ErrWrongKind, codes.PermissionDenied, "transport: certificate kind not allowed"},

	// The request checks every plane shares (request.go).
	{ErrRequestID, codes.InvalidArgument, ErrRequestID.Error()},
	{ErrPageSize, codes.InvalidArgument, ErrPageSize.Error()},
	{ErrPageToken, codes.InvalidArgument, ErrPageToken.Error()},

	// The call's own context.
	{context.DeadlineExceeded, codes.DeadlineExceeded, "transport: deadline exceeded"},
	{context.Canceled, codes.Canceled, "transport: canceled"},
}

// CodedError is an error of a plane's own (region, governance) that carries its gRPC status: a
// code and a fixed message, which ToStatus and grpc pass on unchanged. Use it for sentinels
// (package variables) and for refusals that name the fix; the message must carry no key material
// and echo no request bytes.
type CodedError struct {
	code codes.Code
	msg  string
}

// Coded returns an error with code and the fixed message msg.
func Coded(code codes.Code, msg string) *CodedError { return &CodedError{code: code, msg: msg} }

// Invalid returns an InvalidArgument refusal with the fixed message msg (which names the fix and
// carries no request bytes).
func Invalid(msg string) *CodedError { return Coded(codes.InvalidArgument, msg) }

func (e *CodedError) Error() string { return e.msg }

// GRPCStatus lets ToStatus and grpc pass the error on with its own code.
func (e *CodedError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// ErrorRow maps a domain error of a package transport does not link (the state machine of
// another plane: governance's, package govfsm) to a gRPC code, for ServerConfig.Errors. Msg is
// the wire message; empty, it is the sentinel Err's own text (never that of the error that
// wraps it), which must then be fixed and carry no request bytes.
type ErrorRow struct {
	Err  error
	Code codes.Code
	Msg  string
}

// internalMessage is all the wire learns of an error the table does not map.
const internalMessage = "transport: internal error"

// ToStatus returns err as a gRPC status error for the wire:
//
//   - nil stays nil;
//   - an error that carries a status already (a GRPCStatus method, anywhere
//     in its chain: region's own sentinels, a status from a forwarded call)
//     passes through with that status, whatever text wraps it;
//   - an error matching a row of the table (errors.Is, first row wins) gets
//     the row's code and fixed message — for fsm's *Error with the tenant,
//     service and version it names;
//   - anything else is codes.Internal with a generic message.
//
// The message never carries key bytes nor echoes request bytes. ToStatus does
// not log; the server's error interceptor logs the detail of what it could
// not map (see NewServer).
func ToStatus(err error) error {
	st, _ := toStatus(err, nil)
	return st.Err()
}

// toStatus is ToStatus with the server's own rows after the table's (ServerConfig.Errors), also
// reporting whether err was mapped (false: the wire says Internal and the detail belongs in the
// log).
func toStatus(err error, extra []ErrorRow) (*status.Status, bool) {
	if err == nil {
		return nil, true
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		if st != nil && st.Code() != codes.OK {
			return st, true
		}
		// A status error that says OK is a bug; it must not read as success.
		return status.New(codes.Internal, internalMessage), false
	}
	// A refusal by FIPS 140-only mode is said as such, before the table: an anchor's denial or
	// an unwrap failure that wraps one would otherwise read as "root key unusable" or an
	// internal error, hiding the cause (docs/security.md, "FIPS 140-3 mode").
	if cause, ok := fipsmode.Cause(err); ok {
		return status.New(codes.FailedPrecondition, "refused in FIPS 140-only mode (GODEBUG=fips140=only): "+cause), true
	}
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			msg := row.msg
			if msg == "" {
				msg = sentinelText(err, row.err)
			}
			return status.New(row.code, msg+subject(err)), true
		}
	}
	for _, row := range extra {
		if errors.Is(err, row.Err) {
			msg := row.Msg
			if msg == "" {
				msg = row.Err.Error()
			}
			return status.New(row.Code, msg), true
		}
	}
	return status.New(codes.Internal, internalMessage), false
}

// sentinelText is the wire message of a shared state-machine error (a row without a message): the
// text of the plane's own sentinel that err carries, or the shared error's own text. Both are
// fixed strings of a package variable, never the text of what wraps them.
func sentinelText(err, shared error) string {
	var s *staterr.Sentinel
	if errors.As(err, &s) && s.Shared() == shared {
		return s.Error()
	}
	return shared.Error()
}

// subject returns " (tenant "a", service "b", version 3)" for an fsm.Error,
// from names fsm accepted (so they are valid names, safe to print), and ""
// otherwise.
func subject(err error) string {
	var fe *fsm.Error
	if !errors.As(err, &fe) {
		return ""
	}
	s := ""
	sep := " ("
	add := func(k, v string) {
		s += sep + k + " " + v
		sep = ", "
	}
	if fe.Tenant != "" && wrap.ValidateName(fe.Tenant) == nil {
		add("tenant", `"`+fe.Tenant+`"`)
	}
	if fe.Service != "" && wrap.ValidateName(fe.Service) == nil {
		add("service", `"`+fe.Service+`"`)
	}
	if fe.Version != 0 {
		add("version", strconv.FormatUint(uint64(fe.Version), 10))
	}
	if fe.Field != "" && wrap.ValidateName(fe.Field) == nil {
		add("field", fe.Field)
	}
	if s != "" {
		s += ")"
	}
	return s
}
