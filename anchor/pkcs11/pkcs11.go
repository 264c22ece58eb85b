package pkcs11

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/kryptonkms/krypton/anchor"
	p11 "github.com/miekg/pkcs11"
)

func init() { anchor.Register(anchor.SchemePKCS11, open) }

// Options are the pkcs11 provider's options, passed to anchor.Open as
// anchor.Options{Provider: map[string]any{"pkcs11": pkcs11.Options{...}}}.
type Options struct {
	// Sessions is the most Cryptoki sessions the Provider keeps open, and
	// so the most operations it runs on the token at once. 0 means
	// DefaultSessions.
	Sessions int
}

// DefaultSessions is the default size of a Provider's session pool.
// L1 calls are rare (L2 unseal at leader start, a Check per period); four
// sessions keep a burst of unseals from queueing without holding many of
// a network HSM's limited sessions.
const DefaultSessions = 4

// Provider is an anchor.Provider on an AES-256 key held by a PKCS#11
// token. It is safe for concurrent use.
type Provider struct {
	mod  *module
	pool *pool
	key  keySelector
	desc anchor.Description
	log  *slog.Logger

	closed atomic.Bool

	// beforeOp, if set, is called with the session an operation is about
	// to use. Tests use it to break sessions (see FailTransiently there).
	beforeOp atomic.Pointer[func(p11.SessionHandle)]
}

var _ anchor.Provider = (*Provider)(nil)

// keySelector is the key part of a URI: CKA_LABEL and, if given, CKA_ID.
type keySelector struct {
	label string
	id    []byte
}

func (k keySelector) template() []*p11.Attribute {
	t := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
	}
	if k.label != "" {
		t = append(t, p11.NewAttribute(p11.CKA_LABEL, k.label))
	}
	if k.id != nil {
		t = append(t, p11.NewAttribute(p11.CKA_ID, k.id))
	}
	return t
}

func open(ctx context.Context, u anchor.URI, opts anchor.Options) (anchor.Provider, error) {
	pu, ok := u.(*anchor.PKCS11URI)
	if !ok {
		return nil, fmt.Errorf("pkcs11: not a pkcs11 URI: %s", u.Scheme())
	}
	o, err := anchor.ProviderOptions[Options](opts, anchor.SchemePKCS11)
	if err != nil {
		return nil, err
	}
	return Open(ctx, pu, opts.Log(), o)
}

// Open opens a Provider on the key u names: it loads the module (once per
// process), finds the token by label, logs in with the PIN from
// pin-source (or pin-value), finds the key by label and checks that it is
// a sensitive, non-extractable AES-256 token key allowed to encrypt and
// decrypt. A nil log means slog.Default().
//
// Errors: a *anchor.DeniedError with ReasonKeyNotFound (no such key),
// ReasonAccessDenied (wrong or locked PIN), ReasonDisabled (CKA_ENCRYPT or
// CKA_DECRYPT false), ReasonKeyUnusable (wrong kind of key, ambiguous
// URI, module that does not load); a *anchor.TransientError when the token
// is absent or the device fails; plain errors for a URI that Krypton
// cannot use (no module-path, unreadable pin-source).
func Open(ctx context.Context, u *anchor.PKCS11URI, log *slog.Logger, o Options) (*Provider, error) {
	if log == nil {
		log = slog.Default()
	}
	if o.Sessions < 0 {
		return nil, errors.New("pkcs11: Options.Sessions is negative")
	}
	if o.Sessions == 0 {
		o.Sessions = DefaultSessions
	}
	path := u.ModulePath()
	if path == "" {
		return nil, errors.New("pkcs11: the URI has no module-path (module-name is not supported: name the library file)")
	}
	if u.Object() == "" && u.ID() == nil {
		return nil, errors.New("pkcs11: the URI names no key (object or id)")
	}
	pin, err := readPIN(u)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, anchor.Transient("open", anchor.SchemePKCS11, err)
	}
	tok := tokenSelector{label: u.Token()}
	tok.serial, _ = u.Attr("serial")
	if id, ok := u.SlotID(); ok {
		tok.slot, tok.hasSlot = uint(id), true
	}
	mod, err := acquire(path)
	if err != nil {
		return nil, anchor.Deny("open", anchor.SchemePKCS11, anchor.ReasonKeyUnusable, err)
	}
	p := &Provider{
		mod:  mod,
		pool: newPool(mod, tok, pin, o.Sessions),
		key:  keySelector{label: u.Object(), id: u.ID()},
		desc: anchor.Description{Scheme: anchor.SchemePKCS11, Key: u.KeyName(), URI: u.String()},
		log:  log.With("anchor", anchor.SchemePKCS11, "key", u.KeyName()),
	}
	if err := p.validate(ctx); err != nil {
		p.pool.close()
		mod.release()
		return nil, err
	}
	p.log.Debug("opened", "sessions", o.Sessions)
	return p, nil
}

// readPIN returns the PIN from pin-source (a file; one trailing newline is
// dropped) or pin-value. Neither the PIN nor the file's content is ever in
// an error.
func readPIN(u *anchor.PKCS11URI) (secret, error) {
	if src := u.PINSource(); src != "" {
		b, err := os.ReadFile(src)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is the operator's, the content is not in it anyway
			}
			return nil, fmt.Errorf("pkcs11: read pin-source: %w", err)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		b = bytes.TrimSuffix(b, []byte("\r"))
		return secret(b), nil
	}
	if v, ok := u.PIN(); ok {
		return secret(v), nil
	}
	return nil, nil
}

// validate checks, at open, that the key exists and is the kind of key
// Krypton needs.
func (p *Provider) validate(ctx context.Context) error {
	return p.do(ctx, "open", func(s p11.SessionHandle, key p11.ObjectHandle) (bool, error) {
		attrs, err := p.mod.ctx.GetAttributeValue(s, key, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_VALUE_LEN, nil),
			p11.NewAttribute(p11.CKA_TOKEN, nil),
			p11.NewAttribute(p11.CKA_SENSITIVE, nil),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
			p11.NewAttribute(p11.CKA_ENCRYPT, nil),
			p11.NewAttribute(p11.CKA_DECRYPT, nil),
		})
		if err != nil {
			return false, fmt.Errorf("pkcs11: C_GetAttributeValue: %w", err)
		}
		b := func(i int) bool { return len(attrs[i].Value) == 1 && attrs[i].Value[0] != 0 }
		var n uint64 // CK_ULONG, in host byte order
		switch v := attrs[0].Value; len(v) {
		case 8:
			n = binary.NativeEndian.Uint64(v)
		case 4:
			n = uint64(binary.NativeEndian.Uint32(v))
		}
		if n != 32 || !b(1) || !b(2) || b(3) {
			return false, anchor.Deny("open", anchor.SchemePKCS11, anchor.ReasonKeyUnusable, ErrWrongKey)
		}
		if !b(4) || !b(5) {
			return false, anchor.Deny("open", anchor.SchemePKCS11, anchor.ReasonDisabled,
				errors.New("pkcs11: key has CKA_ENCRYPT or CKA_DECRYPT false"))
		}
		return false, nil
	})
}

// do runs f on a pooled session with the key found by label. f returns
// whether it was decrypting a caller's blob (see classify) and its error;
// errors that are already anchor errors pass through.
func (p *Provider) do(ctx context.Context, op string, f func(p11.SessionHandle, p11.ObjectHandle) (bool, error)) error {
	if p.closed.Load() {
		return anchor.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return anchor.Transient(op, anchor.SchemePKCS11, err)
	}
	s, err := p.pool.get(ctx, op)
	if err != nil {
		return err
	}
	var c classified
	defer func() { p.pool.put(s, c) }()
	if h := p.beforeOp.Load(); h != nil {
		(*h)(s)
	}
	key, err := p.findKey(s, op)
	if err == nil {
		var decrypt bool
		decrypt, err = f(s, key)
		if err == nil || anchor.IsDenied(err) || anchor.IsTransient(err) {
			return err
		}
		c = classify(err, decrypt)
		return toAnchor(op, c, err)
	}
	if anchor.IsDenied(err) {
		return err
	}
	c = classify(err, false)
	return toAnchor(op, c, err)
}

// findKey finds the one secret key the URI names. Not finding it is a
// denial: ReasonKeyNotFound when opening (a wrong label), ReasonDestroyed
// afterwards (it was there when we opened).
func (p *Provider) findKey(s p11.SessionHandle, op string) (p11.ObjectHandle, error) {
	ctx := p.mod.ctx
	if err := ctx.FindObjectsInit(s, p.key.template()); err != nil {
		return 0, fmt.Errorf("pkcs11: C_FindObjectsInit: %w", err)
	}
	objs, _, err := ctx.FindObjects(s, 2)
	if ferr := ctx.FindObjectsFinal(s); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return 0, fmt.Errorf("pkcs11: C_FindObjects: %w", err)
	}
	switch len(objs) {
	case 0:
		reason := anchor.ReasonDestroyed
		if op == "open" {
			reason = anchor.ReasonKeyNotFound
		}
		return 0, anchor.Deny(op, anchor.SchemePKCS11, reason, errors.New("pkcs11: no AES key with the URI's label on the token"))
	case 1:
		return objs[0], nil
	}
	return 0, anchor.Deny(op, anchor.SchemePKCS11, anchor.ReasonKeyUnusable, ErrAmbiguousKey)
}

// encrypt seals plaintext under key on session s (see format.go).
func (p *Provider) encrypt(s p11.SessionHandle, key p11.ObjectHandle, plaintext, aad []byte) ([]byte, error) {
	iv := make([]byte, ivSize)
	if _, err := io.ReadFull(rand.Reader, iv); err != nil {
		return nil, fmt.Errorf("pkcs11: random IV: %w", err)
	}
	params := p11.NewGCMParams(iv, aad, tagBits)
	defer params.Free()
	if err := p.mod.ctx.EncryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, key); err != nil {
		return nil, fmt.Errorf("pkcs11: C_EncryptInit: %w", err)
	}
	ct, err := p.mod.ctx.Encrypt(s, plaintext)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: C_Encrypt: %w", err)
	}
	if len(ct) != len(plaintext)+tagSize {
		return nil, fmt.Errorf("pkcs11: C_Encrypt returned %d bytes for %d, want %d", len(ct), len(plaintext), len(plaintext)+tagSize)
	}
	// A module that chooses its own IV writes it back into the parameters.
	if used := params.IV(); len(used) == ivSize {
		iv = used
	}
	out := make([]byte, 0, headerSize+len(ct))
	out = append(out, formatGCM)
	out = append(out, iv...)
	return append(out, ct...), nil
}

// decrypt opens a blob of the format in format.go, whose length and
// format byte the caller has checked.
func (p *Provider) decrypt(s p11.SessionHandle, key p11.ObjectHandle, sealed, aad []byte) ([]byte, error) {
	params := p11.NewGCMParams(bytes.Clone(sealed[1:headerSize]), aad, tagBits)
	defer params.Free()
	if err := p.mod.ctx.DecryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, key); err != nil {
		return nil, fmt.Errorf("pkcs11: C_DecryptInit: %w", err)
	}
	pt, err := p.mod.ctx.Decrypt(s, sealed[headerSize:])
	if err != nil {
		return nil, fmt.Errorf("pkcs11: C_Decrypt: %w", err)
	}
	if len(pt) != len(sealed)-headerSize-tagSize {
		clear(pt)
		return nil, fmt.Errorf("pkcs11: C_Decrypt returned %d bytes, want %d", len(pt), len(sealed)-headerSize-tagSize)
	}
	return pt, nil
}

// Seal implements anchor.Provider: C_Encrypt with CKM_AES_GCM, the
// Context's AAD() as additional data.
func (p *Provider) Seal(ctx context.Context, plaintext []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckSeal(plaintext, ac); err != nil {
		return nil, err
	}
	var out []byte
	err := p.do(ctx, "seal", func(s p11.SessionHandle, key p11.ObjectHandle) (bool, error) {
		var err error
		out, err = p.encrypt(s, key, plaintext, ac.AAD())
		return false, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Unseal implements anchor.Provider.
func (p *Provider) Unseal(ctx context.Context, sealed []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckUnseal(anchor.SchemePKCS11, sealed, ac); err != nil {
		return nil, err
	}
	if len(sealed) < minSealed || sealed[0] != formatGCM {
		return nil, anchor.Deny("unseal", anchor.SchemePKCS11, anchor.ReasonInvalidCiphertext,
			errors.New("pkcs11: not a pkcs11 anchor blob"))
	}
	var out []byte
	err := p.do(ctx, "unseal", func(s p11.SessionHandle, key p11.ObjectHandle) (bool, error) {
		var err error
		out, err = p.decrypt(s, key, sealed, ac.AAD())
		return true, err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// probe is what Check seals and unseals.
var probeAAD = anchor.ProbeContext.AAD()

// Check implements anchor.Provider: on one session it finds the key by
// label, reads CKA_ENCRYPT and CKA_DECRYPT (false: ErrDisabled), and seals
// and unseals 32 random bytes, so that it exercises exactly what Seal and
// Unseal need, including the login. A probe the token just sealed that
// does not open says nothing about the customer's key: it is transient,
// never ErrInvalidCiphertext.
func (p *Provider) Check(ctx context.Context) error {
	return p.do(ctx, "check", func(s p11.SessionHandle, key p11.ObjectHandle) (bool, error) {
		attrs, err := p.mod.ctx.GetAttributeValue(s, key, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ENCRYPT, nil),
			p11.NewAttribute(p11.CKA_DECRYPT, nil),
		})
		if err != nil {
			return false, fmt.Errorf("pkcs11: C_GetAttributeValue: %w", err)
		}
		for _, a := range attrs {
			if len(a.Value) != 1 || a.Value[0] == 0 {
				return false, anchor.Deny("check", anchor.SchemePKCS11, anchor.ReasonDisabled,
					errors.New("pkcs11: key has CKA_ENCRYPT or CKA_DECRYPT false"))
			}
		}
		pt := make([]byte, 32)
		if _, err := io.ReadFull(rand.Reader, pt); err != nil {
			return false, err
		}
		sealed, err := p.encrypt(s, key, pt, probeAAD)
		if err != nil {
			return false, err
		}
		got, err := p.decrypt(s, key, sealed, probeAAD)
		if err != nil {
			return false, err
		}
		defer clear(got)
		if subtle.ConstantTimeCompare(got, pt) != 1 {
			return false, anchor.Transient("check", anchor.SchemePKCS11, errors.New("pkcs11: probe round trip returned other bytes"))
		}
		return false, nil
	})
}

// Describe implements anchor.Provider. The URI has pin-value redacted.
func (p *Provider) Describe() anchor.Description { return p.desc }

// Close implements anchor.Provider. It waits for operations in flight,
// closes the Provider's sessions and releases the module (the last
// Provider on a module finalises it).
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.pool.close()
	p.mod.release()
	p.log.Debug("closed")
	return nil
}
