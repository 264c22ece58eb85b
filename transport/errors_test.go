package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/staterr"
	"github.com/kryptonkms/krypton/wrap"
)

// secret stands for bytes that must never reach the wire: every test error
// below carries it in its text.
const secret = "6b6579206d6174657269616c"

// errorCases lists every sentinel the table must map, with the code
// docs/api.md wants. It is written out by hand, not derived from errorTable,
// so that a changed row fails a test.
var errorCases = []struct {
	err  error
	code codes.Code
}{
	{wrap.ErrAuthentication, codes.InvalidArgument},
	{wrap.ErrKeyMismatch, codes.InvalidArgument},
	{wrap.ErrMalformed, codes.InvalidArgument},
	{wrap.ErrUnsupportedVersion, codes.InvalidArgument},
	{wrap.ErrContextTooLarge, codes.InvalidArgument},
	{wrap.ErrInvalidName, codes.InvalidArgument},
	{wrap.ErrInvalidKeyID, codes.InvalidArgument},
	{wrap.ErrDestroyed, codes.Unavailable},
	{wrap.ErrLockedMemory, codes.Unavailable},
	{wrap.ErrInvalidKey, codes.Internal},
	{wrap.ErrBatchMismatch, codes.Internal},

	{fsm.ErrTenantNotFound, codes.NotFound},
	{fsm.ErrServiceNotFound, codes.NotFound},
	{fsm.ErrVersionNotFound, codes.NotFound},
	{fsm.ErrTenantExists, codes.AlreadyExists},
	{fsm.ErrServiceExists, codes.AlreadyExists},
	{fsm.ErrRevoked, codes.FailedPrecondition},
	{fsm.ErrLocked, codes.FailedPrecondition},
	{fsm.ErrAnchorDeleted, codes.FailedPrecondition},
	{fsm.ErrDecryptOnly, codes.FailedPrecondition},
	{fsm.ErrBadVersion, codes.Aborted},
	{fsm.ErrInvalidName, codes.InvalidArgument},
	{fsm.ErrInvalidCommand, codes.InvalidArgument},
	{fsm.ErrRequestIDReused, codes.InvalidArgument},
	{fsm.ErrConsentDenied, codes.PermissionDenied},
	{fsm.ErrConsentUsed, codes.PermissionDenied},
	// The refusals both state machines make, mapped once (their fsm sentinels above match them).
	{staterr.ErrTenantNotFound, codes.NotFound},
	{staterr.ErrServiceNotFound, codes.NotFound},
	{staterr.ErrTenantExists, codes.AlreadyExists},
	{staterr.ErrServiceExists, codes.AlreadyExists},
	{staterr.ErrRevoked, codes.FailedPrecondition},
	{staterr.ErrInvalidCommand, codes.InvalidArgument},
	{staterr.ErrRequestIDReused, codes.InvalidArgument},
	{staterr.ErrConsentDenied, codes.PermissionDenied},
	{staterr.ErrConsentUsed, codes.PermissionDenied},

	{anchor.ErrDisabled, codes.FailedPrecondition},
	{anchor.ErrPendingDeletion, codes.FailedPrecondition},
	{anchor.ErrDestroyed, codes.FailedPrecondition},
	{anchor.ErrKeyNotFound, codes.FailedPrecondition},
	{anchor.ErrAccessDenied, codes.FailedPrecondition},
	{anchor.ErrKeyUnusable, codes.FailedPrecondition},
	{anchor.ErrInvalidCiphertext, codes.FailedPrecondition},
	{anchor.ErrUnavailable, codes.Unavailable},
	{anchor.ErrClosed, codes.Unavailable},
	{anchor.ErrInvalidURI, codes.InvalidArgument},
	{anchor.ErrUnknownScheme, codes.InvalidArgument},
	{anchor.ErrNotRegistered, codes.InvalidArgument},
	{anchor.ErrSecretInURI, codes.InvalidArgument},
	{anchor.ErrPlainEndpoint, codes.InvalidArgument},
	{anchor.ErrDevelopment, codes.InvalidArgument},
	{anchor.ErrPlaintextSize, codes.Internal},
	{anchor.ErrInvalidContext, codes.Internal},

	{pki.ErrUnverified, codes.Unauthenticated},
	{pki.ErrNoIdentity, codes.Unauthenticated},
	{pki.ErrAmbiguousIdentity, codes.Unauthenticated},
	{pki.ErrInvalidIdentity, codes.Unauthenticated},
	{pki.ErrWrongKind, codes.PermissionDenied},

	{ErrRequestID, codes.InvalidArgument},
	{ErrPageSize, codes.InvalidArgument},
	{ErrPageToken, codes.InvalidArgument},

	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

func TestToStatusTable(t *testing.T) {
	for _, c := range errorCases {
		t.Run(c.err.Error(), func(t *testing.T) {
			// Bare, and wrapped by a caller that put bytes in its text.
			for _, err := range []error{c.err, fmt.Errorf("region: wrap for %s: %w", secret, c.err)} {
				st := status.Convert(ToStatus(err))
				if st.Code() != c.code {
					t.Errorf("ToStatus(%q) code = %v, want %v", err, st.Code(), c.code)
				}
				if strings.Contains(st.Message(), secret) || st.Message() == "" {
					t.Errorf("ToStatus(%q) message = %q", err, st.Message())
				}
			}
		})
	}
}

// TestToStatusTableCovered fails when errorTable has a row errorCases does
// not test.
func TestToStatusTableCovered(t *testing.T) {
	tested := map[error]bool{}
	for _, c := range errorCases {
		tested[c.err] = true
	}
	for _, row := range errorTable {
		if !tested[row.err] {
			t.Errorf("errorTable maps %q, which errorCases does not test", row.err)
		}
	}
}

func TestToStatusAuthenticationMessage(t *testing.T) {
	st := status.Convert(ToStatus(fmt.Errorf("unwrap item 3 (%s): %w", secret, wrap.ErrAuthentication)))
	if st.Code() != codes.InvalidArgument || st.Message() != "wrap: blob does not authenticate" {
		t.Errorf("got %v %q", st.Code(), st.Message())
	}
}

func TestToStatusTypedErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"anchor denial", anchor.Deny("unseal", "awskms", anchor.ReasonDisabled, errors.New("arn:aws:kms:"+secret)),
			codes.FailedPrecondition, "anchor: root key disabled"},
		{"anchor transient", anchor.Transient("unseal", "gcpkms", errors.New("503 "+secret)),
			codes.Unavailable, "anchor: provider unavailable; retry"},
		{"fsm error names its subject", &fsm.Error{Err: fsm.ErrVersionNotFound, Tenant: "acme", Service: "payments", Version: 3},
			codes.NotFound, `fsm: key version not found (tenant "acme", service "payments", version 3)`},
		{"fsm error hides an invalid name", &fsm.Error{Err: fsm.ErrTenantNotFound, Tenant: "ACME" + secret},
			codes.NotFound, "fsm: tenant not found"},
		{"fsm error names its field", &fsm.Error{Err: fsm.ErrInvalidCommand, Field: "anchor-uri"},
			codes.InvalidArgument, "fsm: invalid command (field anchor-uri)"},
		{"wrap batch error", &wrap.BatchError{Errs: []error{nil, wrap.ErrAuthentication}},
			codes.InvalidArgument, "wrap: blob does not authenticate"},
		{"unmapped", errors.New("disk on fire: " + secret), codes.Internal, "transport: internal error"},
		{"status passes through", status.Error(codes.Unavailable, "region: no serving lease"),
			codes.Unavailable, "region: no serving lease"},
		{"wrapped status keeps its own message", fmt.Errorf("forward %s: %w", secret, status.Error(codes.NotFound, "region: no leader")),
			codes.NotFound, "region: no leader"},
		{"status before table", fmt.Errorf("%w: %w", status.Error(codes.Aborted, "x"), fsm.ErrRevoked),
			codes.Aborted, "x"},
		{"status OK is not success", okStatusError{}, codes.Internal, "transport: internal error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := status.Convert(ToStatus(c.err))
			if st.Code() != c.code || st.Message() != c.msg {
				t.Errorf("ToStatus = %v %q, want %v %q", st.Code(), st.Message(), c.code, c.msg)
			}
		})
	}
	if ToStatus(nil) != nil {
		t.Error("ToStatus(nil) != nil")
	}
}

type okStatusError struct{}

func (okStatusError) Error() string              { return "ok?" }
func (okStatusError) GRPCStatus() *status.Status { return status.New(codes.OK, "") }

// TestCodedError: a plane's own error passes through ToStatus with its code and message, wrapped
// or not, and Invalid is InvalidArgument.
func TestCodedError(t *testing.T) {
	for _, c := range []struct {
		err  *CodedError
		code codes.Code
		msg  string
	}{
		{Coded(codes.Unavailable, "region: no leader"), codes.Unavailable, "region: no leader"},
		{Invalid("governance: a reason is required"), codes.InvalidArgument, "governance: a reason is required"},
	} {
		for _, err := range []error{c.err, fmt.Errorf("wrapped %s: %w", secret, c.err)} {
			st := status.Convert(ToStatus(err))
			if st.Code() != c.code || st.Message() != c.msg {
				t.Errorf("ToStatus(%q) = %v %q, want %v %q", err, st.Code(), st.Message(), c.code, c.msg)
			}
		}
		if c.err.Error() != c.msg {
			t.Errorf("Error() = %q", c.err.Error())
		}
	}
}

// TestToStatusNamesFIPSCause: an anchor denial wrapping a refusal of FIPS 140-only mode says so,
// rather than "root key unusable".
func TestToStatusNamesFIPSCause(t *testing.T) {
	cause := errors.New("crypto/cipher: use of GCM with arbitrary IVs is not allowed in FIPS 140-only mode, use NewGCMWithRandomNonce")
	err := anchor.Deny("seal", anchor.SchemeFile, anchor.ReasonKeyUnusable, cause)
	st, _ := status.FromError(ToStatus(err))
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "GCM with arbitrary IVs") ||
		strings.Contains(st.Message(), "root key unusable") {
		t.Fatalf("status = %v %q", st.Code(), st.Message())
	}
}
