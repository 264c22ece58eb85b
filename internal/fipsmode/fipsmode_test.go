package fipsmode

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestOpenGCMAnyMode seals with a caller-chosen nonce (outside enforcement: the test plays an
// older writer) and opens with OpenGCM, and seals with the random-nonce construction and opens
// its output the same way, in whatever mode the test runs (make test-fips runs it under
// fips140=only).
func TestOpenGCMAnyMode(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	nonce := bytes.Repeat([]byte{9}, 12)
	var sealed []byte
	fips140.WithoutEnforcement(func() {
		block, _ := aes.NewCipher(key)
		aead, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		sealed = aead.Seal(nil, nonce, []byte("secret"), []byte("aad"))
	})
	pt, err := OpenGCM(key, nonce, sealed, []byte("aad"))
	if err != nil || string(pt) != "secret" {
		t.Fatalf("OpenGCM: %q, %v (mode %s)", pt, err, Mode())
	}
	if _, err := OpenGCM(key, nonce, sealed, []byte("other")); err == nil {
		t.Fatal("opened with other additional data")
	}
	aead, err := NewRandomNonceGCM(key)
	if err != nil {
		t.Fatal(err)
	}
	out := aead.Seal(nil, nil, []byte("secret"), nil)
	pt, err = OpenGCM(key, out[:12], out[12:], nil)
	if err != nil || string(pt) != "secret" {
		t.Fatalf("OpenGCM of a random-nonce seal: %q, %v", pt, err)
	}
}

func TestMode(t *testing.T) {
	want := "off"
	if fips140.Enforced() {
		want = "only"
	} else if fips140.Enabled() {
		want = "on"
	}
	if Mode() != want {
		t.Fatalf("Mode() = %q, want %q", Mode(), want)
	}
}

func TestCause(t *testing.T) {
	inner := errors.New("crypto/cipher: use of GCM with arbitrary IVs is not allowed in FIPS 140-only mode, use NewGCMWithRandomNonce")
	err := fmt.Errorf("anchor: seal: file: %w", inner)
	if c, ok := Cause(err); !ok || c != inner.Error() {
		t.Fatalf("Cause = %q, %v", c, ok)
	}
	if _, ok := Cause(errors.New("anchor: key unusable")); ok {
		t.Fatal("an unrelated error read as a FIPS refusal")
	}
}

// TestExpectedMode: make test-fips sets KRYPTON_FIPS_EXPECT to the module version it builds
// against, so a run that silently lost GODEBUG or GOFIPS140 fails here instead of passing in
// the normal mode.
func TestExpectedMode(t *testing.T) {
	want := os.Getenv("KRYPTON_FIPS_EXPECT")
	if want == "" {
		t.Skip("KRYPTON_FIPS_EXPECT not set: not a make test-fips run")
	}
	if Mode() != "only" || !strings.HasPrefix(fips140.Version(), want) {
		t.Fatalf("running %s, make test-fips wants fips140=only with module %s", Describe(), want)
	}
}
