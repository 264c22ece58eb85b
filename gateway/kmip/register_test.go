package kmip

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// symmetricKey is a Register request's Symmetric Key object holding key in
// format (Raw or Transparent Symmetric Key), with the Key Block's algorithm
// and length (0: left out).
func symmetricKey(format uint32, key []byte, alg uint32, bits int32) ttlv.Item {
	material := ttlv.Bytes(ttlv.TagKeyMaterial, key)
	if format == ttlv.KeyFormatTransparentSymmetricKey {
		material = ttlv.Struct(ttlv.TagKeyMaterial, ttlv.Bytes(ttlv.TagKey, key))
	}
	kb := ttlv.Struct(ttlv.TagKeyBlock, ttlv.Enum(ttlv.TagKeyFormatType, format), ttlv.Struct(ttlv.TagKeyValue, material))
	if alg != 0 {
		kb.Children = append(kb.Children, ttlv.Enum(ttlv.TagCryptographicAlgorithm, alg))
	}
	if bits != 0 {
		kb.Children = append(kb.Children, ttlv.Int(ttlv.TagCryptographicLength, bits))
	}
	return ttlv.Struct(ttlv.TagSymmetricKey, kb)
}

func randomKey(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// register registers key (copied: the request's bytes are the caller's)
// and returns its identifier.
func (c *client) register(v version, name string, key []byte) string {
	c.t.Helper()
	p := c.ok(v, ttlv.OpRegister, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)},
		append(keyAttrs(v, 256, name), symmetricKey(ttlv.KeyFormatRaw, bytes.Clone(key), ttlv.AlgorithmAES, 256))...)...)
	return p.Child(ttlv.TagUniqueIdentifier).Text()
}

func (c *client) keyBytes(v version, id string) []byte {
	c.t.Helper()
	return c.ok(v, ttlv.OpGet, uidItem(id)).Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Bytes
}

func (c *client) locateAll(v version) []string {
	c.t.Helper()
	var ids []string
	for _, u := range c.ok(v, ttlv.OpLocate).All(ttlv.TagUniqueIdentifier) {
		ids = append(ids, u.Text())
	}
	return ids
}

// TestRegister registers keys in both versions and both formats, gets the
// same bytes back, encrypts and decrypts with them, and finds no plaintext
// in the registry file.
func TestRegister(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmip.db")
	e := newEnv(t, func(c *Config) { c.RegistryPath = path })
	c := e.dial("acme", "db")
	var keys [][]byte
	for _, v := range []version{v14, v20} {
		for _, format := range []uint32{ttlv.KeyFormatRaw, ttlv.KeyFormatTransparentSymmetricKey} {
			key := randomKey(t, 32)
			keys = append(keys, key)
			// Algorithm and length in the template only (the Key Block
			// leaves them out), as some clients send them.
			p := c.ok(v, ttlv.OpRegister, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)},
				append(keyAttrs(v, 256, "registered"), symmetricKey(format, bytes.Clone(key), 0, 0))...)...)
			id := p.Child(ttlv.TagUniqueIdentifier).Text()
			if got := c.keyBytes(v, id); !bytes.Equal(got, key) {
				t.Fatalf("%v format %d: Get returned other bytes than registered", v, format)
			}
			attrs := attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, uidItem(id)))
			if attrs[ttlv.TagState][0].Int != int64(ttlv.StatePreActive) || attrs[ttlv.TagCryptographicLength][0].Int != 256 ||
				attrs[ttlv.TagName][0].Child(ttlv.TagNameValue).Text() != "registered" {
				t.Fatalf("%v: attributes %v", v, attrs)
			}
			c.ok(v, ttlv.OpActivate, uidItem(id))
			ct := c.ok(v, ttlv.OpEncrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, []byte("hello")))
			pt := c.ok(v, ttlv.OpDecrypt, uidItem(id),
				ttlv.Bytes(ttlv.TagData, ct.Child(ttlv.TagData).Bytes),
				ttlv.Bytes(ttlv.TagIVCounterNonce, ct.Child(ttlv.TagIVCounterNonce).Bytes),
				ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, ct.Child(ttlv.TagAuthenticatedEncryptionTag).Bytes))
			if string(pt.Child(ttlv.TagData).Bytes) != "hello" {
				t.Fatal("decrypt with a registered key")
			}
		}
	}
	if e.keys.Wrapped.Load() != 4 || e.keys.Generated.Load() != 0 {
		t.Fatalf("wrapped %d, generated %d: want 4 and 0", e.keys.Wrapped.Load(), e.keys.Generated.Load())
	}
	e.stop()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if bytes.Contains(raw, k) {
			t.Fatal("the registry file holds a registered key's plaintext")
		}
	}
	e.start()
}

// TestRegisterRefuses sends bad Register requests: each gets its Result
// Reason, none stores anything or asks the region to wrap, and no reply
// carries the key bytes.
func TestRegisterRefuses(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "db")
	key := randomKey(t, 32)
	ot := ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)
	for _, v := range []version{v14, v20} {
		attrs := keyAttrs(v, 256, "")
		req := func(extra ...ttlv.Item) []ttlv.Item {
			return append(append([]ttlv.Item{ot}, attrs...), extra...)
		}
		noAlg := ttlv.Struct(ttlv.TagSymmetricKey, ttlv.Struct(ttlv.TagKeyBlock,
			ttlv.Enum(ttlv.TagKeyFormatType, ttlv.KeyFormatRaw), ttlv.Struct(ttlv.TagKeyValue, ttlv.Bytes(ttlv.TagKeyMaterial, bytes.Clone(key)))))
		wrapped := symmetricKey(ttlv.KeyFormatRaw, bytes.Clone(key), ttlv.AlgorithmAES, 256)
		wrapped.Children[0].Children = append(wrapped.Children[0].Children,
			ttlv.Struct(ttlv.TagKeyWrappingData, ttlv.Enum(0x42009E, 1))) // Wrapping Method: Encrypt
		noValue := ttlv.Struct(ttlv.TagSymmetricKey, ttlv.Struct(ttlv.TagKeyBlock, ttlv.Enum(ttlv.TagKeyFormatType, ttlv.KeyFormatRaw)))
		cases := []struct {
			name    string
			reason  uint32
			payload []ttlv.Item
		}{
			{"short key", ttlv.ReasonInvalidField, req(symmetricKey(ttlv.KeyFormatRaw, key[:16], ttlv.AlgorithmAES, 256))},
			{"128-bit", ttlv.ReasonInvalidField, req(symmetricKey(ttlv.KeyFormatRaw, key[:16], ttlv.AlgorithmAES, 128))},
			{"oversize", ttlv.ReasonInvalidField, req(symmetricKey(ttlv.KeyFormatRaw, randomKey(t, 4096), ttlv.AlgorithmAES, 256))},
			{"3DES", ttlv.ReasonInvalidField, req(symmetricKey(ttlv.KeyFormatRaw, bytes.Clone(key), 0x02, 256))},
			{"all zero", ttlv.ReasonInvalidField, req(symmetricKey(ttlv.KeyFormatRaw, make([]byte, 32), ttlv.AlgorithmAES, 256))},
			{"no key block", ttlv.ReasonInvalidField, req(ttlv.Struct(ttlv.TagSymmetricKey))},
			{"no symmetric key", ttlv.ReasonInvalidField, req()},
			{"no key value", ttlv.ReasonInvalidField, req(noValue)},
			{"PKCS#8", ttlv.ReasonKeyFormatNotSupported, req(symmetricKey(0x04, bytes.Clone(key), ttlv.AlgorithmAES, 256))},
			{"wrapped", ttlv.ReasonFeatureNotSupported, req(wrapped)},
			{"no object type", ttlv.ReasonInvalidField, append(slices.Clone(attrs), symmetricKey(ttlv.KeyFormatRaw, bytes.Clone(key), ttlv.AlgorithmAES, 256))},
			{"secret data", ttlv.ReasonInvalidField, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, 0x07)}, append(slices.Clone(attrs), symmetricKey(ttlv.KeyFormatRaw, bytes.Clone(key), ttlv.AlgorithmAES, 256))...)},
			// Neither the template nor the Key Block names the algorithm.
			{"no algorithm", ttlv.ReasonInvalidField, []ttlv.Item{ot, noAlg}},
			{"server-set attribute", ttlv.ReasonInvalidField, req(ttlv.Struct(ttlv.TagAttributes, ttlv.Enum(ttlv.TagState, ttlv.StateActive)), symmetricKey(ttlv.KeyFormatRaw, bytes.Clone(key), ttlv.AlgorithmAES, 256))},
		}
		for _, tc := range cases {
			bi := c.do(v, ttlv.OpRegister, tc.payload...)
			if bytes.Contains(ttlv.Marshal(bi), key) {
				t.Fatalf("%v %s: the reply carries the key", v, tc.name)
			}
			t.Run(tc.name, func(t *testing.T) { checkFailure(t, bi, tc.reason) })
		}
	}
	if ids := c.locateAll(v14); len(ids) != 0 {
		t.Fatalf("refused Registers stored %d objects", len(ids))
	}
	if e.keys.Wrapped.Load() != 0 {
		t.Fatal("a refused Register asked for a wrap")
	}
}

// TestRekey replaces a key and checks the new one: another identifier,
// another key, the old one's attributes and names, links both ways; the
// old key keeps its state and key; a second Re-key of the old key and one
// of an unknown identifier are refused.
func TestRekey(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "db")
	for i, v := range []version{v14, v20} {
		name := "rotating-" + strconv.Itoa(i)
		oldKey := randomKey(t, 32)
		old := c.register(v, name, oldKey)
		c.ok(v, ttlv.OpActivate, uidItem(old))
		p := c.ok(v, ttlv.OpRekey, uidItem(old))
		id := p.Child(ttlv.TagUniqueIdentifier).Text()
		if id == old || id == "" {
			t.Fatalf("Re-key answered %q for %q", id, old)
		}
		if bytes.Equal(c.keyBytes(v, id), oldKey) {
			t.Fatal("the replacement has the old key")
		}
		if !bytes.Equal(c.keyBytes(v, old), oldKey) {
			t.Fatal("Re-key changed the old key")
		}
		na := attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, uidItem(id)))
		oa := attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, uidItem(old)))
		if na[ttlv.TagState][0].Int != int64(ttlv.StateActive) || oa[ttlv.TagState][0].Int != int64(ttlv.StateActive) {
			t.Fatalf("states: new %d, old %d; want both Active", na[ttlv.TagState][0].Int, oa[ttlv.TagState][0].Int)
		}
		for _, tag := range []ttlv.Tag{ttlv.TagCryptographicAlgorithm, ttlv.TagCryptographicLength, ttlv.TagCryptographicUsageMask} {
			if na[tag][0].Int != oa[tag][0].Int {
				t.Fatalf("attribute %s differs", defByTag(tag).name)
			}
		}
		if len(na[ttlv.TagName]) != 1 || na[ttlv.TagName][0].Child(ttlv.TagNameValue).Text() != name || len(oa[ttlv.TagName]) != 0 {
			t.Fatalf("names: new %v, old %v; want the name moved", na[ttlv.TagName], oa[ttlv.TagName])
		}
		link := func(a map[ttlv.Tag][]ttlv.Item) (uint32, string) {
			if len(a[ttlv.TagLink]) != 1 {
				t.Fatalf("%d Link attributes", len(a[ttlv.TagLink]))
			}
			l := a[ttlv.TagLink][0]
			return uint32(l.Child(ttlv.TagLinkType).Int), l.Child(ttlv.TagLinkedObjectIdentifier).Text()
		}
		if typ, to := link(oa); typ != ttlv.LinkReplacementObject || to != id {
			t.Fatalf("old key's link %#x to %s", typ, to)
		}
		if typ, to := link(na); typ != ttlv.LinkReplacedObject || to != old {
			t.Fatalf("new key's link %#x to %s", typ, to)
		}
		// Located by the name: the new key only.
		found := c.ok(v, ttlv.OpLocate, keyAttrs(v, 256, name)...).All(ttlv.TagUniqueIdentifier)
		if len(found) != 1 || found[0].Text() != id {
			t.Fatalf("Locate by name found %v", found)
		}
		c.failure(v, ttlv.ReasonIllegalOperation, ttlv.OpRekey, uidItem(old))
		// The replacement can be re-keyed in turn.
		c.ok(v, ttlv.OpRekey, uidItem(id))
		// A pre-active key's replacement is pre-active.
		pre := c.create(v, "")
		p = c.ok(v, ttlv.OpRekey, uidItem(pre))
		pa := attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, uidItem(p.Child(ttlv.TagUniqueIdentifier).Text())))
		if pa[ttlv.TagState][0].Int != int64(ttlv.StatePreActive) {
			t.Fatalf("replacement of a pre-active key: state %d", pa[ttlv.TagState][0].Int)
		}
	}
	n := len(c.locateAll(v14))
	c.failure(v14, ttlv.ReasonItemNotFound, ttlv.OpRekey, uidItem("5a8b4bde-0000-4000-8000-000000000000"))
	c.failure(v14, ttlv.ReasonFeatureNotSupported, ttlv.OpRekey, uidItem(c.create(v14, "")), ttlv.Interval(ttlv.TagOffset, 60))
	// Another identity cannot re-key this one's keys.
	other := e.dial("acme", "web")
	ids := c.locateAll(v14)
	other.failure(v14, ttlv.ReasonItemNotFound, ttlv.OpRekey, uidItem(ids[0]))
	if got := len(c.locateAll(v14)); got != n+1 {
		t.Fatalf("refused Re-keys changed the object count: %d, want %d", got, n+1)
	}
}

// TestQueryListsRegisterAndRekey: Query Operations advertises both.
func TestQueryListsRegisterAndRekey(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "db")
	p := c.ok(v14, ttlv.OpQuery, ttlv.Enum(ttlv.TagQueryFunction, ttlv.QueryOperations))
	var ops []uint32
	for _, o := range p.All(ttlv.TagOperation) {
		ops = append(ops, uint32(o.Int))
	}
	if !slices.Contains(ops, ttlv.OpRegister) || !slices.Contains(ops, ttlv.OpRekey) {
		t.Fatalf("Query Operations: %v", ops)
	}
}
