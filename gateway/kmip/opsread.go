package kmip

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// usable refuses an object that is revoked or destroyed.
func usable(r *request, o *object) error {
	switch o.State {
	case ttlv.StatePreActive, ttlv.StateActive:
		return nil
	case ttlv.StateDeactivated, ttlv.StateCompromised:
		return stateError(r, "the object is revoked")
	}
	return stateError(r, "the object is destroyed")
}

// unwrap opens o's data key; the request wipes it once the response is
// written.
func (s *Server) unwrap(ctx context.Context, r *request, o *object) ([]byte, error) {
	pt, err := s.keys.Unwrap(ctx, r.sess.id, o.Wrapped, objectAAD(r.sess.id, o.ID))
	if err != nil {
		return nil, r.keysError(err)
	}
	r.wipe = append(r.wipe, pt)
	if len(pt) != 32 {
		return nil, errors.New("kmip: key service returned a key of the wrong size")
	}
	return pt, nil
}

func (s *Server) get(ctx context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	o, err := s.lookup(r, p)
	if err != nil {
		return nil, err
	}
	format := ttlv.KeyFormatRaw
	if f := p.Child(ttlv.TagKeyFormatType); f != nil {
		format = uint32(f.Int)
		if format != ttlv.KeyFormatRaw && format != ttlv.KeyFormatTransparentSymmetricKey {
			return nil, fail(ttlv.ReasonKeyFormatNotSupported, "key formats: Raw and Transparent Symmetric Key")
		}
	}
	if p.Child(ttlv.TagKeyWrappingSpecification) != nil {
		return nil, fail(ttlv.ReasonFeatureNotSupported, "key wrapping on Get is not supported")
	}
	if p.Child(ttlv.TagKeyCompressionType) != nil {
		return nil, fail(ttlv.ReasonFeatureNotSupported, "key compression is not supported")
	}
	if err := usable(r, o); err != nil {
		return nil, err
	}
	key, err := s.unwrap(ctx, r, o)
	if err != nil {
		return nil, err
	}
	material := ttlv.Bytes(ttlv.TagKeyMaterial, key)
	if format == ttlv.KeyFormatTransparentSymmetricKey {
		material = ttlv.Struct(ttlv.TagKeyMaterial, ttlv.Bytes(ttlv.TagKey, key))
	}
	r.placeholder = o.ID
	r.log.Info("kmip: key material returned", "unique-id", o.ID)
	return []ttlv.Item{
		ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey),
		ttlv.Text(ttlv.TagUniqueIdentifier, o.ID),
		ttlv.Struct(ttlv.TagSymmetricKey,
			ttlv.Struct(ttlv.TagKeyBlock,
				ttlv.Enum(ttlv.TagKeyFormatType, format),
				ttlv.Struct(ttlv.TagKeyValue, material),
				ttlv.Enum(ttlv.TagCryptographicAlgorithm, o.Algorithm),
				ttlv.Int(ttlv.TagCryptographicLength, o.Length))),
	}, nil
}

// requestedTags reads the attributes a Get Attributes request names: KMIP
// 1.x Attribute Names or 2.0 Attribute References (enumerations of tags).
// Unknown names yield no tag, so they are simply not returned.
func requestedTags(p ttlv.Item) (tags []ttlv.Tag, any bool) {
	for _, c := range p.Children {
		switch {
		case c.Tag == ttlv.TagAttributeName && c.Type == ttlv.TypeTextString:
			any = true
			if d := defByName(c.Text()); d != nil {
				tags = append(tags, d.tag)
			}
		case c.Tag == ttlv.TagAttributeReference:
			any = true
			if d := attrRefDef(&c); d != nil {
				tags = append(tags, d.tag)
			} // else a vendor attribute: none are kept
		}
	}
	return tags, any
}

func (s *Server) getAttributes(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	o, err := s.lookup(r, p)
	if err != nil {
		return nil, err
	}
	values := objectAttrs(o)
	if tags, named := requestedTags(p); named {
		values = slices.DeleteFunc(values, func(v ttlv.Item) bool { return !slices.Contains(tags, v.Tag) })
	}
	r.placeholder = o.ID
	return append([]ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}, encodeAttrs(values, r.v.v2())...), nil
}

func (s *Server) getAttributeList(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	o, err := s.lookup(r, p)
	if err != nil {
		return nil, err
	}
	out := []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}
	var seen []ttlv.Tag
	for _, v := range objectAttrs(o) {
		if slices.Contains(seen, v.Tag) {
			continue
		}
		seen = append(seen, v.Tag)
		if r.v.v2() {
			out = append(out, ttlv.Enum(ttlv.TagAttributeReference, uint32(v.Tag)))
		} else {
			out = append(out, ttlv.Text(ttlv.TagAttributeName, defByTag(v.Tag).name))
		}
	}
	r.placeholder = o.ID
	return out, nil
}

// matches reports whether o has every attribute of a Locate request. An
// attribute the server does not keep matches nothing.
func matches(o *object, attrs []attr) bool {
	for _, a := range attrs {
		if a.def == nil {
			return false
		}
		v := a.value
		var ok bool
		switch a.def.tag {
		case ttlv.TagUniqueIdentifier:
			ok = v.Text() == o.ID
		case ttlv.TagObjectType:
			ok = uint32(v.Int) == ttlv.ObjectSymmetricKey
		case ttlv.TagCryptographicAlgorithm:
			ok = uint32(v.Int) == o.Algorithm
		case ttlv.TagCryptographicLength:
			ok = int32(v.Int) == o.Length
		case ttlv.TagCryptographicUsageMask:
			ok = o.UsageMask&int32(v.Int) == int32(v.Int)
		case ttlv.TagName:
			n, err := nameOf(v)
			ok = err == nil && slices.Contains(o.Names, n)
		case ttlv.TagObjectGroup:
			ok = v.Text() == o.Group
		case ttlv.TagState:
			ok = uint32(v.Int) == o.State
		}
		if !ok {
			return false
		}
	}
	return true
}

func (s *Server) locate(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	attrs, err := requestAttrs(p)
	if err != nil {
		return nil, err
	}
	maxItems, offset := int64(-1), int64(0)
	if m := p.Child(ttlv.TagMaximumItems); m != nil {
		if m.Type != ttlv.TypeInteger || m.Int < 0 {
			return nil, invalidField("bad Maximum Items")
		}
		maxItems = m.Int
	}
	if off := p.Child(ttlv.TagOffsetItems); off != nil {
		if off.Type != ttlv.TypeInteger || off.Int < 0 {
			return nil, invalidField("bad Offset Items")
		}
		offset = off.Int
	}
	all, err := s.reg.list(r.sess.owner)
	if err != nil {
		return nil, err
	}
	var found []*object
	for _, o := range all {
		if matches(o, attrs) {
			found = append(found, o)
		}
	}
	slices.SortFunc(found, func(a, b *object) int {
		if c := a.Initial.Compare(b.Initial); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	located := len(found)
	found = found[min(int64(len(found)), offset):]
	if maxItems >= 0 && int64(len(found)) > maxItems {
		found = found[:maxItems]
	}
	var out []ttlv.Item
	if r.v.major > 1 || r.v.minor >= 3 {
		out = append(out, ttlv.Int(ttlv.TagLocatedItems, int32(located)))
	}
	for _, o := range found {
		out = append(out, ttlv.Text(ttlv.TagUniqueIdentifier, o.ID))
	}
	if len(found) > 0 {
		r.placeholder = found[0].ID
	}
	return out, nil
}
