package kmip

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// Add, Modify and Delete Attribute change the attributes a client may set
// on its objects: Name (up to maxNames instances), Object Group and
// Cryptographic Parameters (one instance each here). Every other attribute
// is the server's (identity, algorithm, length, usage mask, state, dates,
// links) and read-only. Both encodings are taken whatever the message's
// version: KMIP 1.x's Attribute (name, index, value) and Attribute Name,
// KMIP 2.0's New Attribute, Current Attribute and Attribute Reference.
//
// Attribute Index is the instance's position: deleting Name 0 makes Name 1
// the new Name 0 (KMIP 1.x keeps indices stable; 2.0 drops them, and the
// clients served address names by value).

// attrErr is one kind of attribute refusal, with the Result Reason each
// version has for it: KMIP 1.4's error tables (section 11) for 1.x, 2.0's
// attribute reasons for 2.0.
type attrErr struct {
	v1, v2 uint32
	msg    string
}

var (
	errAttrReadOnly     = attrErr{ttlv.ReasonPermissionDenied, ttlv.ReasonAttributeReadOnly, "the attribute is set by the server"}
	errAttrUnsupported  = attrErr{ttlv.ReasonInvalidField, ttlv.ReasonUnsupportedAttribute, "attribute not supported: Name, Object Group and Cryptographic Parameters can be changed"}
	errAttrSingle       = attrErr{ttlv.ReasonIllegalOperation, ttlv.ReasonAttributeSingleValued, "the attribute has a value already; use Modify Attribute"}
	errAttrNotFound     = attrErr{ttlv.ReasonItemNotFound, ttlv.ReasonAttributeNotFound, "the object has no such attribute; use Add Attribute"}
	errAttrNoInstance   = attrErr{ttlv.ReasonItemNotFound, ttlv.ReasonAttributeInstanceNotFound, "the object has no such attribute instance"}
	errAttrBadValue     = attrErr{ttlv.ReasonInvalidField, ttlv.ReasonInvalidAttributeValue, "invalid attribute value"}
	errAttrDuplicate    = attrErr{ttlv.ReasonIllegalOperation, ttlv.ReasonNonUniqueNameAttribute, "the object has this Name already"}
	errAttrIndexInAdd   = attrErr{ttlv.ReasonInvalidField, ttlv.ReasonInvalidField, "Add Attribute takes no Attribute Index"}
	errAttrTooManyNames = attrErr{ttlv.ReasonIndexOutOfBounds, ttlv.ReasonIndexOutOfBounds, fmt.Sprintf("at most %d names", maxNames)}
)

func (r *request) attrFail(e attrErr, detail ...string) error {
	msg := e.msg
	if len(detail) > 0 {
		msg += ": " + strings.Join(detail, "; ")
	}
	if r.v.v2() {
		return fail(e.v2, "%s", msg)
	}
	return fail(e.v1, "%s", msg)
}

// writable lists the attributes clients may change, and whether each may
// have several instances.
var writable = map[ttlv.Tag]bool{
	ttlv.TagName:                    true,
	ttlv.TagObjectGroup:             false,
	ttlv.TagCryptographicParameters: false,
}

// instances returns o's values of one attribute, as Get Attributes shows
// them.
func instances(o *object, tag ttlv.Tag) []ttlv.Item {
	return slices.DeleteFunc(objectAttrs(o), func(v ttlv.Item) bool { return v.Tag != tag })
}

// setInstances replaces o's values of a writable attribute, validating
// them as Create does.
func (r *request) setInstances(o *object, tag ttlv.Tag, vals []ttlv.Item) error {
	switch tag {
	case ttlv.TagName:
		if len(vals) > maxNames {
			return r.attrFail(errAttrTooManyNames)
		}
		names := make([]string, 0, len(vals))
		for _, v := range vals {
			n, err := nameOf(v)
			if err != nil {
				return r.attrFail(errAttrBadValue, "Name must be 1 to 255 bytes of text")
			}
			if slices.Contains(names, n) {
				return r.attrFail(errAttrDuplicate)
			}
			names = append(names, n)
		}
		o.Names = names
	case ttlv.TagObjectGroup:
		o.Group = ""
		if len(vals) == 1 {
			g := vals[0].Text()
			if g == "" || len(g) > maxGroupLen || strings.ContainsRune(g, 0) || !utf8.ValidString(g) {
				return r.attrFail(errAttrBadValue, fmt.Sprintf("Object Group must be 1 to %d bytes of text", maxGroupLen))
			}
			o.Group = g
		}
	case ttlv.TagCryptographicParameters:
		o.Mode, o.Padding = 0, 0
		if len(vals) == 1 {
			cp, err := parseCryptoParams(&vals[0])
			if err == nil {
				err = cp.check()
			}
			if oe := (*opError)(nil); errors.As(err, &oe) {
				return r.attrFail(errAttrBadValue, oe.msg)
			} else if err != nil {
				return err
			}
			if cp.mode == 0 {
				return r.attrFail(errAttrBadValue, "Cryptographic Parameters need a Block Cipher Mode")
			}
			o.Mode, o.Padding = cp.mode, cp.padding
		}
	}
	return nil
}

// sameValue reports whether two values of a writable attribute are the
// same, as the server stores them (a Name by its text, Cryptographic
// Parameters by mode and padding).
func sameValue(a, b ttlv.Item) bool {
	switch a.Tag {
	case ttlv.TagName:
		na, ea := nameOf(a)
		nb, eb := nameOf(b)
		return ea == nil && eb == nil && na == nb
	case ttlv.TagCryptographicParameters:
		pa, ea := parseCryptoParams(&a)
		pb, eb := parseCryptoParams(&b)
		return ea == nil && eb == nil && pa.mode == pb.mode && pa.padding == pb.padding
	}
	return a.Type == b.Type && a.Int == b.Int && string(a.Bytes) == string(b.Bytes)
}

// target is the attribute instance a request names.
type target struct {
	def     *attrDef
	value   *ttlv.Item // the new value (Add, Modify)
	index   int        // the instance (Modify, Delete); -1: by current
	current *ttlv.Item // the instance by value (KMIP 2.0 Current Attribute)
}

// v1Target reads a KMIP 1.x Attribute structure: name, optional index and
// (if wantValue) value.
func (r *request) v1Target(a *ttlv.Item, wantValue bool) (target, error) {
	t := target{}
	if a.Type != ttlv.TypeStructure {
		return t, invalidField("Attribute is not a structure")
	}
	name := a.Child(ttlv.TagAttributeName)
	if name == nil || name.Type != ttlv.TypeTextString {
		return t, invalidField("Attribute lacks an Attribute Name")
	}
	if t.def = defByName(name.Text()); t.def == nil {
		return t, r.attrFail(errAttrUnsupported)
	}
	if idx := a.Child(ttlv.TagAttributeIndex); idx != nil {
		if idx.Type != ttlv.TypeInteger || idx.Int < 0 {
			return t, invalidField("Attribute Index must be a non-negative integer")
		}
		t.index = int(idx.Int)
	}
	if wantValue {
		val := a.Child(ttlv.TagAttributeValue)
		if val == nil {
			return t, invalidField("Attribute lacks an Attribute Value")
		}
		v := *val
		v.Tag = t.def.tag
		t.value = &v
	}
	return t, nil
}

// v2Value reads a KMIP 2.0 New or Current Attribute: a structure holding
// one attribute value, tagged as the attribute.
func (r *request) v2Value(a *ttlv.Item) (*attrDef, *ttlv.Item, error) {
	if a.Type != ttlv.TypeStructure || len(a.Children) != 1 {
		return nil, nil, invalidField("New Attribute and Current Attribute hold exactly one attribute")
	}
	v := a.Children[0]
	d := defByTag(v.Tag)
	if d == nil {
		return nil, nil, r.attrFail(errAttrUnsupported)
	}
	return d, &v, nil
}

// attrRefDef reads a KMIP 2.0 Attribute Reference: an enumeration of the
// attribute's tag, or (as PyKMIP sends it) a structure of Vendor
// Identification and Attribute Name, which names a standard attribute when
// the vendor is empty. nil: an attribute the server does not keep.
func attrRefDef(ref *ttlv.Item) *attrDef {
	switch ref.Type {
	case ttlv.TypeEnumeration:
		return defByTag(ttlv.Tag(ref.Int))
	case ttlv.TypeStructure:
		if vi := ref.Child(ttlv.TagVendorIdentification); vi != nil && (vi.Type != ttlv.TypeTextString || len(vi.Bytes) > 0) {
			return nil
		}
		if n := ref.Child(ttlv.TagAttributeName); n != nil && n.Type == ttlv.TypeTextString {
			return defByName(n.Text())
		}
	}
	return nil
}

// checkTarget refuses a value of the wrong type for its attribute, and an
// attribute clients may not change.
func (r *request) checkTarget(t target) error {
	if _, ok := writable[t.def.tag]; !ok {
		return r.attrFail(errAttrReadOnly, t.def.name)
	}
	for _, v := range []*ttlv.Item{t.value, t.current} {
		if v != nil && v.Type != t.def.typ {
			return r.attrFail(errAttrBadValue, "attribute "+t.def.name+" has the wrong type")
		}
	}
	return nil
}

// find returns the position of the instance t names among cur.
func (r *request) find(t target, cur []ttlv.Item) (int, error) {
	if len(cur) == 0 {
		return 0, r.attrFail(errAttrNotFound, t.def.name)
	}
	if t.current != nil {
		for i, c := range cur {
			if sameValue(c, *t.current) {
				return i, nil
			}
		}
		return 0, r.attrFail(errAttrNoInstance)
	}
	if t.index >= len(cur) {
		return 0, r.attrFail(errAttrNoInstance)
	}
	return t.index, nil
}

// v1Attribute is the KMIP 1.x Attribute structure for a response.
func v1Attribute(d *attrDef, index int, v ttlv.Item) ttlv.Item {
	a := ttlv.Struct(ttlv.TagAttribute, ttlv.Text(ttlv.TagAttributeName, d.name))
	if index > 0 {
		a.Children = append(a.Children, ttlv.Int(ttlv.TagAttributeIndex, int32(index)))
	}
	v.Tag = ttlv.TagAttributeValue
	a.Children = append(a.Children, v)
	return a
}

// changeAttr runs fn on the object a request names, atomically, and
// answers with its Unique Identifier and (KMIP 1.x) the Attribute fn
// returns.
func (s *Server) changeAttr(r *request, p ttlv.Item, what string, fn func(o *object) (*attrDef, int, ttlv.Item, error)) ([]ttlv.Item, error) {
	now := s.now().UTC()
	var (
		d     *attrDef
		index int
		val   ttlv.Item
	)
	o, err := s.update(r, p, func(o *object) error {
		var err error
		if d, index, val, err = fn(o); err != nil {
			return err
		}
		o.LastChange = now
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.placeholder = o.ID
	r.log.Info("kmip: attribute "+what, "unique-id", o.ID, "attribute", d.name)
	out := []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}
	if !r.v.v2() {
		out = append(out, v1Attribute(d, index, val))
	}
	return out, nil
}

func (s *Server) addAttribute(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	var t target
	var err error
	switch {
	case p.Child(ttlv.TagAttribute) != nil:
		a := p.Child(ttlv.TagAttribute)
		if t, err = r.v1Target(a, true); err != nil {
			return nil, err
		}
		if a.Child(ttlv.TagAttributeIndex) != nil {
			return nil, r.attrFail(errAttrIndexInAdd)
		}
	case p.Child(ttlv.TagNewAttribute) != nil:
		if t.def, t.value, err = r.v2Value(p.Child(ttlv.TagNewAttribute)); err != nil {
			return nil, err
		}
	default:
		return nil, invalidField("Attribute (KMIP 1.x) or New Attribute (2.0) is required")
	}
	if err := r.checkTarget(t); err != nil {
		return nil, err
	}
	return s.changeAttr(r, p, "added", func(o *object) (*attrDef, int, ttlv.Item, error) {
		cur := instances(o, t.def.tag)
		if !writable[t.def.tag] && len(cur) > 0 {
			return nil, 0, ttlv.Item{}, r.attrFail(errAttrSingle, t.def.name)
		}
		if t.def.tag == ttlv.TagName && len(cur) >= maxNames {
			return nil, 0, ttlv.Item{}, r.attrFail(errAttrTooManyNames)
		}
		if err := r.setInstances(o, t.def.tag, append(cur, *t.value)); err != nil {
			return nil, 0, ttlv.Item{}, err
		}
		now := instances(o, t.def.tag)
		return t.def, len(cur), now[len(cur)], nil
	})
}

func (s *Server) modifyAttribute(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	var t target
	var err error
	switch {
	case p.Child(ttlv.TagAttribute) != nil:
		if t, err = r.v1Target(p.Child(ttlv.TagAttribute), true); err != nil {
			return nil, err
		}
	case p.Child(ttlv.TagNewAttribute) != nil:
		if t.def, t.value, err = r.v2Value(p.Child(ttlv.TagNewAttribute)); err != nil {
			return nil, err
		}
		if ca := p.Child(ttlv.TagCurrentAttribute); ca != nil {
			cd, cv, err := r.v2Value(ca)
			if err != nil {
				return nil, err
			}
			if cd != t.def {
				return nil, invalidField("Current Attribute and New Attribute name different attributes")
			}
			t.current = cv
		}
	default:
		return nil, invalidField("Attribute (KMIP 1.x) or New Attribute (2.0) is required")
	}
	if err := r.checkTarget(t); err != nil {
		return nil, err
	}
	return s.changeAttr(r, p, "modified", func(o *object) (*attrDef, int, ttlv.Item, error) {
		cur := instances(o, t.def.tag)
		i, err := r.find(t, cur)
		if err != nil {
			return nil, 0, ttlv.Item{}, err
		}
		cur[i] = *t.value
		if err := r.setInstances(o, t.def.tag, cur); err != nil {
			return nil, 0, ttlv.Item{}, err
		}
		return t.def, i, instances(o, t.def.tag)[i], nil
	})
}

func (s *Server) deleteAttribute(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	var t target
	var err error
	switch {
	case p.Child(ttlv.TagAttributeName) != nil:
		// KMIP 1.x: Attribute Name and an optional Attribute Index, as
		// fields of the payload.
		if t, err = r.v1Target(&ttlv.Item{Tag: ttlv.TagAttribute, Type: ttlv.TypeStructure, Children: p.Children}, false); err != nil {
			return nil, err
		}
	case p.Child(ttlv.TagCurrentAttribute) != nil:
		if t.def, t.current, err = r.v2Value(p.Child(ttlv.TagCurrentAttribute)); err != nil {
			return nil, err
		}
	case p.Child(ttlv.TagAttributeReference) != nil:
		if t.def = attrRefDef(p.Child(ttlv.TagAttributeReference)); t.def == nil {
			return nil, r.attrFail(errAttrUnsupported)
		}
	default:
		return nil, invalidField("Attribute Name (KMIP 1.x), Current Attribute or Attribute Reference (2.0) is required")
	}
	if err := r.checkTarget(t); err != nil {
		return nil, err
	}
	return s.changeAttr(r, p, "deleted", func(o *object) (*attrDef, int, ttlv.Item, error) {
		cur := instances(o, t.def.tag)
		i, err := r.find(t, cur)
		if err != nil {
			return nil, 0, ttlv.Item{}, err
		}
		old := cur[i]
		if err := r.setInstances(o, t.def.tag, slices.Delete(cur, i, i+1)); err != nil {
			return nil, 0, ttlv.Item{}, err
		}
		return t.def, i, old, nil
	})
}

// check answers whether the object could be used now as the request says
// (KMIP 1.4 section 4.10): a Cryptographic Usage Mask must be allowed by
// the object's, and the object must be Active for it; revoked and destroyed
// objects fail. No usage limits or leases are kept, so Usage Limits Count
// and Lease Time always pass.
func (s *Server) check(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	id, err := r.uid(p)
	if err != nil {
		return nil, err
	}
	// A failed Check answers with the object and the parameters that
	// failed.
	failed := func(err error, params ...ttlv.Item) error {
		var oe *opError
		if errors.As(err, &oe) {
			oe.payload = append([]ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, id)}, params...)
		}
		return err
	}
	if u := p.Child(ttlv.TagUsageLimitsCount); u != nil && (u.Type != ttlv.TypeLongInteger || u.Int < 0) {
		return nil, failed(invalidField("Usage Limits Count must be a non-negative long integer"))
	}
	if l := p.Child(ttlv.TagLeaseTime); l != nil && l.Type != ttlv.TypeInterval {
		return nil, failed(invalidField("Lease Time must be an interval"))
	}
	m := p.Child(ttlv.TagCryptographicUsageMask)
	if m != nil && m.Type != ttlv.TypeInteger {
		return nil, failed(invalidField("Cryptographic Usage Mask must be an integer"))
	}
	o, err := s.lookup(r, p)
	if err != nil {
		return nil, failed(err)
	}
	if err := usable(r, o); err != nil {
		return nil, failed(err)
	}
	if m != nil {
		if o.UsageMask&int32(m.Int) != int32(m.Int) {
			reason := ttlv.ReasonPermissionDenied
			if r.v.v2() {
				reason = ttlv.ReasonIncompatibleCryptographicUsageMask
			}
			return nil, failed(fail(reason, "the object's usage mask does not allow this use"), *m)
		}
		if o.State != ttlv.StateActive {
			return nil, failed(stateError(r, "the object is not active"))
		}
	}
	r.placeholder = o.ID
	return []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}, nil
}
