package envelope_test

import (
	"bytes"
	"crypto/fips140"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/kryptonkms/krypton/envelope"
	"github.com/kryptonkms/krypton/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 0) }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The test vector of docs/gateway.md ("Ciphertext format"): the data key, blob, nonce, context and
// data below must give exactly the ciphertext in TestVector (computed independently with Python's
// cryptography AESGCM). The blob is opaque to this format; any bytes do.
var vector = struct {
	key, blob, nonce, context, data string
}{
	key:     "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	blob:    "b10b",
	nonce:   "a0a1a2a3a4a5a6a7a8a9aaab",
	context: "6f726465723d3432", // "order=42"
	data:    "68656c6c6f",       // "hello"
}

func TestVector(t *testing.T) {
	key, blob, nonce := unhex(t, vector.key), unhex(t, vector.blob), unhex(t, vector.nonce)
	ctx, data := unhex(t, vector.context), unhex(t, vector.data)
	// SealWithNonce (a caller-chosen nonce) is for vectors only, and GODEBUG=fips140=only
	// refuses it: it runs outside the enforcement; Parse and Open below run in the test's mode.
	var ct []byte
	var err error
	fips140.WithoutEnforcement(func() { ct, err = envelope.SealWithNonce(key, blob, data, ctx, nonce) })
	if err != nil {
		t.Fatal(err)
	}
	const want = "4b4757010002b10ba0a1a2a3a4a5a6a7a8a9aaab8e7d10412abcb18b87641106f2d6d50a2014a64300"
	if got := hex.EncodeToString(ct); got != want {
		t.Fatalf("ciphertext\n got %s\nwant %s", got, want)
	}
	c, err := envelope.Parse(ct)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Blob, blob) || !bytes.Equal(c.Nonce, nonce) {
		t.Fatalf("Parse: blob %x nonce %x", c.Blob, c.Nonce)
	}
	got, err := envelope.Open(key, c, ctx)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

func TestRoundTripAndTampering(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	blob := []byte("some wrapped key")
	ct, err := envelope.Seal(key, blob, []byte("payload"), []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := envelope.Parse(ct)
	if _, err := envelope.Open(key, c, []byte("other")); !errors.Is(err, envelope.ErrOpen) {
		t.Errorf("wrong context: %v", err)
	}
	// Every single-bit change is caught: by Parse (structure) or Open (authentication).
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 1
		c, err := envelope.Parse(bad)
		if err != nil {
			continue
		}
		if _, err := envelope.Open(key, c, []byte("ctx")); err == nil {
			t.Fatalf("flipping a bit of byte %d went unnoticed", i)
		}
	}
	if _, err := envelope.Seal(key, blob, make([]byte, envelope.MaxDataSize+1), nil); !errors.Is(err, envelope.ErrTooLarge) {
		t.Errorf("oversized data: %v", err)
	}
	if _, err := envelope.Seal(key[:16], blob, nil, nil); !errors.Is(err, envelope.ErrKeySize) {
		t.Errorf("short key: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":       nil,
		"magic":       []byte("XGW\x01\x00\x01b" + string(make([]byte, 28))),
		"no blob":     []byte("KGW\x01\x00\x00" + string(make([]byte, 28))),
		"short":       []byte("KGW\x01\x00\x02bb" + string(make([]byte, 27))),
		"blob length": []byte("KGW\x01\xff\xff" + string(make([]byte, 28))),
	} {
		if _, err := envelope.Parse(b); !errors.Is(err, envelope.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := envelope.Parse([]byte("KGW\x02\x00\x01b" + string(make([]byte, 28)))); !errors.Is(err, envelope.ErrVersion) {
		t.Errorf("version 2: %v, want ErrVersion", err)
	}
}

// FuzzParse: Parse never panics, and what it accepts re-encodes to the same bytes.
func FuzzParse(f *testing.F) {
	key := bytes.Repeat([]byte{1}, 32)
	ct, _ := envelope.SealWithNonce(key, []byte("blob"), []byte("data"), nil, make([]byte, 12))
	f.Add(ct)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := envelope.Parse(b)
		if err != nil {
			return
		}
		if len(c.Blob)+len(c.Nonce)+len(c.Sealed)+6 != len(b) {
			t.Fatalf("parts do not add up to the input")
		}
		if _, err := envelope.Open(key, c, nil); err == nil && !bytes.Equal(b, ct) {
			t.Fatalf("a ciphertext other than the seed opened")
		}
	})
}
