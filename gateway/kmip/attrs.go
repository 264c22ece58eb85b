package kmip

import (
	"time"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// attrDef is one attribute the server knows: its KMIP 1.x name, its tag
// (how KMIP 2.0 writes it inside an Attributes structure) and its type.
type attrDef struct {
	name string
	tag  ttlv.Tag
	typ  ttlv.Type
}

// attrDefs are the attributes the server stores or reports, in the order
// Get Attributes returns them.
var attrDefs = []attrDef{
	{"Unique Identifier", ttlv.TagUniqueIdentifier, ttlv.TypeTextString},
	{"Object Type", ttlv.TagObjectType, ttlv.TypeEnumeration},
	{"Cryptographic Algorithm", ttlv.TagCryptographicAlgorithm, ttlv.TypeEnumeration},
	{"Cryptographic Length", ttlv.TagCryptographicLength, ttlv.TypeInteger},
	{"Cryptographic Usage Mask", ttlv.TagCryptographicUsageMask, ttlv.TypeInteger},
	{"Cryptographic Parameters", ttlv.TagCryptographicParameters, ttlv.TypeStructure},
	{"Name", ttlv.TagName, ttlv.TypeStructure},
	{"Object Group", ttlv.TagObjectGroup, ttlv.TypeTextString},
	{"State", ttlv.TagState, ttlv.TypeEnumeration},
	{"Initial Date", ttlv.TagInitialDate, ttlv.TypeDateTime},
	{"Activation Date", ttlv.TagActivationDate, ttlv.TypeDateTime},
	{"Deactivation Date", ttlv.TagDeactivationDate, ttlv.TypeDateTime},
	{"Destroy Date", ttlv.TagDestroyDate, ttlv.TypeDateTime},
	{"Compromise Occurrence Date", ttlv.TagCompromiseOccurrenceDate, ttlv.TypeDateTime},
	{"Compromise Date", ttlv.TagCompromiseDate, ttlv.TypeDateTime},
	{"Revocation Reason", ttlv.TagRevocationReason, ttlv.TypeStructure},
	{"Link", ttlv.TagLink, ttlv.TypeStructure},
	{"Last Change Date", ttlv.TagLastChangeDate, ttlv.TypeDateTime},
}

func defByName(name string) *attrDef {
	for i := range attrDefs {
		if attrDefs[i].name == name {
			return &attrDefs[i]
		}
	}
	return nil
}

func defByTag(tag ttlv.Tag) *attrDef {
	for i := range attrDefs {
		if attrDefs[i].tag == tag {
			return &attrDefs[i]
		}
	}
	return nil
}

// attr is one attribute of a request, in either encoding. def is nil for an
// attribute the server does not know; value carries the attribute's tag
// whatever the encoding.
type attr struct {
	def   *attrDef
	value ttlv.Item
}

// requestAttrs collects the attributes of a request payload, accepting both
// KMIP 1.x encodings (Attribute structures, directly or in a
// Template-Attribute) and KMIP 2.0's (an Attributes structure of tagged
// values), whatever the message's protocol version: clients mix them.
func requestAttrs(payload ttlv.Item) ([]attr, error) {
	var out []attr
	for _, c := range payload.Children {
		switch c.Tag {
		case ttlv.TagAttribute:
			a, err := v1Attr(c)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		case ttlv.TagTemplateAttribute, ttlv.TagCommonTemplateAttribute:
			for _, tc := range c.Children {
				switch tc.Tag {
				case ttlv.TagAttribute:
					a, err := v1Attr(tc)
					if err != nil {
						return nil, err
					}
					out = append(out, a)
				case ttlv.TagName:
					return nil, fail(ttlv.ReasonFeatureNotSupported, "templates are not supported")
				default:
					return nil, invalidField("unexpected field in Template-Attribute")
				}
			}
		case ttlv.TagAttributes:
			if c.Type != ttlv.TypeStructure {
				return nil, invalidField("Attributes is not a structure")
			}
			for _, v := range c.Children {
				d := defByTag(v.Tag)
				if d != nil && d.typ != v.Type {
					return nil, invalidField("attribute %s has the wrong type", d.name)
				}
				out = append(out, attr{def: d, value: v})
			}
		}
	}
	return out, nil
}

func v1Attr(a ttlv.Item) (attr, error) {
	if a.Type != ttlv.TypeStructure {
		return attr{}, invalidField("Attribute is not a structure")
	}
	name := a.Child(ttlv.TagAttributeName)
	val := a.Child(ttlv.TagAttributeValue)
	if name == nil || name.Type != ttlv.TypeTextString || val == nil {
		return attr{}, invalidField("Attribute lacks a name or a value")
	}
	d := defByName(name.Text())
	v := *val
	if d != nil {
		if d.typ != v.Type {
			return attr{}, invalidField("attribute %s has the wrong type", d.name)
		}
		v.Tag = d.tag
	}
	return attr{def: d, value: v}, nil
}

// objectAttrs returns o's attributes as tagged values, in attrDefs order.
func objectAttrs(o *object) []ttlv.Item {
	var out []ttlv.Item
	out = append(out,
		ttlv.Text(ttlv.TagUniqueIdentifier, o.ID),
		ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey),
		ttlv.Enum(ttlv.TagCryptographicAlgorithm, o.Algorithm),
		ttlv.Int(ttlv.TagCryptographicLength, o.Length),
		ttlv.Int(ttlv.TagCryptographicUsageMask, o.UsageMask),
	)
	if o.Mode != 0 {
		p := ttlv.Struct(ttlv.TagCryptographicParameters, ttlv.Enum(ttlv.TagBlockCipherMode, o.Mode))
		if o.Padding != 0 {
			p.Children = append(p.Children, ttlv.Enum(ttlv.TagPaddingMethod, o.Padding))
		}
		p.Children = append(p.Children, ttlv.Enum(ttlv.TagCryptographicAlgorithm, ttlv.AlgorithmAES))
		out = append(out, p)
	}
	for _, n := range o.Names {
		out = append(out, ttlv.Struct(ttlv.TagName,
			ttlv.Text(ttlv.TagNameValue, n), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText)))
	}
	if o.Group != "" {
		out = append(out, ttlv.Text(ttlv.TagObjectGroup, o.Group))
	}
	out = append(out, ttlv.Enum(ttlv.TagState, o.State), ttlv.DateTime(ttlv.TagInitialDate, o.Initial))
	for _, d := range []struct {
		tag ttlv.Tag
		t   time.Time
	}{
		{ttlv.TagActivationDate, o.Activation},
		{ttlv.TagDeactivationDate, o.Deactivation},
		{ttlv.TagDestroyDate, o.Destroy},
		{ttlv.TagCompromiseOccurrenceDate, o.CompromiseOccurrence},
		{ttlv.TagCompromiseDate, o.Compromise},
	} {
		if !d.t.IsZero() {
			out = append(out, ttlv.DateTime(d.tag, d.t))
		}
	}
	if o.RevocationCode != 0 {
		r := ttlv.Struct(ttlv.TagRevocationReason, ttlv.Enum(ttlv.TagRevocationReasonCode, o.RevocationCode))
		if o.RevocationMessage != "" {
			r.Children = append(r.Children, ttlv.Text(ttlv.TagRevocationMessage, o.RevocationMessage))
		}
		out = append(out, r)
	}
	for _, l := range []struct {
		typ uint32
		id  string
	}{{ttlv.LinkReplacementObject, o.Replacement}, {ttlv.LinkReplacedObject, o.Replaced}} {
		if l.id != "" {
			out = append(out, ttlv.Struct(ttlv.TagLink,
				ttlv.Enum(ttlv.TagLinkType, l.typ), ttlv.Text(ttlv.TagLinkedObjectIdentifier, l.id)))
		}
	}
	out = append(out, ttlv.DateTime(ttlv.TagLastChangeDate, o.LastChange))
	return out
}

// encodeAttrs writes values (tagged as objectAttrs makes them) in the
// encoding of the protocol version: an Attributes structure for 2.0, one
// Attribute structure each for 1.x, with an Attribute Index on the second
// and later instances of a multi-valued attribute.
func encodeAttrs(values []ttlv.Item, v2 bool) []ttlv.Item {
	if v2 {
		return []ttlv.Item{ttlv.Struct(ttlv.TagAttributes, values...)}
	}
	out := make([]ttlv.Item, 0, len(values))
	seen := map[ttlv.Tag]int32{}
	for _, v := range values {
		d := defByTag(v.Tag)
		a := ttlv.Struct(ttlv.TagAttribute, ttlv.Text(ttlv.TagAttributeName, d.name))
		if i := seen[v.Tag]; i > 0 {
			a.Children = append(a.Children, ttlv.Int(ttlv.TagAttributeIndex, i))
		}
		seen[v.Tag]++
		v.Tag = ttlv.TagAttributeValue
		a.Children = append(a.Children, v)
		out = append(out, a)
	}
	return out
}
