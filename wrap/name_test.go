package wrap

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "0", "acme", "payments-eu", "svc_1.v2", "a-", strings.Repeat("z", MaxNameLen)}
	for _, s := range good {
		if err := ValidateName(s); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", s, err)
		}
	}
	bad := []string{"", "-a", ".a", "_a", "A", "acMe", "a/b", "a@b", "a b", "é", "a\x00", strings.Repeat("z", MaxNameLen+1)}
	for _, s := range bad {
		err := ValidateName(s)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", s, err)
			continue
		}
		if len(s) > 1 && strings.Contains(err.Error(), s) {
			t.Errorf("ValidateName(%q) error %q echoes its input", s, err)
		}
	}
}

func TestKeyIDValidateAndString(t *testing.T) {
	tests := []struct {
		id   KeyID
		want string
		ok   bool
	}{
		{KeyID{"acme", "payments", 3}, "acme/payments@v3", true},
		{KeyID{"acme", "", 2}, "acme@v2", true},
		{KeyID{"acme", "payments", 4294967295}, "acme/payments@v4294967295", true},
		{KeyID{"acme", "payments", 0}, "", false},
		{KeyID{"", "payments", 1}, "", false},
		{KeyID{"acme", "Pay", 1}, "", false},
		{KeyID{}, "", false},
	}
	for _, tt := range tests {
		err := tt.id.Validate()
		if tt.ok != (err == nil) {
			t.Errorf("%#v.Validate() = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if !tt.ok {
			if !errors.Is(err, ErrInvalidKeyID) {
				t.Errorf("%#v.Validate() = %v, want ErrInvalidKeyID", tt.id, err)
			}
			continue
		}
		if got := tt.id.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
		back, err := ParseKeyID(tt.want)
		if err != nil || back != tt.id {
			t.Errorf("ParseKeyID(%q) = %v, %v, want %v", tt.want, back, err, tt.id)
		}
	}
	if err := (KeyID{"acme", "", 1}).validateService(); !errors.Is(err, ErrInvalidKeyID) {
		t.Errorf("tenant id accepted as a service id: %v", err)
	}
	if err := (KeyID{"acme", "p", 1}).validateTenant(); !errors.Is(err, ErrInvalidKeyID) {
		t.Errorf("service id accepted as a tenant id: %v", err)
	}
}

func TestParseKeyIDRejects(t *testing.T) {
	for _, s := range []string{"", "acme", "acme@", "acme@v", "acme@3", "acme@v03", "acme@v0",
		"acme/@v1", "/p@v1", "acme/p/q@v1", "acme@v4294967296", "acme@v-1", "acme@v+1", "Acme@v1", "acme@v1 "} {
		if id, err := ParseKeyID(s); !errors.Is(err, ErrInvalidKeyID) {
			t.Errorf("ParseKeyID(%q) = %v, %v, want ErrInvalidKeyID", s, id, err)
		}
	}
}
