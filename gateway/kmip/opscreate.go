package kmip

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// nameOf reads a Name attribute's value.
func nameOf(v ttlv.Item) (string, error) {
	nv := v.Child(ttlv.TagNameValue)
	if nv == nil || nv.Type != ttlv.TypeTextString {
		return "", invalidField("Name has no Name Value")
	}
	if nt := v.Child(ttlv.TagNameType); nt != nil && (nt.Type != ttlv.TypeEnumeration || nt.Int < 1 || nt.Int > 2) {
		return "", invalidField("unknown Name Type")
	}
	n := nv.Text()
	if n == "" || len(n) > maxNameLen || strings.ContainsRune(n, 0) {
		return "", invalidField("Name must be 1 to %d bytes of text", maxNameLen)
	}
	return n, nil
}

// newObject makes an object from the attributes of a Create or Register
// request: Cryptographic Algorithm (AES) and Length (256) must be given,
// unless the caller has them from elsewhere (Register's Key Block) and says
// so with algLenKnown; verb names the operation in messages.
func (s *Server) newObject(p ttlv.Item, verb string, algLenKnown bool) (*object, error) {
	attrs, err := requestAttrs(p)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC().Truncate(1e9)
	o := &object{
		State:     ttlv.StatePreActive,
		Algorithm: ttlv.AlgorithmAES, Length: 256,
		UsageMask: int32(ttlv.UsageEncrypt | ttlv.UsageDecrypt),
		Initial:   now, LastChange: now,
	}
	var haveAlg, haveLen bool
	for _, a := range attrs {
		if a.def == nil {
			return nil, invalidField("attribute not supported")
		}
		v := a.value
		switch a.def.tag {
		case ttlv.TagCryptographicAlgorithm:
			if uint32(v.Int) != ttlv.AlgorithmAES {
				return nil, invalidField("only AES keys can be %s", verb)
			}
			haveAlg = true
		case ttlv.TagCryptographicLength:
			if v.Int != 256 {
				return nil, invalidField("only 256-bit keys can be %s", verb)
			}
			haveLen = true
		case ttlv.TagCryptographicUsageMask:
			o.UsageMask = int32(v.Int)
		case ttlv.TagObjectType:
			if uint32(v.Int) != ttlv.ObjectSymmetricKey {
				return nil, invalidField("only symmetric keys can be %s", verb)
			}
		case ttlv.TagName:
			n, err := nameOf(v)
			if err != nil {
				return nil, err
			}
			if len(o.Names) >= maxNames {
				return nil, invalidField("at most %d names", maxNames)
			}
			o.Names = append(o.Names, n)
		case ttlv.TagObjectGroup:
			g := v.Text()
			if g == "" || len(g) > maxGroupLen || strings.ContainsRune(g, 0) || !utf8.ValidString(g) {
				return nil, invalidField("Object Group must be 1 to %d bytes of text", maxGroupLen)
			}
			o.Group = g
		case ttlv.TagCryptographicParameters:
			cp, err := parseCryptoParams(&v)
			if err != nil {
				return nil, err
			}
			if err := cp.check(); err != nil {
				return nil, err
			}
			o.Mode, o.Padding = cp.mode, cp.padding
		case ttlv.TagActivationDate:
			if v.Time().After(now) {
				return nil, fail(ttlv.ReasonFeatureNotSupported, "an Activation Date in the future is not supported")
			}
			o.State, o.Activation = ttlv.StateActive, now
		default:
			return nil, invalidField("attribute %s is set by the server", a.def.name)
		}
	}
	if !algLenKnown && (!haveAlg || !haveLen) {
		return nil, invalidField("Cryptographic Algorithm (AES) and Cryptographic Length (256) are required")
	}
	if o.ID, err = newUID(); err != nil {
		return nil, err
	}
	return o, nil
}

// objectType checks a request's Object Type: Symmetric Key.
func objectType(p ttlv.Item, verb string) error {
	ot := p.Child(ttlv.TagObjectType)
	if ot == nil || ot.Type != ttlv.TypeEnumeration {
		return invalidField("Object Type is required")
	}
	if uint32(ot.Int) != ttlv.ObjectSymmetricKey {
		return invalidField("only symmetric keys can be %s", verb)
	}
	return nil
}

func (s *Server) create(ctx context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	if err := objectType(p, "created"); err != nil {
		return nil, err
	}
	o, err := s.newObject(p, "created", false)
	if err != nil {
		return nil, err
	}
	pt, wrapped, err := s.keys.GenerateDataKey(ctx, r.sess.id, objectAAD(r.sess.id, o.ID))
	clear(pt) // only the wrapped key is kept; the plaintext is unwrapped per use
	if err != nil {
		return nil, r.keysError(err)
	}
	if len(pt) != 32 || len(wrapped) == 0 {
		return nil, errors.New("kmip: key service returned a key of the wrong size")
	}
	o.Wrapped = wrapped
	if err := s.reg.create(r.sess.owner, o); err != nil {
		return nil, err
	}
	r.placeholder = o.ID
	r.log.Info("kmip: key created", "unique-id", o.ID)
	return []ttlv.Item{
		ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey),
		ttlv.Text(ttlv.TagUniqueIdentifier, o.ID),
	}, nil
}

// registeredKey reads the key material of a Register request's Symmetric
// Key: a Key Block of format Raw or Transparent Symmetric Key, not wrapped,
// holding 32 bytes for AES-256. It returns the request's own bytes (wiped
// with the request) and whether the Key Block names algorithm and length.
// No error message carries key bytes or their length.
func registeredKey(p ttlv.Item) (key []byte, algLen bool, err error) {
	sk := p.Child(ttlv.TagSymmetricKey)
	if sk == nil || sk.Type != ttlv.TypeStructure {
		return nil, false, invalidField("a Symmetric Key object is required")
	}
	kb := sk.Child(ttlv.TagKeyBlock)
	if kb == nil || kb.Type != ttlv.TypeStructure {
		return nil, false, invalidField("the Symmetric Key has no Key Block")
	}
	if kb.Child(ttlv.TagKeyWrappingData) != nil {
		return nil, false, fail(ttlv.ReasonFeatureNotSupported, "wrapped Key Blocks cannot be registered")
	}
	if kb.Child(ttlv.TagKeyCompressionType) != nil {
		return nil, false, fail(ttlv.ReasonFeatureNotSupported, "key compression is not supported")
	}
	kft := kb.Child(ttlv.TagKeyFormatType)
	if kft == nil || kft.Type != ttlv.TypeEnumeration {
		return nil, false, invalidField("the Key Block has no Key Format Type")
	}
	format := uint32(kft.Int)
	if format != ttlv.KeyFormatRaw && format != ttlv.KeyFormatTransparentSymmetricKey {
		return nil, false, fail(ttlv.ReasonKeyFormatNotSupported, "key formats: Raw and Transparent Symmetric Key")
	}
	alg, length := kb.Child(ttlv.TagCryptographicAlgorithm), kb.Child(ttlv.TagCryptographicLength)
	if alg != nil && (alg.Type != ttlv.TypeEnumeration || uint32(alg.Int) != ttlv.AlgorithmAES) {
		return nil, false, invalidField("only AES keys can be registered")
	}
	if length != nil && (length.Type != ttlv.TypeInteger || length.Int != 256) {
		return nil, false, invalidField("only 256-bit keys can be registered")
	}
	kv := kb.Child(ttlv.TagKeyValue)
	if kv == nil || kv.Type != ttlv.TypeStructure {
		return nil, false, invalidField("the Key Block has no Key Value")
	}
	km := kv.Child(ttlv.TagKeyMaterial)
	if km != nil && format == ttlv.KeyFormatTransparentSymmetricKey {
		if km.Type != ttlv.TypeStructure {
			return nil, false, invalidField("Transparent Symmetric Key material is a structure")
		}
		km = km.Child(ttlv.TagKey)
	}
	if km == nil || km.Type != ttlv.TypeByteString {
		return nil, false, invalidField("the Key Value has no key material")
	}
	if len(km.Bytes) != 32 {
		return nil, false, invalidField("AES-256 key material is 32 bytes")
	}
	var nonzero byte
	for _, b := range km.Bytes {
		nonzero |= b
	}
	if nonzero == 0 {
		return nil, false, invalidField("an all-zero key cannot be registered")
	}
	return km.Bytes, alg != nil && length != nil, nil
}

// register stores a client's AES-256 key: wrapped by the region, as Create
// keeps the keys it makes; the plaintext supplied is wiped once wrapped.
func (s *Server) register(ctx context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	if err := objectType(p, "registered"); err != nil {
		return nil, err
	}
	key, algLen, err := registeredKey(p)
	if err != nil {
		return nil, err
	}
	r.wipe = append(r.wipe, key) // also wiped with the request's byte strings
	o, err := s.newObject(p, "registered", algLen)
	if err != nil {
		return nil, err
	}
	wrapped, err := s.keys.WrapKey(ctx, r.sess.id, key, objectAAD(r.sess.id, o.ID))
	clear(key)
	if err != nil {
		return nil, r.keysError(err)
	}
	if len(wrapped) == 0 {
		return nil, errors.New("kmip: key service returned an empty wrapped key")
	}
	o.Wrapped = wrapped
	if err := s.reg.create(r.sess.owner, o); err != nil {
		return nil, err
	}
	r.placeholder = o.ID
	r.log.Info("kmip: key registered", "unique-id", o.ID)
	return []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}, nil
}

// rekey replaces a key with a fresh one (KMIP 1.4 section 4.4): a new
// object with the old one's attributes and a new key, the old key's Names
// moved to it, linked both ways (Replacement Object on the old key,
// Replaced Object on the new). The old key's state is left as it is. A key
// has at most one replacement; Offset and new template attributes are not
// supported (docs/kmip.md).
func (s *Server) rekey(ctx context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	if p.Child(ttlv.TagOffset) != nil {
		return nil, fail(ttlv.ReasonFeatureNotSupported, "Re-key with an Offset is not supported")
	}
	attrs, err := requestAttrs(p)
	if err != nil {
		return nil, err
	}
	if len(attrs) > 0 {
		return nil, fail(ttlv.ReasonFeatureNotSupported, "Re-key with new attributes is not supported")
	}
	old, err := s.lookup(r, p)
	if err != nil {
		return nil, err
	}
	if old.Replacement != "" {
		return nil, fail(ttlv.ReasonIllegalOperation, "the object has been re-keyed already; re-key its replacement")
	}
	now := s.now().UTC().Truncate(1e9)
	n := &object{
		State:     ttlv.StatePreActive,
		Algorithm: old.Algorithm, Length: old.Length, UsageMask: old.UsageMask,
		Group: old.Group, Mode: old.Mode, Padding: old.Padding,
		Replaced: old.ID,
		Initial:  now, LastChange: now,
	}
	if !old.Activation.IsZero() {
		n.State, n.Activation = ttlv.StateActive, now
	}
	if n.ID, err = newUID(); err != nil {
		return nil, err
	}
	pt, wrapped, err := s.keys.GenerateDataKey(ctx, r.sess.id, objectAAD(r.sess.id, n.ID))
	clear(pt)
	if err != nil {
		return nil, r.keysError(err)
	}
	if len(pt) != 32 || len(wrapped) == 0 {
		return nil, errors.New("kmip: key service returned a key of the wrong size")
	}
	n.Wrapped = wrapped
	// Link the old key, hand its names over and store the new key in one
	// atomic step: a key has at most one replacement, and a crash leaves
	// either both changes or neither.
	if err := s.reg.replace(r.sess.owner, old.ID, func(o *object) (*object, error) {
		if o.Replacement != "" {
			return nil, fail(ttlv.ReasonIllegalOperation, "the object has been re-keyed already; re-key its replacement")
		}
		n.Names, o.Names = o.Names, nil
		o.Replacement, o.LastChange = n.ID, now
		return n, nil
	}); err != nil {
		if errors.Is(err, errNotFound) {
			return nil, fail(ttlv.ReasonItemNotFound, "no such object")
		}
		return nil, err
	}
	r.placeholder = n.ID
	r.log.Info("kmip: key re-keyed", "unique-id", n.ID, "replaced", old.ID)
	return []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, n.ID)}, nil
}
