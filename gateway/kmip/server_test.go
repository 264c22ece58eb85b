package kmip

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/fipsmode"
)

func gcmParams() ttlv.Item {
	return ttlv.Struct(ttlv.TagCryptographicParameters,
		ttlv.Enum(ttlv.TagBlockCipherMode, ttlv.ModeGCM), ttlv.Enum(ttlv.TagCryptographicAlgorithm, ttlv.AlgorithmAES))
}

func cbcParams() ttlv.Item {
	return ttlv.Struct(ttlv.TagCryptographicParameters,
		ttlv.Enum(ttlv.TagBlockCipherMode, ttlv.ModeCBC), ttlv.Enum(ttlv.TagPaddingMethod, ttlv.PaddingPKCS5),
		ttlv.Bool(ttlv.TagRandomIV, true))
}

// attrsOf reads a Get Attributes response in either encoding into a map
// from attribute tag to values.
func attrsOf(t *testing.T, v version, p ttlv.Item) map[ttlv.Tag][]ttlv.Item {
	t.Helper()
	out := map[ttlv.Tag][]ttlv.Item{}
	if v.v2() {
		as := p.Child(ttlv.TagAttributes)
		if as == nil {
			t.Fatal("no Attributes structure in a 2.0 response")
		}
		for _, c := range as.Children {
			out[c.Tag] = append(out[c.Tag], c)
		}
		return out
	}
	for _, a := range p.All(ttlv.TagAttribute) {
		d := defByName(a.Child(ttlv.TagAttributeName).Text())
		if d == nil {
			t.Fatalf("unknown attribute %q", a.Child(ttlv.TagAttributeName).Text())
		}
		out[d.tag] = append(out[d.tag], *a.Child(ttlv.TagAttributeValue))
	}
	return out
}

// TestLifecycle runs a key through its whole life in KMIP 1.4 and 2.0.
func TestLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	for _, v := range []version{v14, v20} {
		t.Run(fmt.Sprintf("v%d.%d", v.major, v.minor), func(t *testing.T) {
			name := fmt.Sprintf("lifecycle-%d.%d", v.major, v.minor)
			c := e.dial("acme", "db")
			id := c.create(v, name)

			// Pre-active: the key exists but does not encrypt.
			c.failure(v, stateReason(v), ttlv.OpEncrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, []byte("x")))
			c.ok(v, ttlv.OpActivate, uidItem(id))
			c.failure(v, stateReason(v), ttlv.OpActivate, uidItem(id))

			attrs := attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, uidItem(id)))
			if attrs[ttlv.TagState][0].Int != int64(ttlv.StateActive) ||
				attrs[ttlv.TagCryptographicAlgorithm][0].Int != int64(ttlv.AlgorithmAES) ||
				attrs[ttlv.TagCryptographicLength][0].Int != 256 ||
				attrs[ttlv.TagName][0].Child(ttlv.TagNameValue).Text() != name ||
				len(attrs[ttlv.TagActivationDate]) != 1 {
				t.Fatalf("attributes: %+v", attrs)
			}
			// Named attributes only.
			var sel []ttlv.Item
			if v.v2() {
				sel = []ttlv.Item{ttlv.Enum(ttlv.TagAttributeReference, uint32(ttlv.TagState))}
			} else {
				sel = []ttlv.Item{ttlv.Text(ttlv.TagAttributeName, "State"), ttlv.Text(ttlv.TagAttributeName, "x-unknown")}
			}
			if got := attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, append([]ttlv.Item{uidItem(id)}, sel...)...)); len(got) != 1 || len(got[ttlv.TagState]) != 1 {
				t.Fatalf("selected attributes: %+v", got)
			}
			list := c.ok(v, ttlv.OpGetAttributeList, uidItem(id))
			if n := len(list.Children); n < 8 {
				t.Fatalf("attribute list has %d entries", n)
			}

			// Get returns the key; it is the key that Encrypt uses.
			get := c.ok(v, ttlv.OpGet, uidItem(id))
			key := get.Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Bytes
			if len(key) != 32 {
				t.Fatalf("key of %d bytes", len(key))
			}
			tsk := c.ok(v, ttlv.OpGet, uidItem(id), ttlv.Enum(ttlv.TagKeyFormatType, ttlv.KeyFormatTransparentSymmetricKey))
			if k2 := tsk.Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Child(ttlv.TagKey); k2 == nil || !bytes.Equal(k2.Bytes, key) {
				t.Fatal("transparent symmetric key differs")
			}
			c.failure(v, ttlv.ReasonKeyFormatNotSupported, ttlv.OpGet, uidItem(id), ttlv.Enum(ttlv.TagKeyFormatType, 0x04))

			// GCM: server nonce, tag returned; decrypt checks the tag and AAD.
			msg := []byte("attack at dawn")
			aad := []byte("row 17")
			enc := c.ok(v, ttlv.OpEncrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, msg),
				ttlv.Bytes(ttlv.TagAuthenticatedEncryptionAdditionalData, aad))
			ct, iv, tag := enc.Child(ttlv.TagData).Bytes, enc.Child(ttlv.TagIVCounterNonce).Bytes, enc.Child(ttlv.TagAuthenticatedEncryptionTag).Bytes
			if len(iv) != 12 || len(tag) != 16 || bytes.Equal(ct, msg) {
				t.Fatalf("GCM encrypt: iv %d tag %d", len(iv), len(tag))
			}
			if pt, err := fipsmode.OpenGCM(key, iv, append(append([]byte{}, ct...), tag...), aad); err != nil || !bytes.Equal(pt, msg) {
				t.Fatalf("GCM ciphertext does not open under the key Get returned: %v", err)
			}
			dec := c.ok(v, ttlv.OpDecrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, ct),
				ttlv.Bytes(ttlv.TagIVCounterNonce, iv), ttlv.Bytes(ttlv.TagAuthenticatedEncryptionAdditionalData, aad),
				ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, tag))
			if !bytes.Equal(dec.Child(ttlv.TagData).Bytes, msg) {
				t.Fatal("GCM round trip")
			}
			badTag := append([]byte{}, tag...)
			badTag[0] ^= 1
			c.failure(v, ttlv.ReasonCryptographicFailure, ttlv.OpDecrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, ct),
				ttlv.Bytes(ttlv.TagIVCounterNonce, iv), ttlv.Bytes(ttlv.TagAuthenticatedEncryptionAdditionalData, aad),
				ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, badTag))
			c.failure(v, ttlv.ReasonInvalidField, ttlv.OpEncrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, msg),
				ttlv.Bytes(ttlv.TagIVCounterNonce, make([]byte, 11)))
			// Default parameters are GCM.
			if d := c.ok(v, ttlv.OpEncrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, msg)); d.Child(ttlv.TagAuthenticatedEncryptionTag) == nil {
				t.Fatal("default mode is not GCM")
			}

			// CBC with PKCS5 padding and a server IV.
			enc = c.ok(v, ttlv.OpEncrypt, uidItem(id), cbcParams(), ttlv.Bytes(ttlv.TagData, msg))
			ct, iv = enc.Child(ttlv.TagData).Bytes, enc.Child(ttlv.TagIVCounterNonce).Bytes
			if len(ct) != 16 || len(iv) != 16 {
				t.Fatalf("CBC: ct %d iv %d", len(ct), len(iv))
			}
			dec = c.ok(v, ttlv.OpDecrypt, uidItem(id), cbcParams(), ttlv.Bytes(ttlv.TagData, ct), ttlv.Bytes(ttlv.TagIVCounterNonce, iv))
			if !bytes.Equal(dec.Child(ttlv.TagData).Bytes, msg) {
				t.Fatal("CBC round trip")
			}
			// Other modes are refused.
			c.failure(v, ttlv.ReasonInvalidField, ttlv.OpEncrypt, uidItem(id),
				ttlv.Struct(ttlv.TagCryptographicParameters, ttlv.Enum(ttlv.TagBlockCipherMode, 0x02)), ttlv.Bytes(ttlv.TagData, msg))

			// Locate by name, by algorithm and state; a name that is not there.
			byName := c.ok(v, ttlv.OpLocate, locateAttrs(v, ttlv.Struct(ttlv.TagName,
				ttlv.Text(ttlv.TagNameValue, name), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText)))...)
			if ids := uidsOf(byName); !slices.Equal(ids, []string{id}) {
				t.Fatalf("locate by name: %v", ids)
			}
			if li := byName.Child(ttlv.TagLocatedItems); li == nil || li.Int != 1 {
				t.Fatal("Located Items")
			}
			byState := c.ok(v, ttlv.OpLocate, locateAttrs(v, ttlv.Enum(ttlv.TagState, ttlv.StateActive), ttlv.Enum(ttlv.TagCryptographicAlgorithm, ttlv.AlgorithmAES))...)
			if !slices.Contains(uidsOf(byState), id) {
				t.Fatal("locate by state")
			}
			none := c.ok(v, ttlv.OpLocate, locateAttrs(v, ttlv.Struct(ttlv.TagName,
				ttlv.Text(ttlv.TagNameValue, "nope"), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText)))...)
			if len(uidsOf(none)) != 0 {
				t.Fatal("locate found a name that is not there")
			}

			// An active key is not destroyed; revoke first, then every use is refused.
			c.failure(v, stateReason(v), ttlv.OpDestroy, uidItem(id))
			c.ok(v, ttlv.OpRevoke, uidItem(id), ttlv.Struct(ttlv.TagRevocationReason,
				ttlv.Enum(ttlv.TagRevocationReasonCode, ttlv.RevocationUnspecified), ttlv.Text(ttlv.TagRevocationMessage, "rotated")))
			c.failure(v, stateReason(v), ttlv.OpEncrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, msg))
			c.failure(v, stateReason(v), ttlv.OpDecrypt, uidItem(id), cbcParams(), ttlv.Bytes(ttlv.TagData, ct), ttlv.Bytes(ttlv.TagIVCounterNonce, iv))
			c.failure(v, stateReason(v), ttlv.OpGet, uidItem(id))
			attrs = attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, uidItem(id)))
			if attrs[ttlv.TagState][0].Int != int64(ttlv.StateDeactivated) ||
				attrs[ttlv.TagRevocationReason][0].Child(ttlv.TagRevocationMessage).Text() != "rotated" {
				t.Fatalf("after revoke: %+v", attrs)
			}

			c.ok(v, ttlv.OpDestroy, uidItem(id))
			c.failure(v, stateReason(v), ttlv.OpDestroy, uidItem(id))
			attrs = attrsOf(t, v, c.ok(v, ttlv.OpGetAttributes, uidItem(id)))
			if attrs[ttlv.TagState][0].Int != int64(ttlv.StateDestroyed) || len(attrs[ttlv.TagDestroyDate]) != 1 {
				t.Fatalf("after destroy: %+v", attrs)
			}
			o, err := e.srv.reg.get("acme/db", id)
			if err != nil || o.Wrapped != nil {
				t.Fatalf("wrapped key kept after Destroy: %v", err)
			}
		})
	}
	ops := testutil.ToFloat64(e.srv.metrics.ops.WithLabelValues("encrypt", "success"))
	if ops < 4 {
		t.Fatalf("encrypt success metric = %v", ops)
	}
}

func stateReason(v version) uint32 {
	if v.v2() {
		return ttlv.ReasonWrongKeyLifecycleState
	}
	return ttlv.ReasonPermissionDenied
}

func locateAttrs(v version, values ...ttlv.Item) []ttlv.Item {
	if v.v2() {
		return []ttlv.Item{ttlv.Struct(ttlv.TagAttributes, values...)}
	}
	return encodeAttrs(values, false)
}

func uidsOf(p ttlv.Item) []string {
	var ids []string
	for _, u := range p.All(ttlv.TagUniqueIdentifier) {
		ids = append(ids, u.Text())
	}
	return ids
}

// TestTenantIsolation: no identity sees or uses another's objects, whether
// of another tenant or another service of the same tenant.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t, nil)
	a := e.dial("tenant-a", "app")
	id := a.create(v14, "shared-name")
	a.ok(v14, ttlv.OpActivate, uidItem(id))
	a.ok(v14, ttlv.OpEncrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, []byte("a's data")))

	for _, other := range []struct{ tenant, service string }{{"tenant-b", "app"}, {"tenant-a", "other"}} {
		b := e.dial(other.tenant, other.service)
		for _, v := range []version{v14, v20} {
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpGet, uidItem(id))
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpGetAttributes, uidItem(id))
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpGetAttributeList, uidItem(id))
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpEncrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, []byte("x")))
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpDecrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, []byte("x")),
				ttlv.Bytes(ttlv.TagIVCounterNonce, make([]byte, 12)), ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, make([]byte, 16)))
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpRevoke, uidItem(id), ttlv.Struct(ttlv.TagRevocationReason,
				ttlv.Enum(ttlv.TagRevocationReasonCode, ttlv.RevocationKeyCompromise)))
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpDestroy, uidItem(id))
			b.failure(v, ttlv.ReasonItemNotFound, ttlv.OpActivate, uidItem(id))
			if ids := uidsOf(b.ok(v, ttlv.OpLocate)); len(ids) != 0 {
				t.Fatalf("%s/%s locates %v", other.tenant, other.service, ids)
			}
		}
		// Its own object of the same name is its own.
		bid := b.create(v14, "shared-name")
		if ids := uidsOf(b.ok(v14, ttlv.OpLocate, locateAttrs(v14, ttlv.Struct(ttlv.TagName,
			ttlv.Text(ttlv.TagNameValue, "shared-name"), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText)))...)); !slices.Equal(ids, []string{bid}) {
			t.Fatalf("locate by name across identities: %v", ids)
		}
	}
	// A's object is untouched.
	attrs := attrsOf(t, v14, a.ok(v14, ttlv.OpGetAttributes, uidItem(id)))
	if attrs[ttlv.TagState][0].Int != int64(ttlv.StateActive) {
		t.Fatal("a's key changed")
	}
	if ids := uidsOf(a.ok(v14, ttlv.OpLocate)); !slices.Equal(ids, []string{id}) {
		t.Fatalf("a locates %v", ids)
	}
}

// TestIsolationInWrapping: even with the registry record of another
// identity in hand, the wrapped key does not open for another owner or
// another object: it is bound to both.
func TestIsolationInWrapping(t *testing.T) {
	e := newEnv(t, nil)
	a := e.dial("tenant-a", "app")
	id1 := a.create(v14, "one")
	id2 := a.create(v14, "two")
	o1, err := e.srv.reg.get("tenant-a/app", id1)
	if err != nil {
		t.Fatal(err)
	}
	// Move object 1's wrapped key into object 2: it must not open there.
	if _, err := e.srv.reg.update("tenant-a/app", id2, func(o *object) error { o.Wrapped = o1.Wrapped; return nil }); err != nil {
		t.Fatal(err)
	}
	a.failure(v14, ttlv.ReasonGeneralFailure, ttlv.OpGet, uidItem(id2))
	a.ok(v14, ttlv.OpGet, uidItem(id1))
}

// TestCreateRefuses: only AES-256 symmetric keys; the spec's own AES-128
// Create (use case 3.1.1) is refused with Invalid Field.
func TestCreateRefuses(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "db")

	raw, err := os.ReadFile(filepath.Join("ttlv", "testdata", "vectors", "uc10-3.1.1-create-request.hex"))
	if err != nil {
		t.Fatal(err)
	}
	req := decodeVector(t, raw)
	// The use case speaks KMIP 1.0; this server speaks 1.2 and later.
	req.Child(ttlv.TagRequestHeader).Child(ttlv.TagProtocolVersion).Child(ttlv.TagProtocolVersionMinor).Int = 2
	resp, err := c.roundTrip(ttlv.Marshal(req))
	if err != nil {
		t.Fatal(err)
	}
	checkFailure(t, *resp.Child(ttlv.TagBatchItem), ttlv.ReasonInvalidField)

	for _, v := range []version{v14, v20} {
		c.failure(v, ttlv.ReasonInvalidField, ttlv.OpCreate, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)}, keyAttrs(v, 128, "")...)...)
		des := []ttlv.Item{ttlv.Enum(ttlv.TagCryptographicAlgorithm, 0x02), ttlv.Int(ttlv.TagCryptographicLength, 256)}
		var desAttrs ttlv.Item
		if v.v2() {
			desAttrs = ttlv.Struct(ttlv.TagAttributes, des...)
		} else {
			desAttrs = ttlv.Struct(ttlv.TagTemplateAttribute, encodeAttrs(des, false)...)
		}
		c.failure(v, ttlv.ReasonInvalidField, ttlv.OpCreate, ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey), desAttrs)
		c.failure(v, ttlv.ReasonInvalidField, ttlv.OpCreate, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, 0x07)}, keyAttrs(v, 256, "")...)...)
		c.failure(v, ttlv.ReasonInvalidField, ttlv.OpCreate, ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey))
		c.failure(v, ttlv.ReasonOperationNotSupported, ttlv.OpCreateKeyPair, ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey))
	}
	if e.keys.Generated.Load() != 0 {
		t.Fatal("a refused Create made a key")
	}
}

// TestRegionRefusal: when the region refuses the service's key (revoked
// upstream), KMIP clients get Permission Denied at once.
func TestRegionRefusal(t *testing.T) {
	e := newEnv(t, nil)
	e.keys.Refusal = ErrKeyRefused
	c := e.dial("acme", "db")
	id := c.create(v14, "")
	c.ok(v14, ttlv.OpActivate, uidItem(id))
	e.keys.Refuse("acme", "db")
	c.failure(v14, ttlv.ReasonPermissionDenied, ttlv.OpGet, uidItem(id))
	c.failure(v14, ttlv.ReasonPermissionDenied, ttlv.OpEncrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, []byte("x")))
	c.failure(v14, ttlv.ReasonPermissionDenied, ttlv.OpCreate, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)}, keyAttrs(v14, 256, "")...)...)
}

// TestRegistryFile: objects survive a restart in the bbolt file, and the
// file never holds the key's plaintext.
func TestRegistryFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmip.db")
	e := newEnv(t, func(c *Config) { c.RegistryPath = path })
	c := e.dial("acme", "db")
	id := c.create(v20, "persistent")
	c.ok(v20, ttlv.OpActivate, uidItem(id))
	key := c.ok(v20, ttlv.OpGet, uidItem(id)).Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Bytes

	e.stop()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, key) {
		t.Fatal("the registry file holds the key's plaintext")
	}
	e.start()
	c = e.dial("acme", "db")
	got := c.ok(v14, ttlv.OpGet, uidItem(id)).Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Bytes
	if !bytes.Equal(got, key) {
		t.Fatal("key changed across a restart")
	}
	c.ok(v14, ttlv.OpRevoke, uidItem(id), ttlv.Struct(ttlv.TagRevocationReason, ttlv.Enum(ttlv.TagRevocationReasonCode, ttlv.RevocationKeyCompromise)))
	c.ok(v14, ttlv.OpDestroy, uidItem(id))
	attrs := attrsOf(t, v14, c.ok(v14, ttlv.OpGetAttributes, uidItem(id)))
	if attrs[ttlv.TagState][0].Int != int64(ttlv.StateDestroyedCompromised) {
		t.Fatalf("state %d", attrs[ttlv.TagState][0].Int)
	}
}

func TestConfigAndClose(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Fatal("New without Keys")
	}
	e := newEnv(t, nil)
	cfg := e.cfg
	cfg.ClientCAs = nil
	if _, err := New(cfg, e.keys); err == nil || !strings.Contains(err.Error(), "ClientCAs") {
		t.Fatalf("Validate: %v", err)
	}
	srv := e.srv
	e.stop()
	if err := srv.Close(); !errors.Is(err, ErrShutdown) {
		t.Fatalf("second Close: %v", err)
	}
}

// A Re-key's two registry changes (the old key linked, the new key stored) are one step: when the
// second cannot be made, the first is not kept either, in memory and in the file.
func TestRegistryReplaceIsAtomic(t *testing.T) {
	bolt, err := openBoltRegistry(filepath.Join(t.TempDir(), "kmip.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.close()
	for name, reg := range map[string]registry{"memory": newMemRegistry(), "file": bolt} {
		t.Run(name, func(t *testing.T) {
			for _, id := range []string{"old", "taken"} {
				if err := reg.create("o", &object{ID: id, Names: []string{id + "-name"}}); err != nil {
					t.Fatal(err)
				}
			}
			// The new object's identifier is taken: the whole replace fails.
			err := reg.replace("o", "old", func(o *object) (*object, error) {
				n := &object{ID: "taken", Replaced: o.ID}
				n.Names, o.Names, o.Replacement = o.Names, nil, n.ID
				return n, nil
			})
			if err == nil {
				t.Fatal("replace onto a taken identifier succeeded")
			}
			old, err := reg.get("o", "old")
			if err != nil {
				t.Fatal(err)
			}
			if old.Replacement != "" || len(old.Names) != 1 {
				t.Fatalf("the failed replace changed the old object: replacement %q, names %v", old.Replacement, old.Names)
			}
			// A free identifier: both changes are kept.
			if err := reg.replace("o", "old", func(o *object) (*object, error) {
				n := &object{ID: "new", Replaced: o.ID}
				n.Names, o.Names, o.Replacement = o.Names, nil, n.ID
				return n, nil
			}); err != nil {
				t.Fatal(err)
			}
			old, _ = reg.get("o", "old")
			n, err := reg.get("o", "new")
			if err != nil || old.Replacement != "new" || n.Replaced != "old" || len(n.Names) != 1 || len(old.Names) != 0 {
				t.Fatalf("after replace: old %+v, new %+v, %v", old, n, err)
			}
			if err := reg.replace("o", "missing", func(o *object) (*object, error) { return &object{ID: "x"}, nil }); !errors.Is(err, errNotFound) {
				t.Fatalf("replace of a missing object: %v", err)
			}
		})
	}
}
