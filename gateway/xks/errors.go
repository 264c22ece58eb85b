package xks

import (
	"context"
	"errors"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The error names of the XKS Proxy API specification (section "Error Codes") and the HTTP status
// each is sent with.
const (
	ValidationException           = "ValidationException"
	InvalidStateException         = "InvalidStateException"
	InvalidCiphertextException    = "InvalidCiphertextException"
	InvalidKeyUsageException      = "InvalidKeyUsageException"
	AuthenticationFailedException = "AuthenticationFailedException"
	AccessDeniedException         = "AccessDeniedException"
	KeyNotFoundException          = "KeyNotFoundException"
	InvalidURIPathException       = "InvalidUriPathException"
	ThrottlingException           = "ThrottlingException"
	UnsupportedOperationException = "UnsupportedOperationException"
	DependencyTimeoutException    = "DependencyTimeoutException"
	InternalException             = "InternalException"
)

var httpStatus = map[string]int{
	ValidationException:           http.StatusBadRequest,
	InvalidStateException:         http.StatusBadRequest,
	InvalidCiphertextException:    http.StatusBadRequest,
	InvalidKeyUsageException:      http.StatusBadRequest,
	AuthenticationFailedException: http.StatusUnauthorized,
	AccessDeniedException:         http.StatusForbidden,
	KeyNotFoundException:          http.StatusNotFound,
	InvalidURIPathException:       http.StatusNotFound,
	ThrottlingException:           http.StatusTooManyRequests,
	UnsupportedOperationException: http.StatusNotImplemented,
	DependencyTimeoutException:    http.StatusServiceUnavailable,
	InternalException:             http.StatusInternalServerError,
}

// Error is an XKS API failure: the specification's error name and a message for the caller. The
// message is fixed text written in this package (printable ASCII, under 512 characters as the
// specification requires), never request bytes, key material or a secret.
type Error struct {
	Name    string
	Message string
}

func (e *Error) Error() string { return "xks: " + e.Name + ": " + e.Message }

// Status is the HTTP status the error is answered with.
func (e *Error) Status() int {
	if s, ok := httpStatus[e.Name]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func xerr(name, msg string) *Error { return &Error{Name: name, Message: msg} }

// keysError maps an error of Keys (a gRPC status from the gateway and region) to the
// specification's names: a revoked service key, a locked tenant or a disabled anchor is the
// "key disabled" of the specification (InvalidStateException), which AWS KMS reports as
// KMSInvalidStateException.
func keysError(err error) *Error {
	var xe *Error
	if errors.As(err, &xe) {
		return xe
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return xerr(DependencyTimeoutException, "the Krypton region did not answer in time; retry")
	}
	switch status.Code(err) {
	case codes.FailedPrecondition:
		return xerr(InvalidStateException, "the Krypton service key of this external key is revoked, or its tenant is locked or its anchor disabled: restore it in Krypton")
	case codes.PermissionDenied, codes.Unauthenticated:
		return xerr(AccessDeniedException, "Krypton refuses this gateway the key: check the tenant's key-use policy and the gateway's service certificate")
	case codes.NotFound:
		return xerr(KeyNotFoundException, "the Krypton service key of this external key does not exist in the region")
	case codes.ResourceExhausted:
		return xerr(ThrottlingException, "the Krypton region is overloaded; retry")
	case codes.DeadlineExceeded, codes.Unavailable:
		return xerr(DependencyTimeoutException, "no Krypton region node answered in time; retry")
	}
	return xerr(InternalException, "the Krypton region failed the request; see the gateway's log")
}
