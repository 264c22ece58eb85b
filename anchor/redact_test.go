package anchor

import (
	"errors"
	"strings"
	"testing"
)

const testPIN = "Pin-7c1e0b9a-secret"

func TestCheckStorableRefusesSecrets(t *testing.T) {
	for _, s := range []string{
		"pkcs11:token=t;object=o?module-path=/usr/lib/x.so&pin-value=" + testPIN,
		"pkcs11:token=t;object=o?pin-value=" + testPIN,
		"pkcs11:token=t;object=o?module-path=/usr/lib/x.so&x-vendor-password=" + testPIN,
		"pkcs11:token=t;object=o;x-pin=" + testPIN + "?module-path=/usr/lib/x.so", // in the path too
	} {
		u, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		err = CheckStorable(u)
		if !errors.Is(err, ErrSecretInURI) || !strings.Contains(err.Error(), "pin-source") {
			t.Errorf("CheckStorable(URI %d chars): %v, want ErrSecretInURI naming pin-source", len(s), err)
		}
		if err != nil && strings.Contains(err.Error(), testPIN) {
			t.Errorf("CheckStorable's error shows the PIN: %v", err)
		}
	}
	for _, s := range []string{
		"pkcs11:token=t;object=o?module-path=/usr/lib/x.so&pin-source=file:/etc/krypton/pin",
		"pkcs11:token=t;object=o?x-slot-hint=3",
		"awskms://alias/krypton?region=eu-west-1&endpoint=https://kms.example.com",
		"gcpkms://projects/my-project/locations/europe-west1/keyRings/r/cryptoKeys/k",
		"azurekv://contoso.vault.azure.net/keys/root",
		"file:///var/lib/krypton/dev/root.key",
	} {
		u, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%s): %v", s, err)
		}
		if err := CheckStorable(u); err != nil {
			t.Errorf("CheckStorable(%s): %v", s, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"": "",
		"pkcs11:token=t;object=o?module-path=/usr/lib/x.so&pin-value=" + testPIN:  "pkcs11:token=t;object=o?module-path=%2Fusr%2Flib%2Fx.so&pin-value=xxxxx",
		"pkcs11:token=t;object=o?x-vendor-password=" + testPIN + "&x-slot-hint=3": "pkcs11:token=t;object=o?x-slot-hint=3&x-vendor-password=xxxxx",
		"pkcs11:token=t;object=o?pin-source=file:/etc/krypton/pin":                "pkcs11:token=t;object=o?pin-source=file:/etc/krypton/pin",
		"pkcs11:token=t;object=o;x-pin=" + testPIN:                                "pkcs11:token=t;object=o;x-pin=xxxxx",
		"pkcs11:token=t;object=o;pin-value=" + testPIN:                            "pkcs11:(not shown: the URI does not parse)",
		"pkcs11:token=t;object=o?pin-value=" + testPIN + "&pin-source=/etc/pin":   "pkcs11:(not shown: the URI does not parse)",
		testPIN + "://x": "(anchor URI not shown: it does not parse)",
		"awskms://alias/krypton?region=eu-west-1": "awskms://alias/krypton?region=eu-west-1",
		"file:///var/lib/krypton/dev/root.key":    "file:///var/lib/krypton/dev/root.key",
	} {
		got := Redact(in)
		if got != want {
			t.Errorf("Redact(%d-char URI) = %q, want %q", len(in), got, want)
		}
		if strings.Contains(got, testPIN) {
			t.Errorf("Redact shows the PIN: %q", got)
		}
	}
}
