package kmip

import (
	"context"
	"errors"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// handler runs one operation on its request payload and returns the
// response payload's fields.
type handler func(s *Server, ctx context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error)

var handlers map[uint32]handler

func init() {
	handlers = map[uint32]handler{
		ttlv.OpDiscoverVersions: (*Server).discoverVersions,
		ttlv.OpQuery:            (*Server).query,
		ttlv.OpCreate:           (*Server).create,
		ttlv.OpRegister:         (*Server).register,
		ttlv.OpRekey:            (*Server).rekey,
		ttlv.OpGet:              (*Server).get,
		ttlv.OpGetAttributes:    (*Server).getAttributes,
		ttlv.OpGetAttributeList: (*Server).getAttributeList,
		ttlv.OpLocate:           (*Server).locate,
		ttlv.OpActivate:         (*Server).activate,
		ttlv.OpRevoke:           (*Server).revoke,
		ttlv.OpDestroy:          (*Server).destroy,
		ttlv.OpEncrypt:          (*Server).encrypt,
		ttlv.OpDecrypt:          (*Server).decrypt,
	}
}

// Limits on client-chosen strings stored in the registry.
const (
	maxNameLen  = 255
	maxNames    = 16
	maxGroupLen = 255
)

// stateError refuses an operation in the object's lifecycle state, with
// the reason each version has for it.
func stateError(r *request, msg string) error {
	if r.v.v2() {
		return fail(ttlv.ReasonWrongKeyLifecycleState, "%s", msg)
	}
	return fail(ttlv.ReasonPermissionDenied, "%s", msg)
}

// keysError turns an error from Keys into a KMIP failure without its text:
// it may come from the region, and the client needs only the kind.
func (r *request) keysError(err error) error {
	r.log.Warn("kmip: key service call failed", "err", err)
	if errors.Is(err, ErrKeyRefused) {
		return fail(ttlv.ReasonPermissionDenied, "the region refuses this key")
	}
	switch status.Code(err) {
	case codes.PermissionDenied, codes.FailedPrecondition, codes.NotFound, codes.Unauthenticated:
		return fail(ttlv.ReasonPermissionDenied, "the region refuses this key")
	}
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return fail(ttlv.ReasonGeneralFailure, "the region did not answer in time")
	}
	return fail(ttlv.ReasonGeneralFailure, "the region is unavailable")
}

// uid returns the object a payload names: its Unique Identifier, or the ID
// Placeholder when it has none (or, in KMIP 2.0, names the placeholder by
// enumeration).
func (r *request) uid(p ttlv.Item) (string, error) {
	u := p.Child(ttlv.TagUniqueIdentifier)
	switch {
	case u == nil, u.Type == ttlv.TypeEnumeration && u.Int == 1:
		if r.placeholder == "" {
			return "", invalidField("no Unique Identifier and no ID Placeholder")
		}
		return r.placeholder, nil
	case u.Type == ttlv.TypeTextString:
		return u.Text(), nil
	}
	return "", invalidField("unsupported Unique Identifier form")
}

func (s *Server) lookup(r *request, p ttlv.Item) (*object, error) {
	id, err := r.uid(p)
	if err != nil {
		return nil, err
	}
	o, err := s.reg.get(r.sess.owner, id)
	if errors.Is(err, errNotFound) {
		// The same answer whether the object does not exist or belongs to
		// another identity: existence is not disclosed.
		return nil, fail(ttlv.ReasonItemNotFound, "no such object")
	}
	return o, err
}

func (s *Server) update(r *request, p ttlv.Item, fn func(*object) error) (*object, error) {
	id, err := r.uid(p)
	if err != nil {
		return nil, err
	}
	o, err := s.reg.update(r.sess.owner, id, fn)
	if errors.Is(err, errNotFound) {
		return nil, fail(ttlv.ReasonItemNotFound, "no such object")
	}
	return o, err
}

func (s *Server) discoverVersions(_ context.Context, _ *request, p ttlv.Item) ([]ttlv.Item, error) {
	var asked []version
	for _, c := range p.All(ttlv.TagProtocolVersion) {
		v, ok := parseVersion(c)
		if !ok {
			return nil, invalidField("malformed Protocol Version")
		}
		asked = append(asked, v)
	}
	var out []ttlv.Item
	for _, v := range supportedVersions {
		if len(asked) == 0 || slices.Contains(asked, v) {
			out = append(out, v.item())
		}
	}
	return out, nil
}

func (s *Server) query(_ context.Context, _ *request, p ttlv.Item) ([]ttlv.Item, error) {
	var out []ttlv.Item
	for _, f := range p.All(ttlv.TagQueryFunction) {
		switch uint32(f.Int) {
		case ttlv.QueryOperations:
			ops := make([]uint32, 0, len(handlers))
			for op := range handlers {
				ops = append(ops, op)
			}
			slices.Sort(ops)
			for _, op := range ops {
				out = append(out, ttlv.Enum(ttlv.TagOperation, op))
			}
		case ttlv.QueryObjects:
			out = append(out, ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey))
		case ttlv.QueryServerInfo:
			out = append(out, ttlv.Text(ttlv.TagVendorIdentification, "Krypton"))
		}
	}
	return out, nil
}

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
		case c.Tag == ttlv.TagAttributeReference && c.Type == ttlv.TypeEnumeration:
			any = true
			tags = append(tags, ttlv.Tag(c.Int))
		case c.Tag == ttlv.TagAttributeReference:
			any = true // a Vendor Attribute Reference: none are kept
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

func (s *Server) activate(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	now := s.now().UTC()
	o, err := s.update(r, p, func(o *object) error {
		if o.State != ttlv.StatePreActive {
			return stateError(r, "only a pre-active object can be activated")
		}
		o.State, o.Activation, o.LastChange = ttlv.StateActive, now, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.placeholder = o.ID
	r.log.Info("kmip: key activated", "unique-id", o.ID)
	return []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}, nil
}

func (s *Server) revoke(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	rr := p.Child(ttlv.TagRevocationReason)
	if rr == nil || rr.Type != ttlv.TypeStructure {
		return nil, invalidField("Revocation Reason is required")
	}
	code := rr.Child(ttlv.TagRevocationReasonCode)
	if code == nil || code.Type != ttlv.TypeEnumeration || code.Int < 1 || code.Int > 0xFFFFFFFF {
		return nil, invalidField("Revocation Reason Code is required")
	}
	var message string
	if m := rr.Child(ttlv.TagRevocationMessage); m != nil {
		if m.Type != ttlv.TypeTextString || len(m.Bytes) > maxNameLen {
			return nil, invalidField("Revocation Message must be at most %d bytes of text", maxNameLen)
		}
		message = m.Text()
	}
	now := s.now().UTC()
	occurred := now
	if cod := p.Child(ttlv.TagCompromiseOccurrenceDate); cod != nil {
		if cod.Type != ttlv.TypeDateTime {
			return nil, invalidField("Compromise Occurrence Date is not a date")
		}
		occurred = cod.Time()
	}
	compromise := uint32(code.Int) == ttlv.RevocationKeyCompromise || uint32(code.Int) == ttlv.RevocationCACompromise
	o, err := s.update(r, p, func(o *object) error {
		switch o.State {
		case ttlv.StateDestroyed:
			if !compromise {
				return stateError(r, "the object is destroyed")
			}
			o.State = ttlv.StateDestroyedCompromised
		case ttlv.StateDestroyedCompromised:
			return stateError(r, "the object is destroyed")
		case ttlv.StateCompromised:
			// Compromised stays compromised.
		default:
			if compromise {
				o.State = ttlv.StateCompromised
			} else {
				o.State = ttlv.StateDeactivated
			}
			if o.Deactivation.IsZero() {
				o.Deactivation = now
			}
		}
		if compromise && o.Compromise.IsZero() {
			o.Compromise, o.CompromiseOccurrence = now, occurred
		}
		o.RevocationCode, o.RevocationMessage, o.LastChange = uint32(code.Int), message, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.placeholder = o.ID
	r.log.Info("kmip: key revoked", "unique-id", o.ID, "compromise", compromise)
	return []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}, nil
}

func (s *Server) destroy(_ context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	now := s.now().UTC()
	o, err := s.update(r, p, func(o *object) error {
		switch o.State {
		case ttlv.StateActive:
			return stateError(r, "an active object must be revoked before it is destroyed")
		case ttlv.StateDestroyed, ttlv.StateDestroyedCompromised:
			return stateError(r, "the object is already destroyed")
		case ttlv.StateCompromised:
			o.State = ttlv.StateDestroyedCompromised
		default:
			o.State = ttlv.StateDestroyed
		}
		// Crypto-shredding: the wrapped data key is the only copy the
		// gateway keeps, and without it the key cannot be recovered.
		clear(o.Wrapped)
		o.Wrapped = nil
		o.Destroy, o.LastChange = now, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.placeholder = o.ID
	r.log.Info("kmip: key destroyed", "unique-id", o.ID)
	return []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}, nil
}
