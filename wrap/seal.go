package wrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Nonces and usage limits.
//
// Every derivation uses 32 fresh random salt bytes, so every derived
// AES-256-GCM key is, with overwhelming probability (collisions after about
// 2^128 derivations), used for one seal, or for the items of one batch and
// never again. This is what lifts GCM's limit of 2^32 messages per key with
// random 96-bit nonces (crypto/cipher's note; NIST SP 800-38D section 8.3)
// off the parent key: the parent key never meets GCM, and a parent key may
// wrap as many data keys as it is asked to (2^96 derivations keep the
// chance of any salt collision below 2^-64: unreachable).
//
// Under one derived key, nonces are a counter: item i of a batch gets
// 00000000 || uint64_be(i); a single wrap or seal is item 0. A counter
// never repeats under one key, and needs no randomness per item. A reader
// accepts any nonce, so the rule may change without a format version.

// ItemsPerDerivedKey bounds how many items one derived key seals: WrapBatch
// derives a fresh key every ItemsPerDerivedKey items. GCM itself would
// allow far more; the bound limits what one derived key (whose AES key
// schedule lives briefly in the Go heap, see DESIGN.md) can expose, while
// leaving the derivation below 1% of a batch's cost.
const ItemsPerDerivedKey = 4096

func nonceFor(i uint64) [NonceSize]byte {
	var n [NonceSize]byte
	binary.BigEndian.PutUint64(n[4:], i)
	return n
}

// randomSalt returns a fresh salt from crypto/rand.
func randomSalt() ([SaltSize]byte, error) {
	var s [SaltSize]byte
	if _, err := rand.Read(s[:]); err != nil {
		return s, fmt.Errorf("wrap: reading salt: %w", err)
	}
	return s, nil
}

// saltFrom reads a salt from r, or from crypto/rand when r is nil. Only
// tests pass an r, to make known-answer vectors; it is kept apart from
// randomSalt because io.ReadFull would make the salt escape (one more
// allocation per wrap).
func saltFrom(r io.Reader) ([SaltSize]byte, error) {
	if r == nil {
		return randomSalt()
	}
	var s [SaltSize]byte
	if _, err := io.ReadFull(r, s[:]); err != nil {
		return s, fmt.Errorf("wrap: reading salt: %w", err)
	}
	return s, nil
}

// newAEAD derives the one-time key from parent, label and salt and returns
// AES-256-GCM under it. The derived key bytes are wiped; the AES key
// schedule inside the returned AEAD is not (it cannot be), see DESIGN.md.
//
// The AEAD is the module's random-nonce GCM (NonceSize 0: the nonce
// travels in front of the ciphertext, which is where the blob keeps it)
// for the FIPS suite, and for every suite when FIPS 140-only mode is
// enforced: that mode refuses GCM with caller-chosen nonces altogether,
// and the random-nonce Open accepts any nonce, so blobs of the other
// suites still open (they cannot be written: checkWriteKDF).
func newAEAD(parent *lockedKey, kdf KDF, label string, salt *[SaltSize]byte) (cipher.AEAD, error) {
	var k [KeySize]byte
	defer clear(k[:])
	if err := parent.derive(&k, kdf, label, salt); err != nil {
		return nil, err
	}
	return gcmFor(k[:], kdf)
}

// gcmFor returns AES-256-GCM under the 32-byte key for a blob of suite kdf: the module's
// random-nonce GCM for the FIPS suite, or for every suite when FIPS 140-only mode is enforced (see
// newAEAD); the caller-nonce GCM otherwise. key is only read.
func gcmFor(key []byte, kdf KDF) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("wrap: %w", err) // cannot happen: 32-byte key
	}
	var aead cipher.AEAD
	if kdf.randomNonce() || fips140.Enforced() {
		aead, err = cipher.NewGCMWithRandomNonce(block)
	} else {
		aead, err = cipher.NewGCM(block)
	}
	if err != nil {
		return nil, fmt.Errorf("wrap: AES-256-GCM for suite %v: %w", kdf, err)
	}
	return aead, nil
}

// checkWriteKDF refuses to write a blob of a suite whose GCM nonce the
// caller chooses when FIPS 140-only mode is enforced (GODEBUG=fips140=only):
// the module allows such GCM only inside its own constructions.
func checkWriteKDF(kdf KDF) error {
	if !kdf.randomNonce() && fips140.Enforced() {
		return fmt.Errorf("%w: suite %v seals with a caller-chosen GCM nonce, which FIPS 140-only mode (GODEBUG=fips140=only) refuses; write suite %v",
			ErrFIPSMode, kdf, KDFHKDFSHA256RandomNonce)
	}
	return nil
}

// aadPool holds buffers for the additional data: header plus context, up
// to MaxBlobSize+4+MaxContextSize bytes. The AAD must not share memory
// with the output blob (GCM writes the ciphertext before it hashes the
// AAD), and a fresh buffer per call would be the largest allocation on the
// hot path.
var aadPool = sync.Pool{New: func() any {
	b := make([]byte, 0, MaxBlobSize+4+MaxContextSize)
	return &b
}}

// seal appends one blob to dst: the header, then plaintext sealed under
// aead with the header and context as additional data.
func seal(dst []byte, aead cipher.AEAD, kind Kind, kdf KDF, parent, subject KeyID,
	salt *[SaltSize]byte, nonce *[NonceSize]byte, plaintext []byte, context []byte) []byte {
	start := len(dst)
	if kdf.randomNonce() {
		// The module draws the nonce and Seal writes it, then the
		// ciphertext and tag: exactly where the blob keeps them. The
		// additional data is the header without the nonce.
		dst = appendHeader(dst, kind, kdf, parent, subject, salt, nil)
		ap := aadPool.Get().(*[]byte)
		aad := appendAAD((*ap)[:0], dst[start:], context)
		dst = aead.Seal(dst, nil, plaintext, aad)
		*ap = aad[:0]
		aadPool.Put(ap)
		return dst
	}
	dst = appendHeader(dst, kind, kdf, parent, subject, salt, nonce)
	ap := aadPool.Get().(*[]byte)
	aad := appendAAD((*ap)[:0], dst[start:], context)
	// The nonce is read from the header just written rather than from
	// *nonce, which would escape through the AEAD interface and cost an
	// allocation per item. Seal appends after it, so they do not overlap.
	dst = aead.Seal(dst, dst[len(dst)-NonceSize:], plaintext, aad)
	*ap = aad[:0]
	aadPool.Put(ap)
	return dst
}

// open decrypts the ciphertext of a parsed blob into out[:0] (whose
// capacity must be at least KeySize).
func open(out []byte, aead cipher.AEAD, blob []byte, h *rawHeader, context []byte) error {
	ap := aadPool.Get().(*[]byte)
	authenticated := blob[:h.size]
	if h.kdf.randomNonce() {
		authenticated = blob[:h.size-NonceSize]
	}
	aad := appendAAD((*ap)[:0], authenticated, context)
	var err error
	if aead.NonceSize() == 0 {
		// The random-nonce AEAD reads the nonce in front of the
		// ciphertext: the blob's nonce field.
		_, err = aead.Open(out[:0], nil, blob[h.size-NonceSize:], aad)
	} else {
		_, err = aead.Open(out[:0], h.nonce[:], blob[h.size:], aad)
	}
	*ap = aad[:0]
	aadPool.Put(ap)
	if err != nil {
		return ErrAuthentication
	}
	return nil
}

func checkContext(context []byte) error {
	if len(context) > MaxContextSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrContextTooLarge, len(context), MaxContextSize)
	}
	return nil
}

// SealServiceKey seals the service key l3 under the tenant key l2, for
// storage in the region FSM. The blob names l2 (tenant and L2 version)
// and l3 (service and L3 version) and is authenticated with both, so it
// opens only with OpenServiceKey under the same L2 and for the same L3 id.
// l3 must belong to l2's tenant.
func (l2 *TenantKey) SealServiceKey(l3 *ServiceKey) ([]byte, error) {
	salt, err := randomSalt()
	if err != nil {
		return nil, err
	}
	return l2.sealServiceKey(l3, writeKDF, &salt)
}

func (l2 *TenantKey) sealServiceKey(l3 *ServiceKey, kdf KDF, salt *[SaltSize]byte) ([]byte, error) {
	parent, subject := l2.ID(), l3.ID()
	if l2.IsZero() || l3.IsZero() {
		return nil, ErrDestroyed
	}
	if subject.Tenant != parent.Tenant {
		return nil, fmt.Errorf("%w: service key of another tenant", ErrKeyMismatch)
	}
	if err := checkWriteKDF(kdf); err != nil {
		return nil, err
	}
	aead, err := newAEAD(l2.core(), kdf, labelSealServiceKey, salt)
	if err != nil {
		return nil, err
	}
	pt, err := l3.core().acquire()
	if err != nil {
		return nil, err
	}
	defer l3.core().release()
	nonce := nonceFor(0)
	out := make([]byte, 0, headerSize(KindSealedServiceKey, parent, subject)+ciphertextSize)
	return seal(out, aead, KindSealedServiceKey, kdf, parent, subject, salt, &nonce, pt[offKey:offKey+KeySize], nil), nil
}

// OpenServiceKey opens a blob made by SealServiceKey and returns the
// service key named id. The blob must name l2 and id: otherwise it
// returns ErrKeyMismatch, before any cryptography. The key is decrypted
// straight into locked memory. The caller must Destroy the key.
func (l2 *TenantKey) OpenServiceKey(id KeyID, blob []byte) (*ServiceKey, error) {
	if err := id.validateService(); err != nil {
		return nil, err
	}
	if l2.IsZero() {
		return nil, ErrDestroyed
	}
	h, err := parse(blob)
	if err != nil {
		return nil, err
	}
	parent := l2.ID()
	switch {
	case h.kind != KindSealedServiceKey:
		return nil, fmt.Errorf("%w: blob is a %v, not a sealed service key", ErrKeyMismatch, h.kind)
	case string(h.tenant) != parent.Tenant || h.version != parent.Version:
		return nil, fmt.Errorf("%w: sealed under another tenant key", ErrKeyMismatch)
	case string(h.subjService) != id.Service || h.subjVersion != id.Version || id.Tenant != parent.Tenant:
		return nil, fmt.Errorf("%w: blob holds another service key", ErrKeyMismatch)
	}
	aead, err := newAEAD(l2.core(), h.kdf, labelSealServiceKey, h.salt)
	if err != nil {
		return nil, err
	}
	k, err := newLockedKeyFunc(id, func(dst []byte) error {
		return open(dst, aead, blob, &h, nil)
	})
	if err != nil {
		return nil, err
	}
	return &ServiceKey{k: k}, nil
}

// Wrap wraps the data key dk under l3, bound to l3's identity and to the
// caller's context (at most MaxContextSize bytes; nil and empty are the
// same context). The blob is self-contained: Unwrap with the same key and
// context opens it.
func (l3 *ServiceKey) Wrap(dk *DataKey, context []byte) ([]byte, error) {
	salt, err := randomSalt()
	if err != nil {
		return nil, err
	}
	return l3.wrap(dk, context, writeKDF, &salt)
}

// WrapKey is Wrap for a data key held as bytes (KeySize bytes, not all zero: CheckDataKey), as
// WrapKeys is for a batch: no DataKey is made, which saves a unary wrap an allocation. plaintext is
// only read; the caller wipes it.
func (l3 *ServiceKey) WrapKey(plaintext, context []byte) ([]byte, error) {
	if err := CheckDataKey(plaintext); err != nil {
		return nil, err
	}
	// The salt is drawn into spare capacity at the end of the blob's own buffer: a salt variable
	// escapes through the key derivation's hash interface and costs an allocation per wrap. The
	// blob is appended before those bytes and never reaches them; they hold only the salt, which
	// the blob's header carries in the clear anyway.
	size := headerSize(KindWrappedDataKey, l3.ID(), KeyID{}) + ciphertextSize
	buf := make([]byte, size+SaltSize)
	salt := (*[SaltSize]byte)(buf[size:])
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, fmt.Errorf("wrap: reading salt: %w", err)
	}
	return l3.wrapInto(buf[:0:size], plaintext, context, writeKDF, salt)
}

func (l3 *ServiceKey) wrap(dk *DataKey, context []byte, kdf KDF, salt *[SaltSize]byte) ([]byte, error) {
	if dk.IsZero() {
		return nil, ErrDestroyed
	}
	return l3.wrapBytes(dk.b[:], context, kdf, salt)
}

// wrapBytes wraps the KeySize bytes of key.
func (l3 *ServiceKey) wrapBytes(key, context []byte, kdf KDF, salt *[SaltSize]byte) ([]byte, error) {
	return l3.wrapInto(nil, key, context, kdf, salt)
}

// wrapInto wraps the KeySize bytes of key, appending the blob to out (nil: a new buffer).
func (l3 *ServiceKey) wrapInto(out, key, context []byte, kdf KDF, salt *[SaltSize]byte) ([]byte, error) {
	if err := checkContext(context); err != nil {
		return nil, err
	}
	if err := checkWriteKDF(kdf); err != nil {
		return nil, err
	}
	aead, err := newAEAD(l3.core(), kdf, labelWrapDataKey, salt)
	if err != nil {
		return nil, err
	}
	id := l3.ID()
	nonce := nonceFor(0)
	if out == nil {
		out = make([]byte, 0, headerSize(KindWrappedDataKey, id, KeyID{})+ciphertextSize)
	}
	return seal(out, aead, KindWrappedDataKey, kdf, id, KeyID{}, salt, &nonce, key, context), nil
}

// Unwrap opens a blob made by Wrap or WrapBatch under l3 with the same
// context. A blob for another key (tenant, service or version) or of
// another kind gives ErrKeyMismatch; a tampered blob or another context
// gives ErrAuthentication. The caller should Destroy the data key when
// done.
func (l3 *ServiceKey) Unwrap(blob, context []byte) (*DataKey, error) {
	if l3.IsZero() {
		return nil, ErrDestroyed
	}
	h, err := parse(blob)
	if err != nil {
		return nil, err
	}
	if err := l3.checkWrapped(&h, context); err != nil {
		return nil, err
	}
	aead, err := newAEAD(l3.core(), h.kdf, labelWrapDataKey, h.salt)
	if err != nil {
		return nil, err
	}
	return openDataKey(aead, blob, &h, context)
}

// UnwrapKey is Unwrap returning the data key as a new KeySize slice (the caller owns and wipes it)
// instead of a DataKey: for a caller that hands the plaintext on, as the region's Unwrap answer
// does, it saves the DataKey and its copy.
func (l3 *ServiceKey) UnwrapKey(blob, context []byte) ([]byte, error) {
	if l3.IsZero() {
		return nil, ErrDestroyed
	}
	h, err := parse(blob)
	if err != nil {
		return nil, err
	}
	if err := l3.checkWrapped(&h, context); err != nil {
		return nil, err
	}
	aead, err := newAEAD(l3.core(), h.kdf, labelWrapDataKey, h.salt)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, KeySize)
	if err := open(out, aead, blob, &h, context); err != nil {
		return nil, err
	}
	return out[:KeySize], nil
}

func (l3 *ServiceKey) checkWrapped(h *rawHeader, context []byte) error {
	id := l3.ID()
	if h.kind != KindWrappedDataKey {
		return fmt.Errorf("%w: blob is a %v, not a wrapped data key", ErrKeyMismatch, h.kind)
	}
	if string(h.tenant) != id.Tenant || string(h.service) != id.Service || h.version != id.Version {
		return fmt.Errorf("%w: wrapped under another service key", ErrKeyMismatch)
	}
	return checkContext(context)
}

func openDataKey(aead cipher.AEAD, blob []byte, h *rawHeader, context []byte) (*DataKey, error) {
	dk := new(DataKey)
	if err := open(dk.b[:0], aead, blob, h, context); err != nil {
		return nil, err
	}
	dk.live = true
	return dk, nil
}

// WrapBatch wraps each dks[i] with context contexts[i] (contexts may be
// nil: no context for every item) under l3, paying one key derivation per
// ItemsPerDerivedKey items instead of one per item. Each blob is still
// self-contained (it carries its salt and its own nonce) and opens alone
// with Unwrap. Either every item is wrapped or none is.
func (l3 *ServiceKey) WrapBatch(dks []*DataKey, contexts [][]byte) ([][]byte, error) {
	return l3.wrapBatch(dks, contexts, writeKDF, nil)
}

func (l3 *ServiceKey) wrapBatch(dks []*DataKey, contexts [][]byte, kdf KDF, saltSource io.Reader) ([][]byte, error) {
	if contexts != nil && len(contexts) != len(dks) {
		return nil, fmt.Errorf("%w: %d keys, %d contexts", ErrBatchMismatch, len(dks), len(contexts))
	}
	if l3.IsZero() {
		return nil, ErrDestroyed
	}
	for i, dk := range dks {
		if dk.IsZero() {
			return nil, fmt.Errorf("wrap: batch item %d: %w", i, ErrDestroyed)
		}
		if contexts != nil {
			if err := checkContext(contexts[i]); err != nil {
				return nil, fmt.Errorf("wrap: batch item %d: %w", i, err)
			}
		}
	}
	return l3.sealItems(len(dks), func(i int) []byte { return dks[i].b[:] }, contexts, kdf, saltSource)
}

// sealItems wraps the n data keys plaintext(i) under l3, item i with
// ItemContext(contexts, i), one derivation per ItemsPerDerivedKey items. The
// caller has checked the keys and contexts.
func (l3 *ServiceKey) sealItems(n int, plaintext func(int) []byte, contexts [][]byte, kdf KDF, saltSource io.Reader) ([][]byte, error) {
	if err := checkWriteKDF(kdf); err != nil {
		return nil, err
	}
	id := l3.ID()
	size := headerSize(KindWrappedDataKey, id, KeyID{}) + ciphertextSize
	// One allocation for all blobs; each blob is a full slice expression
	// so that appending to one cannot overwrite the next.
	buf := make([]byte, 0, n*size)
	blobs := make([][]byte, n)
	var aead cipher.AEAD
	var salt [SaltSize]byte
	for i := range n {
		c := uint64(i % ItemsPerDerivedKey)
		if c == 0 {
			var err error
			if salt, err = saltFrom(saltSource); err != nil {
				return nil, err
			}
			if aead, err = newAEAD(l3.core(), kdf, labelWrapDataKey, &salt); err != nil {
				return nil, err
			}
		}
		nonce := nonceFor(c)
		start := len(buf)
		buf = seal(buf, aead, KindWrappedDataKey, kdf, id, KeyID{}, &salt, &nonce, plaintext(i), ItemContext(contexts, i))
		blobs[i] = buf[start:len(buf):len(buf)]
	}
	return blobs, nil
}

// ItemContext is item i's context among the contexts of a batch: none
// (nil), one shared by every item, or one per item.
func ItemContext(contexts [][]byte, i int) []byte {
	switch len(contexts) {
	case 0:
		return nil
	case 1:
		return contexts[0]
	}
	return contexts[i]
}

// UnwrapBatch opens each blobs[i] with context contexts[i] (contexts may
// be nil: no context for every item) under l3, deriving once per distinct
// salt, so the blobs of one WrapBatch cost one derivation. Items fail
// independently: if any fails, UnwrapBatch returns a *BatchError with one
// error per item, and dks[i] is nil exactly where the item failed. A
// call-level problem (mismatched lengths, destroyed l3) returns a plain
// error and no keys.
func (l3 *ServiceKey) UnwrapBatch(blobs, contexts [][]byte) ([]*DataKey, error) {
	if contexts != nil && len(contexts) != len(blobs) {
		return nil, fmt.Errorf("%w: %d blobs, %d contexts", ErrBatchMismatch, len(blobs), len(contexts))
	}
	if l3.IsZero() {
		return nil, ErrDestroyed
	}
	dks := make([]*DataKey, len(blobs))
	var errs []error
	var aeads aeadCache
	for i, blob := range blobs {
		var context []byte
		if contexts != nil {
			context = contexts[i]
		}
		dk, err := func() (*DataKey, error) {
			h, aead, err := aeads.forBlob(l3, blob, context)
			if err != nil {
				return nil, err
			}
			return openDataKey(aead, blob, &h, context)
		}()
		if err != nil {
			if errs == nil {
				errs = make([]error, len(blobs))
			}
			errs[i] = err
			continue
		}
		dks[i] = dk
	}
	if errs != nil {
		return dks, &BatchError{Errs: errs}
	}
	return dks, nil
}

// aeadCache holds the AEADs a batch unwrap derived, by salt and KDF, so
// that the blobs of one WrapBatch cost one derivation.
type aeadCache struct {
	// Blobs of one batch are usually adjacent, so the last salt is
	// checked before the map.
	lastSalt *[SaltSize]byte
	lastKDF  KDF
	last     cipher.AEAD
	seen     map[saltKDF]cipher.AEAD
	// The last blob that parsed and named l3, and its header: a blob with
	// the same parent (SameParent) is not parsed again.
	prevBlob []byte
	prevH    rawHeader
}

type saltKDF struct {
	salt [SaltSize]byte
	kdf  KDF
}

// forBlob parses blob, checks that it is a data key wrapped under l3 and
// that context is within its limit, and returns its header and the AEAD
// that opens it.
func (c *aeadCache) forBlob(l3 *ServiceKey, blob, context []byte) (rawHeader, cipher.AEAD, error) {
	var h rawHeader
	if c.prevBlob != nil && SameParent(c.prevBlob, blob) {
		// parse would accept blob as it did prevBlob, and checkWrapped
		// find the same names: only salt and nonce differ.
		h = c.prevH
		off := len(blob) - (SaltSize + NonceSize + ciphertextSize)
		h.salt = (*[SaltSize]byte)(blob[off : off+SaltSize])
		h.nonce = (*[NonceSize]byte)(blob[off+SaltSize : off+SaltSize+NonceSize])
		if err := checkContext(context); err != nil {
			return h, nil, err
		}
	} else {
		var err error
		if h, err = parse(blob); err != nil {
			return h, nil, err
		}
		if err := l3.checkWrapped(&h, context); err != nil {
			return h, nil, err
		}
		c.prevBlob, c.prevH = blob, h
	}
	var err error
	if c.last == nil || *c.lastSalt != *h.salt || c.lastKDF != h.kdf {
		key := saltKDF{*h.salt, h.kdf}
		aead, ok := c.seen[key]
		if !ok {
			if aead, err = newAEAD(l3.core(), h.kdf, labelWrapDataKey, h.salt); err != nil {
				return h, nil, err
			}
			if c.seen == nil {
				c.seen = make(map[saltKDF]cipher.AEAD)
			}
			c.seen[key] = aead
		}
		c.lastSalt, c.lastKDF, c.last = h.salt, h.kdf, aead
	}
	return h, c.last, nil
}
