package kmip

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

func nameItem(n string) ttlv.Item {
	return ttlv.Struct(ttlv.TagName, ttlv.Text(ttlv.TagNameValue, n), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText))
}

// v1Attr is a KMIP 1.x Attribute structure; index < 0 leaves it out.
func v1AttrItem(name string, index int32, value ttlv.Item) ttlv.Item {
	a := ttlv.Struct(ttlv.TagAttribute, ttlv.Text(ttlv.TagAttributeName, name))
	if index >= 0 {
		a.Children = append(a.Children, ttlv.Int(ttlv.TagAttributeIndex, index))
	}
	value.Tag = ttlv.TagAttributeValue
	a.Children = append(a.Children, value)
	return a
}

func (c *client) names(v version, id string) []string {
	c.t.Helper()
	var out []string
	for _, n := range attrsOf(c.t.(*testing.T), v, c.ok(v, ttlv.OpGetAttributes, uidItem(id)))[ttlv.TagName] {
		out = append(out, n.Child(ttlv.TagNameValue).Text())
	}
	return out
}

func (c *client) group(v version, id string) []ttlv.Item {
	c.t.Helper()
	return attrsOf(c.t.(*testing.T), v, c.ok(v, ttlv.OpGetAttributes, uidItem(id)))[ttlv.TagObjectGroup]
}

// TestAttributeOpsV1: Add, Modify and Delete Attribute in KMIP 1.4's
// encoding, with the Result Reasons of KMIP 1.4's error tables.
func TestAttributeOpsV1(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "app")
	v := v14
	id := c.create(v, "a")

	p := c.ok(v, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Name", -1, nameItem("b")))
	if a := p.Child(ttlv.TagAttribute); a == nil || a.Child(ttlv.TagAttributeIndex) == nil || a.Child(ttlv.TagAttributeIndex).Int != 1 {
		t.Fatal("Add Attribute does not answer with the new instance's index")
	}
	if got := c.names(v, id); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("names %q", got)
	}
	c.failure(v, ttlv.ReasonIllegalOperation, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Name", -1, nameItem("b")))
	c.failure(v, ttlv.ReasonInvalidField, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Name", 3, nameItem("z")))
	c.failure(v, ttlv.ReasonInvalidField, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Name", -1, nameItem("")))
	c.failure(v, ttlv.ReasonInvalidField, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Name", -1, ttlv.Text(0, "not a structure")))
	c.ok(v, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Object Group", -1, ttlv.Text(0, "g1")))
	c.failure(v, ttlv.ReasonIllegalOperation, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Object Group", -1, ttlv.Text(0, "g2")))
	for _, ro := range []ttlv.Item{
		v1AttrItem("State", -1, ttlv.Enum(0, ttlv.StateActive)),
		v1AttrItem("Cryptographic Usage Mask", -1, ttlv.Int(0, 0x7fffffff)),
		v1AttrItem("Link", -1, ttlv.Struct(0, ttlv.Enum(ttlv.TagLinkType, ttlv.LinkReplacedObject), ttlv.Text(ttlv.TagLinkedObjectIdentifier, id))),
	} {
		c.failure(v, ttlv.ReasonPermissionDenied, ttlv.OpAddAttribute, uidItem(id), ro)
	}
	c.failure(v, ttlv.ReasonInvalidField, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("x-custom", -1, ttlv.Text(0, "v")))
	c.failure(v, ttlv.ReasonInvalidField, ttlv.OpAddAttribute, uidItem(id))

	// Modify: by index (0 when none is given).
	p = c.ok(v, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Name", 1, nameItem("c")))
	if a := p.Child(ttlv.TagAttribute); a == nil || a.Child(ttlv.TagAttributeValue).Child(ttlv.TagNameValue).Text() != "c" {
		t.Fatal("Modify Attribute does not answer with the new value")
	}
	c.ok(v, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Name", -1, nameItem("a2")))
	if got := c.names(v, id); !slices.Equal(got, []string{"a2", "c"}) {
		t.Fatalf("names %q", got)
	}
	c.failure(v, ttlv.ReasonItemNotFound, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Name", 5, nameItem("d")))
	c.failure(v, ttlv.ReasonIllegalOperation, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Name", 0, nameItem("c")))
	c.failure(v, ttlv.ReasonItemNotFound, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Cryptographic Parameters", -1, cbcParams()))
	c.failure(v, ttlv.ReasonPermissionDenied, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Cryptographic Length", -1, ttlv.Int(0, 128)))
	c.ok(v, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Object Group", -1, ttlv.Text(0, "g2")))
	if g := c.group(v, id); len(g) != 1 || g[0].Text() != "g2" {
		t.Fatal("Object Group not modified")
	}

	// Cryptographic Parameters set by Add become the key's default mode.
	c.ok(v, ttlv.OpActivate, uidItem(id))
	c.ok(v, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Cryptographic Parameters", -1,
		ttlv.Struct(0, ttlv.Enum(ttlv.TagBlockCipherMode, ttlv.ModeCBC))))
	enc := c.ok(v, ttlv.OpEncrypt, uidItem(id), ttlv.Bytes(ttlv.TagData, []byte("hello")))
	if enc.Child(ttlv.TagAuthenticatedEncryptionTag) != nil || len(enc.Child(ttlv.TagIVCounterNonce).Bytes) != 16 {
		t.Fatal("the key's Cryptographic Parameters (CBC) were not its default")
	}
	c.failure(v, ttlv.ReasonInvalidField, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Cryptographic Parameters", -1,
		ttlv.Struct(0, ttlv.Enum(ttlv.TagBlockCipherMode, 0x02))))

	// Delete: the deleted value comes back.
	p = c.ok(v, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Text(ttlv.TagAttributeName, "Name"), ttlv.Int(ttlv.TagAttributeIndex, 0))
	if a := p.Child(ttlv.TagAttribute); a == nil || a.Child(ttlv.TagAttributeValue).Child(ttlv.TagNameValue).Text() != "a2" {
		t.Fatal("Delete Attribute does not answer with the deleted value")
	}
	if got := c.names(v, id); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("names %q", got)
	}
	c.ok(v, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Text(ttlv.TagAttributeName, "Object Group"))
	c.failure(v, ttlv.ReasonItemNotFound, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Text(ttlv.TagAttributeName, "Object Group"))
	c.failure(v, ttlv.ReasonItemNotFound, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Text(ttlv.TagAttributeName, "Name"), ttlv.Int(ttlv.TagAttributeIndex, 1))
	c.failure(v, ttlv.ReasonPermissionDenied, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Text(ttlv.TagAttributeName, "Unique Identifier"))
	c.failure(v, ttlv.ReasonInvalidField, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Text(ttlv.TagAttributeName, "x-custom"))
	if g := c.group(v, id); len(g) != 0 {
		t.Fatal("Object Group not deleted")
	}

	// At most maxNames names.
	for i := len(c.names(v, id)); i < maxNames; i++ {
		c.ok(v, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Name", -1, nameItem(fmt.Sprintf("n%d", i))))
	}
	c.failure(v, ttlv.ReasonIndexOutOfBounds, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Name", -1, nameItem("one-too-many")))

	// Another identity's object, or none: Item Not Found, and nothing changes.
	other := e.dial("acme", "other")
	other.failure(v, ttlv.ReasonItemNotFound, ttlv.OpAddAttribute, uidItem(id), v1AttrItem("Object Group", -1, ttlv.Text(0, "stolen")))
	other.failure(v, ttlv.ReasonItemNotFound, ttlv.OpModifyAttribute, uidItem(id), v1AttrItem("Name", -1, nameItem("stolen")))
	other.failure(v, ttlv.ReasonItemNotFound, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Text(ttlv.TagAttributeName, "Name"))
	other.failure(v, ttlv.ReasonItemNotFound, ttlv.OpCheck, uidItem(id))
	if g := c.group(v, id); len(g) != 0 || c.names(v, id)[0] != "c" {
		t.Fatal("another identity changed the object")
	}
	c.failure(v, ttlv.ReasonItemNotFound, ttlv.OpAddAttribute, uidItem("no-such-id"), v1AttrItem("Object Group", -1, ttlv.Text(0, "g")))

	// Locate sees the changed names.
	found := uidsOf(c.ok(v, ttlv.OpLocate, locateAttrs(v, nameItem("n5"))...))
	if !slices.Equal(found, []string{id}) {
		t.Fatalf("Locate by an added name: %q", found)
	}
}

// TestAttributeOpsV2: the same operations in KMIP 2.0's encoding (New
// Attribute, Current Attribute, Attribute Reference) and its attribute
// Result Reasons.
func TestAttributeOpsV2(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "app")
	v := v20
	id := c.create(v, "a")
	newAttr := func(it ttlv.Item) ttlv.Item { return ttlv.Struct(ttlv.TagNewAttribute, it) }
	curAttr := func(it ttlv.Item) ttlv.Item { return ttlv.Struct(ttlv.TagCurrentAttribute, it) }

	if p := c.ok(v, ttlv.OpAddAttribute, uidItem(id), newAttr(nameItem("b"))); p.Child(ttlv.TagAttribute) != nil {
		t.Fatal("a 2.0 response carries a 1.x Attribute")
	}
	c.failure(v, ttlv.ReasonNonUniqueNameAttribute, ttlv.OpAddAttribute, uidItem(id), newAttr(nameItem("b")))
	c.ok(v, ttlv.OpAddAttribute, uidItem(id), newAttr(ttlv.Text(ttlv.TagObjectGroup, "g1")))
	c.failure(v, ttlv.ReasonAttributeSingleValued, ttlv.OpAddAttribute, uidItem(id), newAttr(ttlv.Text(ttlv.TagObjectGroup, "g2")))
	c.failure(v, ttlv.ReasonAttributeReadOnly, ttlv.OpAddAttribute, uidItem(id), newAttr(ttlv.Enum(ttlv.TagState, ttlv.StateActive)))
	c.failure(v, ttlv.ReasonUnsupportedAttribute, ttlv.OpAddAttribute, uidItem(id), newAttr(ttlv.Interval(ttlv.TagLeaseTime, 60)))
	c.failure(v, ttlv.ReasonInvalidAttributeValue, ttlv.OpAddAttribute, uidItem(id), newAttr(ttlv.Int(ttlv.TagObjectGroup, 1)))

	c.ok(v, ttlv.OpModifyAttribute, uidItem(id), curAttr(nameItem("b")), newAttr(nameItem("c")))
	if got := c.names(v, id); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("names %q", got)
	}
	c.failure(v, ttlv.ReasonAttributeInstanceNotFound, ttlv.OpModifyAttribute, uidItem(id), curAttr(nameItem("zz")), newAttr(nameItem("d")))
	c.failure(v, ttlv.ReasonAttributeNotFound, ttlv.OpModifyAttribute, uidItem(id), newAttr(cbcParams()))
	c.failure(v, ttlv.ReasonAttributeReadOnly, ttlv.OpModifyAttribute, uidItem(id), newAttr(ttlv.Int(ttlv.TagCryptographicLength, 128)))

	c.ok(v, ttlv.OpAddAttribute, uidItem(id), newAttr(nameItem("d")))
	// Attribute Reference (without Current Attribute: the first instance,
	// "a") as PyKMIP writes it: Vendor Identification and
	// Attribute Name; a vendor's attribute is not kept.
	c.ok(v, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Struct(ttlv.TagAttributeReference,
		ttlv.Text(ttlv.TagVendorIdentification, ""), ttlv.Text(ttlv.TagAttributeName, "Name")))
	c.failure(v, ttlv.ReasonUnsupportedAttribute, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Struct(ttlv.TagAttributeReference,
		ttlv.Text(ttlv.TagVendorIdentification, "acme"), ttlv.Text(ttlv.TagAttributeName, "Name")))
	c.ok(v, ttlv.OpDeleteAttribute, uidItem(id), curAttr(nameItem("d")))
	c.ok(v, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Enum(ttlv.TagAttributeReference, uint32(ttlv.TagObjectGroup)))
	c.failure(v, ttlv.ReasonAttributeNotFound, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Enum(ttlv.TagAttributeReference, uint32(ttlv.TagObjectGroup)))
	c.failure(v, ttlv.ReasonAttributeReadOnly, ttlv.OpDeleteAttribute, uidItem(id), ttlv.Enum(ttlv.TagAttributeReference, uint32(ttlv.TagUniqueIdentifier)))
	if got := c.names(v, id); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("names %q", got)
	}
	if g := c.group(v, id); len(g) != 0 {
		t.Fatal("Object Group not deleted")
	}
}

// TestCheck: Check answers whether the object can be used as asked, with
// each version's Result Reason when it cannot.
func TestCheck(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "app")
	for _, v := range []version{v14, v20} {
		id := c.create(v, "")
		mask := func(m uint32) ttlv.Item { return ttlv.Int(ttlv.TagCryptographicUsageMask, int32(m)) }
		if p := c.ok(v, ttlv.OpCheck, uidItem(id)); p.Child(ttlv.TagUniqueIdentifier).Text() != id {
			t.Fatal("Check does not answer with the identifier")
		}
		c.failure(v, stateReason(v), ttlv.OpCheck, uidItem(id), mask(ttlv.UsageEncrypt))
		c.ok(v, ttlv.OpActivate, uidItem(id))
		c.ok(v, ttlv.OpCheck, uidItem(id), mask(ttlv.UsageEncrypt|ttlv.UsageDecrypt),
			ttlv.Long(ttlv.TagUsageLimitsCount, 10), ttlv.Interval(ttlv.TagLeaseTime, 3600))
		usageReason := ttlv.ReasonPermissionDenied
		if v.v2() {
			usageReason = ttlv.ReasonIncompatibleCryptographicUsageMask
		}
		bi := c.do(v, ttlv.OpCheck, uidItem(id), mask(0x01)) // Sign
		checkFailure(t, bi, usageReason)
		// The failure names the object and the parameter that failed
		// (PyKMIP reads them).
		if p := bi.Child(ttlv.TagResponsePayload); p == nil || p.Child(ttlv.TagUniqueIdentifier).Text() != id ||
			p.Child(ttlv.TagCryptographicUsageMask) == nil || p.Child(ttlv.TagCryptographicUsageMask).Int != 1 {
			t.Fatal("a failed Check does not answer with the failed parameters")
		}
		c.failure(v, ttlv.ReasonInvalidField, ttlv.OpCheck, uidItem(id), ttlv.Int(ttlv.TagUsageLimitsCount, 1))
		c.failure(v, ttlv.ReasonItemNotFound, ttlv.OpCheck, uidItem("no-such-id"))
		c.ok(v, ttlv.OpRevoke, uidItem(id), ttlv.Struct(ttlv.TagRevocationReason, ttlv.Enum(ttlv.TagRevocationReasonCode, ttlv.RevocationUnspecified)))
		c.failure(v, stateReason(v), ttlv.OpCheck, uidItem(id))
	}
}
