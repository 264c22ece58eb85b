package pkcs11

import (
	"errors"
	"fmt"

	"github.com/kryptonkms/krypton/anchor"
	p11 "github.com/miekg/pkcs11"
)

// ErrAmbiguousKey is returned (inside a *anchor.DeniedError with
// anchor.ReasonKeyUnusable) when more than one secret key on the token
// matches the URI's object label (and id).
var ErrAmbiguousKey = errors.New("pkcs11: more than one key matches the URI")

// ErrAmbiguousToken is returned (inside a *anchor.DeniedError with
// anchor.ReasonKeyUnusable) when more than one token matches the URI.
var ErrAmbiguousToken = errors.New("pkcs11: more than one token matches the URI")

// ErrWrongKey is returned (inside a *anchor.DeniedError with
// anchor.ReasonKeyUnusable) when the key the URI names is not a sensitive,
// non-extractable 256-bit AES token key.
var ErrWrongKey = errors.New("pkcs11: key is not a sensitive, non-extractable AES-256 token key")

// What a return value of the module means for the anchor contract.
type class int

const (
	classTransient     class = iota // says nothing about the key: retry, reopen the session
	classDenied                     // a definite "no" from the token
	classInvalidCipher              // this blob does not open
)

// classified says what a module error means and whether the session that
// returned it may be used again.
type classified struct {
	class  class
	reason anchor.DenialReason // for classDenied
	// dropSession: the session is broken or suspect; do not pool it again.
	dropSession bool
	// closeSession: the handle is still ours and should be closed; false
	// when the module says the handle is already gone (it may have been
	// reused for another session, which we must not close).
	closeSession bool
}

// classify maps a Cryptoki return value. decrypt is true for the C_Decrypt
// of a caller's blob: there an authentication failure (SoftHSM2 answers
// CKR_GENERAL_ERROR, other modules CKR_ENCRYPTED_DATA_INVALID) means the
// blob does not open. Everywhere else an unknown code says nothing about
// the key and is transient: the region leader rides it out for a grace
// period and locks out after it.
func classify(err error, decrypt bool) classified {
	var rv p11.Error
	if !errors.As(err, &rv) {
		return classified{class: classTransient, dropSession: true, closeSession: true}
	}
	switch uint(rv) {
	case p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID:
		// Found by label in this very operation, gone now: destroyed.
		return classified{class: classDenied, reason: anchor.ReasonDestroyed}
	case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_LOCKED, p11.CKR_PIN_EXPIRED, p11.CKR_PIN_INVALID,
		p11.CKR_PIN_LEN_RANGE, p11.CKR_USER_PIN_NOT_INITIALIZED, p11.CKR_USER_TYPE_INVALID,
		p11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
		return classified{class: classDenied, reason: anchor.ReasonAccessDenied, dropSession: true, closeSession: true}
	case p11.CKR_USER_NOT_LOGGED_IN:
		// Logged out behind our back: a new session logs in again, and a
		// changed PIN then shows as CKR_PIN_INCORRECT.
		return classified{class: classDenied, reason: anchor.ReasonAccessDenied, dropSession: true, closeSession: true}
	case p11.CKR_KEY_FUNCTION_NOT_PERMITTED:
		return classified{class: classDenied, reason: anchor.ReasonDisabled}
	case p11.CKR_KEY_TYPE_INCONSISTENT, p11.CKR_KEY_SIZE_RANGE, p11.CKR_MECHANISM_INVALID,
		p11.CKR_MECHANISM_PARAM_INVALID:
		return classified{class: classDenied, reason: anchor.ReasonKeyUnusable}
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_REMOVED,
		p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_SLOT_ID_INVALID, p11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return classified{class: classTransient, dropSession: true}
	case p11.CKR_ENCRYPTED_DATA_INVALID, p11.CKR_ENCRYPTED_DATA_LEN_RANGE:
		if decrypt {
			return classified{class: classInvalidCipher}
		}
	case p11.CKR_GENERAL_ERROR:
		if decrypt {
			// SoftHSM2's answer to a GCM tag mismatch; the session stays
			// usable (checked against 2.6.1).
			return classified{class: classInvalidCipher}
		}
	}
	// CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY, CKR_FUNCTION_FAILED,
	// CKR_OPERATION_ACTIVE, ... and anything unknown.
	return classified{class: classTransient, dropSession: true, closeSession: true}
}

// toAnchor turns a module error into the anchor error contract.
func toAnchor(op string, c classified, err error) error {
	switch c.class {
	case classDenied:
		return anchor.Deny(op, anchor.SchemePKCS11, c.reason, err)
	case classInvalidCipher:
		return anchor.Deny(op, anchor.SchemePKCS11, anchor.ReasonInvalidCiphertext,
			fmt.Errorf("pkcs11: blob does not open (tampered, truncated, another key or another context): %w", err))
	}
	return anchor.Transient(op, anchor.SchemePKCS11, err)
}
