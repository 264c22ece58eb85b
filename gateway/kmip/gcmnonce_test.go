package kmip

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// gcmParamsIV is GCM with an IV Length as a client sends it: 96 (bits, as
// KMIP defines it) or 12 (bytes, as some clients send it).
func gcmParamsIV(ivLength int32) ttlv.Item {
	p := gcmParams()
	p.Children = append(p.Children, ttlv.Int(ttlv.TagIVLength, ivLength), ttlv.Int(ttlv.TagTagLength, 16))
	return p
}

// TestGCMClientNonce: a client that sends its own 96-bit GCM nonce (as KMIP
// auto-unseal clients do, with IV Length 12 meaning bytes) can encrypt and
// decrypt, and the object's key is never used with a nonce the client
// chose: a client repeating a nonce gets unrelated keystreams, and neither
// ciphertext opens under the object's key with that nonce (so repeating a
// nonce gives away no GCM authentication key and no plaintext XOR).
func TestGCMClientNonce(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "app")
	if fips140.Enforced() {
		// FIPS 140-only mode: the module draws GCM nonces; a client's is refused, naming why.
		id := c.create(v14, "")
		c.ok(v14, ttlv.OpActivate, uidItem(id))
		bi := c.do(v14, ttlv.OpEncrypt, uidItem(id), gcmParamsIV(96), ttlv.Bytes(ttlv.TagData, []byte("x")),
			ttlv.Bytes(ttlv.TagIVCounterNonce, []byte("abcdefghijkl")))
		if msg := describeFailure(bi); !strings.Contains(msg, "FIPS 140-only") {
			t.Fatalf("client nonce under fips140=only: %s", msg)
		}
		return
	}
	for _, v := range []version{{1, 2}, {1, 3}, v14, v20} {
		id := c.create(v14, "")
		c.ok(v14, ttlv.OpActivate, uidItem(id))
		key := c.ok(v14, ttlv.OpGet, uidItem(id)).Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).
			Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Bytes
		nonce := []byte("abcdefghijkl")
		aad := []byte("row 17")
		p1, p2 := []byte("attack at dawn!!"), []byte("retreat at dusk!")
		withTag := v.atLeast(1, 4)

		type sealed struct{ data, tag []byte }
		encrypt := func(ivLength int32, pt []byte) sealed {
			t.Helper()
			payload := []ttlv.Item{uidItem(id), gcmParamsIV(ivLength), ttlv.Bytes(ttlv.TagData, pt), ttlv.Bytes(ttlv.TagIVCounterNonce, nonce)}
			if withTag {
				payload = append(payload, ttlv.Bytes(ttlv.TagAuthenticatedEncryptionAdditionalData, aad))
			}
			enc := c.ok(v, ttlv.OpEncrypt, payload...)
			if enc.Child(ttlv.TagIVCounterNonce) != nil {
				t.Fatalf("%v: the server returned a nonce for a client's nonce", v)
			}
			s := sealed{data: enc.Child(ttlv.TagData).Bytes}
			if tg := enc.Child(ttlv.TagAuthenticatedEncryptionTag); tg != nil {
				s.tag = tg.Bytes
			}
			if withTag != (len(s.tag) == 16) {
				t.Fatalf("%v: tag of %d bytes", v, len(s.tag))
			}
			return s
		}
		decrypt := func(s sealed) ttlv.Item {
			t.Helper()
			payload := []ttlv.Item{uidItem(id), gcmParamsIV(96), ttlv.Bytes(ttlv.TagData, s.data), ttlv.Bytes(ttlv.TagIVCounterNonce, nonce)}
			if withTag {
				payload = append(payload, ttlv.Bytes(ttlv.TagAuthenticatedEncryptionAdditionalData, aad),
					ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, s.tag))
			}
			return c.do(v, ttlv.OpDecrypt, payload...)
		}

		s1, s2 := encrypt(12, p1), encrypt(96, p2)
		for i, s := range []sealed{s1, s2} {
			bi := decrypt(s)
			p := bi.Child(ttlv.TagResponsePayload)
			if p == nil || !bytes.Equal(p.Child(ttlv.TagData).Bytes, [][]byte{p1, p2}[i]) {
				t.Fatalf("%v: round trip %d: %s", v, i, describeFailure(bi))
			}
		}
		// The same nonce twice: if the key were the same, ct1 XOR ct2 would
		// be p1 XOR p2.
		ct1, ct2 := s1.data[saltSize:saltSize+len(p1)], s2.data[saltSize:saltSize+len(p2)]
		same := true
		for i := range p1 {
			if ct1[i]^ct2[i] != p1[i]^p2[i] {
				same = false
			}
		}
		if same {
			t.Fatalf("%v: two encryptions under one client nonce share a keystream", v)
		}
		// Nor is the object's own key used with the client's nonce.
		block, _ := aes.NewCipher(key)
		aead, _ := cipher.NewGCM(block)
		for _, s := range []sealed{s1, s2} {
			whole := append(append([]byte{}, s.data...), s.tag...)
			for _, off := range []int{0, saltSize} {
				if _, err := aead.Open(nil, nonce, whole[off:], aad); err == nil {
					t.Fatalf("%v: a client-nonce ciphertext opens under the object's key", v)
				}
				if _, err := aead.Open(nil, nonce, whole[off:], nil); err == nil {
					t.Fatalf("%v: a client-nonce ciphertext opens under the object's key", v)
				}
			}
		}
		// Tampering with the salt, the ciphertext or the tag fails.
		for i := range []int{0, saltSize, len(s1.data) - 1} {
			bad := sealed{data: bytes.Clone(s1.data), tag: s1.tag}
			bad.data[[]int{0, saltSize, len(s1.data) - 1}[i]] ^= 1
			checkFailure(t, decrypt(bad), ttlv.ReasonCryptographicFailure)
		}
		// IV lengths that are neither 96 bits nor 12 bytes are refused.
		for _, l := range []int32{64, 8, 128} {
			c.failure(v, ttlv.ReasonInvalidField, ttlv.OpEncrypt, uidItem(id), gcmParamsIV(l), ttlv.Bytes(ttlv.TagData, p1))
		}
		c.failure(v, ttlv.ReasonInvalidField, ttlv.OpEncrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, p1),
			ttlv.Bytes(ttlv.TagIVCounterNonce, make([]byte, 16)))
		// The server's own nonces still give plain GCM under the object's
		// key, tag at the end of Data before 1.4.
		enc := c.ok(v, ttlv.OpEncrypt, uidItem(id), gcmParamsIV(12), ttlv.Bytes(ttlv.TagData, p1))
		whole := enc.Child(ttlv.TagData).Bytes
		if tg := enc.Child(ttlv.TagAuthenticatedEncryptionTag); tg != nil {
			whole = append(bytes.Clone(whole), tg.Bytes...)
		}
		if pt, err := aead.Open(nil, enc.Child(ttlv.TagIVCounterNonce).Bytes, whole, nil); err != nil || !bytes.Equal(pt, p1) {
			t.Fatalf("%v: a server-nonce ciphertext does not open under the object's key: %v", v, err)
		}
	}
}
