package kmip

import (
	"context"
	"errors"
	"slices"

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
		ttlv.OpAddAttribute:     (*Server).addAttribute,
		ttlv.OpModifyAttribute:  (*Server).modifyAttribute,
		ttlv.OpDeleteAttribute:  (*Server).deleteAttribute,
		ttlv.OpCheck:            (*Server).check,
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
