package anchor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDeniedErrorMatchesItsSentinelOnly(t *testing.T) {
	cause := errors.New("sdk: DisabledException")
	for reason, sentinel := range reasonSentinels {
		err := fmt.Errorf("region: unseal tenant key: %w", Deny("unseal", "awskms", reason, cause))
		if !IsDenied(err) || IsTransient(err) {
			t.Errorf("%v: IsDenied %v IsTransient %v", reason, IsDenied(err), IsTransient(err))
		}
		if !errors.Is(err, sentinel) {
			t.Errorf("%v: does not match %v", reason, sentinel)
		}
		for other, s := range reasonSentinels {
			if other != reason && errors.Is(err, s) {
				t.Errorf("%v: also matches %v", reason, s)
			}
		}
		if errors.Is(err, ErrUnavailable) {
			t.Errorf("%v: matches ErrUnavailable", reason)
		}
		if !errors.Is(err, cause) {
			t.Errorf("%v: cause not reachable through Unwrap", reason)
		}
		if r, ok := Reason(err); !ok || r != reason {
			t.Errorf("Reason = %v, %v", r, ok)
		}
		if !strings.HasPrefix(Deny("unseal", "awskms", reason, cause).Error(), "anchor: awskms: unseal denied: "+reason.String()) {
			t.Errorf("message %q", Deny("unseal", "awskms", reason, cause))
		}
		if reason.Sentinel() != sentinel {
			t.Errorf("%v.Sentinel() = %v", reason, reason.Sentinel())
		}
	}
	if len(reasonSentinels) != len(reasonNames) || len(reasonSentinels) != int(ReasonKeyUnusable) {
		t.Error("every DenialReason needs a sentinel and a name")
	}
	if (&DeniedError{}).Is(nil) || errors.Is(&DeniedError{}, ErrDisabled) {
		t.Error("a DeniedError without a reason matches a sentinel")
	}
}

func TestTransientError(t *testing.T) {
	err := fmt.Errorf("leader: %w", Transient("check", "gcpkms", context.DeadlineExceeded))
	if !IsTransient(err) || IsDenied(err) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("classification of %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Error("cause not reachable")
	}
	if _, ok := Reason(err); ok {
		t.Error("a transient error has a denial reason")
	}
	for _, s := range reasonSentinels {
		if errors.Is(err, s) {
			t.Errorf("matches %v", s)
		}
	}
}

func TestUnclassified(t *testing.T) {
	for _, err := range []error{nil, errors.New("x"), ErrClosed, ErrPlaintextSize, ErrInvalidContext} {
		if IsDenied(err) || IsTransient(err) {
			t.Errorf("%v classified", err)
		}
	}
}
