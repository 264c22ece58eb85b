package xks

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// TestCDIVAppendixC computes the ciphertextDataIntegrityValue of the specification's own example
// (Appendix C: the Encrypt response example's fields, with the request's 33 bytes of AAD) and gets
// the value printed there, qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=; and, from the example's
// Base64 fields, the same bytes as the hex dump printed beside it.
func TestCDIVAppendixC(t *testing.T) {
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unb64 := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The hex dump of Appendix C, field by field.
	aad := unhex("70 72 6f 6a 65 63 74 3d 6e 69 6c 65 2c 64 65 70 61 72 74 6d 65 6e 74 3d 6d 61 72 6b 65 74 69 6e 67")
	md := unhex("6b 65 79 5f 76 65 72 73 69 6f 6e 3d 31")
	iv := unhex("1c ca e5 47 0f 39 70 02 54 77 90 31")
	ct := unhex("82 1c 64 2b 5b 71 78 33 67 de af 18")
	tag := unhex("bc 1c 4d da 77 07 d6 81 24 47 c5 95 5e 99 b2 61")
	// The Encrypt request and response examples' Base64 fields are the same bytes.
	for _, c := range []struct {
		b64 string
		raw []byte
	}{
		{"cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n", aad}, {"a2V5X3ZlcnNpb249MQ==", md},
		{"HMrlRw85cAJUd5Ax", iv}, {"ghxkK1txeDNn3q8Y", ct}, {"vBxN2ncH1oEkR8WVXpmyYQ==", tag},
	} {
		if !bytes.Equal(unb64(c.b64), c.raw) {
			t.Fatalf("%s is not the hex dump's %x", c.b64, c.raw)
		}
	}
	got := cdiv(aad, md, iv, ct, tag)
	if want := unb64("qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="); !bytes.Equal(got, want) {
		t.Fatalf("CDIV %s, want the specification's %s", base64.StdEncoding.EncodeToString(got), base64.StdEncoding.EncodeToString(want))
	}
	if hex.EncodeToString(got) != "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7" {
		t.Fatalf("CDIV %x", got)
	}
}
