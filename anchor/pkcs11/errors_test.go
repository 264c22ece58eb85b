package pkcs11

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
	p11 "github.com/miekg/pkcs11"
)

func TestClassify(t *testing.T) {
	const (
		transient = "transient"
		invalid   = "invalid-ciphertext"
	)
	for _, tc := range []struct {
		rv      uint
		decrypt bool
		want    string // a DenialReason's String, or transient
		drop    bool   // the session must not be pooled again
	}{
		{p11.CKR_KEY_HANDLE_INVALID, false, "destroyed", false},
		{p11.CKR_OBJECT_HANDLE_INVALID, true, "destroyed", false},
		{p11.CKR_PIN_INCORRECT, false, "access-denied", true},
		{p11.CKR_PIN_LOCKED, false, "access-denied", true},
		{p11.CKR_PIN_EXPIRED, false, "access-denied", true},
		{p11.CKR_USER_NOT_LOGGED_IN, false, "access-denied", true},
		{p11.CKR_USER_PIN_NOT_INITIALIZED, false, "access-denied", true},
		{p11.CKR_KEY_FUNCTION_NOT_PERMITTED, false, "disabled", false},
		{p11.CKR_KEY_FUNCTION_NOT_PERMITTED, true, "disabled", false},
		{p11.CKR_KEY_TYPE_INCONSISTENT, false, "key-unusable", false},
		{p11.CKR_MECHANISM_INVALID, false, "key-unusable", false},
		{p11.CKR_GENERAL_ERROR, true, invalid, false}, // SoftHSM2's GCM tag mismatch
		{p11.CKR_ENCRYPTED_DATA_INVALID, true, invalid, false},
		{p11.CKR_ENCRYPTED_DATA_LEN_RANGE, true, invalid, false},
		{p11.CKR_GENERAL_ERROR, false, transient, true}, // on encrypt or a probe: the device, not the blob
		{p11.CKR_ENCRYPTED_DATA_INVALID, false, transient, true},
		{p11.CKR_DEVICE_ERROR, false, transient, true},
		{p11.CKR_DEVICE_ERROR, true, transient, true},
		{p11.CKR_DEVICE_REMOVED, true, transient, true},
		{p11.CKR_SESSION_HANDLE_INVALID, true, transient, true},
		{p11.CKR_SESSION_CLOSED, false, transient, true},
		{p11.CKR_TOKEN_NOT_PRESENT, false, transient, true},
		{p11.CKR_DEVICE_MEMORY, false, transient, true},
		{p11.CKR_FUNCTION_FAILED, false, transient, true},
	} {
		name := fmt.Sprintf("%v decrypt=%v", p11.Error(tc.rv), tc.decrypt)
		err := fmt.Errorf("pkcs11: C_Something: %w", p11.Error(tc.rv))
		c := classify(err, tc.decrypt)
		got := toAnchor("unseal", c, err)
		switch tc.want {
		case transient:
			if !anchor.IsTransient(got) || anchor.IsDenied(got) {
				t.Errorf("%s: %v, want transient", name, got)
			}
		default:
			r, ok := anchor.Reason(got)
			if !ok || r.String() != tc.want || anchor.IsTransient(got) {
				t.Errorf("%s: %v, want denied %s", name, got, tc.want)
			}
		}
		if c.dropSession != tc.drop {
			t.Errorf("%s: dropSession %v, want %v", name, c.dropSession, tc.drop)
		}
		if !errors.Is(got, p11.Error(tc.rv)) {
			t.Errorf("%s: the module's code is not in the chain", name)
		}
	}
	// A handle the module says is gone may already be another session's:
	// it must not be closed.
	for _, rv := range []uint{p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED} {
		if classify(p11.Error(rv), false).closeSession {
			t.Errorf("%v: closes a handle that is no longer ours", p11.Error(rv))
		}
	}
	// Not a module error (crypto/rand, a context): transient.
	if got := toAnchor("seal", classify(errors.New("pkcs11: x"), false), errors.New("pkcs11: x")); !anchor.IsTransient(got) {
		t.Errorf("a non-module error: %v, want transient", got)
	}
}
