package wrap

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSeeds returns the vector blobs and contexts, plus a few hand-made
// edge cases, and writes them to testdata/fuzz/<name>/ under -update.
func fuzzSeeds(f *testing.F, name string) [][2][]byte {
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		f.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		f.Fatal(err)
	}
	var seeds [][2][]byte
	for _, v := range vf.Vectors {
		blob, _ := hex.DecodeString(v.Blob)
		ctx, _ := hex.DecodeString(v.Context)
		seeds = append(seeds, [2][]byte{blob, ctx})
	}
	seeds = append(seeds,
		[2][]byte{nil, nil},
		[2][]byte{{magic, formatVersion, 2, 2, 64}, nil},
		[2][]byte{{magic, 9}, nil},
		[2][]byte{bytes.Repeat([]byte{0xff}, MaxBlobSize+1), nil},
	)
	if *update {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		for i, s := range seeds {
			var body string
			if name == "FuzzParse" {
				body = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s[0])
			} else {
				body = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\n", s[0], s[1])
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				f.Fatal(err)
			}
		}
	}
	return seeds
}

// checkError fails unless err is one of the typed errors and does not
// echo the input.
func checkError(t *testing.T, err error, input []byte, allowed ...error) {
	t.Helper()
	for _, e := range allowed {
		if errors.Is(err, e) {
			if len(input) >= 4 && strings.Contains(err.Error(), string(input)) {
				t.Fatalf("error echoes its input: %v", err)
			}
			return
		}
	}
	t.Fatalf("untyped error: %v", err)
}

// FuzzParse checks that the one blob parser never panics, returns only
// typed errors, and accepts only canonical encodings: a parsed header
// encodes back to exactly the bytes it came from.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f, "FuzzParse") {
		f.Add(s[0])
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		h, err := ParseHeader(blob)
		if err != nil {
			checkError(t, err, blob, ErrMalformed, ErrUnsupportedVersion)
			return
		}
		if err := h.Parent.Validate(); err != nil {
			t.Fatalf("parsed parent %v: %v", h.Parent, err)
		}
		switch h.Kind {
		case KindSealedServiceKey:
			if h.Parent.Service != "" || h.Subject.validateService() != nil || h.Subject.Tenant != h.Parent.Tenant {
				t.Fatalf("sealed header %+v", h)
			}
		case KindWrappedDataKey:
			if h.Parent.validateService() != nil || h.Subject != (KeyID{}) {
				t.Fatalf("wrapped header %+v", h)
			}
		default:
			t.Fatalf("kind %v", h.Kind)
		}
		enc := appendHeader(nil, h.Kind, h.KDF, h.Parent, h.Subject, &h.Salt, &h.Nonce)
		if len(enc)+ciphertextSize != len(blob) || !bytes.Equal(enc, blob[:len(enc)]) {
			t.Fatalf("header does not re-encode to its input")
		}
	})
}

// FuzzUnwrap feeds arbitrary blobs and contexts to Unwrap and
// OpenServiceKey under the vectors' keys. Nothing may panic, every error
// must be typed, and nothing may open but the untouched vector blobs with
// their own contexts (no malleability).
func FuzzUnwrap(f *testing.F) {
	seeds := fuzzSeeds(f, "FuzzUnwrap")
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	mk := func(seed byte) []byte {
		b := make([]byte, KeySize)
		for i := range b {
			b[i] = seed + byte(i)
		}
		return b
	}
	l3 := serviceKeyWith(f, l3ID, mk(0x10))
	l2, err := TenantKeyFromBytes(l2ID, mk(0x20))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(l2.Destroy)
	genuine := func(blob, ctx []byte) bool {
		for _, s := range seeds {
			if bytes.Equal(s[0], blob) && bytes.Equal(s[1], ctx) {
				return true
			}
		}
		return false
	}
	typed := []error{ErrMalformed, ErrUnsupportedVersion, ErrKeyMismatch, ErrAuthentication, ErrContextTooLarge}
	f.Fuzz(func(t *testing.T, blob, ctx []byte) {
		dk, err := l3.Unwrap(blob, ctx)
		if err != nil {
			checkError(t, err, blob, typed...)
		} else if !genuine(blob, ctx) {
			t.Fatalf("a forged blob unwrapped")
		} else if dk.IsZero() {
			t.Fatal("unwrapped a zero key")
		}
		k, err := l2.OpenServiceKey(l3ID, blob)
		if err != nil {
			checkError(t, err, blob, typed...)
			return
		}
		defer k.Destroy()
		if !genuine(blob, nil) && !genuine(blob, []byte{}) {
			t.Fatalf("a forged sealed blob opened")
		}
	})
}
