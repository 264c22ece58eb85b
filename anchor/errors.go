package anchor

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is. A *DeniedError matches
// the sentinel of its Reason, and every *TransientError matches
// ErrUnavailable, so `errors.Is(err, anchor.ErrDisabled)` works whichever
// provider produced err. None of them, nor any error wrapping them, carries
// key bytes, a PIN, or the bytes of a sealed blob.
var (
	// ErrDisabled is returned when the L1 key exists but its owner has
	// disabled it (AWS DisableKey, GCP version DISABLED, Azure enabled=false,
	// the file anchor's ".disabled" marker). A definite denial.
	ErrDisabled = errors.New("anchor: key disabled")

	// ErrPendingDeletion is returned when the L1 key is scheduled for
	// deletion (AWS PendingDeletion, GCP DESTROY_SCHEDULED, Azure soft
	// deleted). A definite denial: the owner may still cancel it, and then
	// Krypton works again.
	ErrPendingDeletion = errors.New("anchor: key pending deletion")

	// ErrDestroyed is returned when the L1 key is gone for good (GCP
	// DESTROYED, an HSM object that no longer exists, the file anchor's key
	// file removed or replaced). A definite denial: nothing sealed under the
	// key will ever open again.
	ErrDestroyed = errors.New("anchor: key destroyed")

	// ErrKeyNotFound is returned when the provider does not know the key the
	// URI names (a wrong ARN or resource name, a token without that object).
	// A definite denial; usually a configuration mistake.
	ErrKeyNotFound = errors.New("anchor: key not found")

	// ErrAccessDenied is returned when the provider refuses Krypton's
	// credentials for the key (IAM or key policy, RBAC, a wrong PIN). A
	// definite denial: the customer revoked Krypton's grant, or never gave it.
	ErrAccessDenied = errors.New("anchor: access denied")

	// ErrInvalidCiphertext is returned by Unseal when the blob does not open:
	// it was tampered with or truncated, was sealed under another key, or was
	// sealed under another Context. A definite denial for this blob.
	ErrInvalidCiphertext = errors.New("anchor: invalid ciphertext")

	// ErrKeyUnusable is returned when the key exists and is enabled but can
	// not do this operation (wrong key type or usage, an AWS key in
	// PendingImport). A definite denial; a configuration mistake.
	ErrKeyUnusable = errors.New("anchor: key unusable")

	// ErrUnavailable is matched by every *TransientError: the provider could
	// not be reached or asked us to back off (timeouts, throttling, 5xx, an
	// HSM session lost). Retrying later may succeed.
	ErrUnavailable = errors.New("anchor: provider unavailable")

	// ErrClosed is returned when a Provider is used after Close.
	ErrClosed = errors.New("anchor: provider closed")

	// ErrPlaintextSize is returned by Seal when the plaintext is empty or
	// longer than MaxPlaintextSize. It is the caller's mistake, neither a
	// denial nor transient.
	ErrPlaintextSize = errors.New("anchor: plaintext size out of range")

	// ErrInvalidContext is returned by Seal and Unseal when a Context field is
	// not valid (see Context.Validate). The caller's mistake.
	ErrInvalidContext = errors.New("anchor: invalid context")

	// ErrInvalidURI is returned by Parse and Open when an anchor URI is
	// malformed. The message never echoes the URI.
	ErrInvalidURI = errors.New("anchor: invalid URI")

	// ErrUnknownScheme is returned by Parse and Open when a URI's scheme is
	// not one of Schemes, and by Open when no provider is registered for it.
	ErrUnknownScheme = errors.New("anchor: unknown scheme")

	// ErrNotRegistered is returned by Open when the URI is valid but no
	// provider for its scheme is linked into this binary (see Register).
	ErrNotRegistered = errors.New("anchor: no provider registered for scheme")

	// ErrDevelopment is returned by Open for a development anchor
	// (file://) when Options.Development is not set, before the provider
	// touches anything.
	ErrDevelopment = errors.New("anchor: development anchors (file://) are not allowed here")

	// ErrSecretInURI is returned by CheckStorable for a URI that carries a
	// secret (a pkcs11 pin-value) and would put it in every Raft log,
	// snapshot and backup that stores the URI.
	ErrSecretInURI = errors.New("anchor: URI carries a secret")

	// ErrPlainEndpoint is returned by CheckTransport, and by Open, for an
	// endpoint override that would carry the tenant key in clear: an awskms
	// endpoint=http://... outside development (see CheckTransport).
	ErrPlainEndpoint = errors.New("anchor: endpoint override without TLS")
)

// A DenialReason says why a provider definitely refused. See the sentinel
// of the same name for what each means.
type DenialReason int

// Denial reasons. The zero value is not a valid reason, so a DeniedError
// built without one is caught by tests.
const (
	ReasonDisabled DenialReason = iota + 1
	ReasonPendingDeletion
	ReasonDestroyed
	ReasonKeyNotFound
	ReasonAccessDenied
	ReasonInvalidCiphertext
	ReasonKeyUnusable
)

var reasonSentinels = map[DenialReason]error{
	ReasonDisabled:          ErrDisabled,
	ReasonPendingDeletion:   ErrPendingDeletion,
	ReasonDestroyed:         ErrDestroyed,
	ReasonKeyNotFound:       ErrKeyNotFound,
	ReasonAccessDenied:      ErrAccessDenied,
	ReasonInvalidCiphertext: ErrInvalidCiphertext,
	ReasonKeyUnusable:       ErrKeyUnusable,
}

var reasonNames = map[DenialReason]string{
	ReasonDisabled:          "disabled",
	ReasonPendingDeletion:   "pending-deletion",
	ReasonDestroyed:         "destroyed",
	ReasonKeyNotFound:       "key-not-found",
	ReasonAccessDenied:      "access-denied",
	ReasonInvalidCiphertext: "invalid-ciphertext",
	ReasonKeyUnusable:       "key-unusable",
}

// String returns the reason in kebab-case ("disabled", "invalid-ciphertext"),
// stable for logs and metric labels.
func (r DenialReason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Sentinel returns the sentinel error for r (ErrDisabled for
// ReasonDisabled, ...), or nil for an unknown reason.
func (r DenialReason) Sentinel() error { return reasonSentinels[r] }

// A DeniedError is a definite refusal by the provider: asking again, now or
// later, gives the same answer until someone changes the key (enables it,
// cancels its deletion, restores the grant). The region leader locks a
// tenant out as soon as Check returns one.
//
// It matches the sentinel of its Reason with errors.Is, and Unwrap returns
// the provider's own error so that errors.As can reach SDK types.
type DeniedError struct {
	Op       string       // "seal", "unseal", "check" or "open"
	Provider string       // the scheme, e.g. "awskms"
	Reason   DenialReason // why
	Err      error        // the provider's error; may be nil
}

func (e *DeniedError) Error() string {
	msg := fmt.Sprintf("anchor: %s: %s denied: %s", e.Provider, e.Op, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the provider's error.
func (e *DeniedError) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel of e.Reason.
func (e *DeniedError) Is(target error) bool {
	s := reasonSentinels[e.Reason]
	return s != nil && target == s
}

// A TransientError is a failure that says nothing about the key: the
// provider timed out, throttled us, answered 5xx, or the HSM session broke.
// Retry retries these, and the region leader tolerates them for a grace
// period before it locks a tenant out.
//
// It matches ErrUnavailable with errors.Is; Unwrap returns the cause.
type TransientError struct {
	Op       string // "seal", "unseal", "check" or "open"
	Provider string // the scheme, e.g. "gcpkms"
	Err      error  // the cause; may be nil
}

func (e *TransientError) Error() string {
	msg := fmt.Sprintf("anchor: %s: %s failed transiently", e.Provider, e.Op)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *TransientError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnavailable.
func (e *TransientError) Is(target error) bool { return target == ErrUnavailable }

// Deny returns a *DeniedError. Providers use it to classify their SDK's
// errors:
//
//	case errors.As(err, &disabled):
//		return nil, anchor.Deny("unseal", "awskms", anchor.ReasonDisabled, err)
func Deny(op, provider string, reason DenialReason, err error) error {
	return &DeniedError{Op: op, Provider: provider, Reason: reason, Err: err}
}

// Transient returns a *TransientError.
func Transient(op, provider string, err error) error {
	return &TransientError{Op: op, Provider: provider, Err: err}
}

// IsDenied reports whether err is, or wraps, a *DeniedError.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}

// IsTransient reports whether err is, or wraps, a *TransientError. An error
// that is neither denied nor transient (a bad argument, ErrClosed, an
// unclassified provider failure) is not retried by Retry.
//
// If err wraps both (errors.Join), IsDenied wins: callers should test
// IsDenied first.
func IsTransient(err error) bool {
	var t *TransientError
	return errors.As(err, &t)
}

// Reason returns the DenialReason of the first *DeniedError in err's chain,
// and false if there is none.
func Reason(err error) (DenialReason, bool) {
	var d *DeniedError
	if errors.As(err, &d) {
		return d.Reason, true
	}
	return 0, false
}
