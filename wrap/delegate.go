package wrap

import (
	"crypto/cipher"
	"crypto/fips140"
	"errors"
	"fmt"
	"sync/atomic"
)

// Delegated wrapping: a region hands a gateway the one-time key that a batch of data-key wraps
// under a service key would use (the key derived from L3, the data-key label and a fresh salt),
// and the gateway seals up to ItemsPerDerivedKey data keys with it itself, in the ordinary blob
// format. The blobs are exactly the blobs a PackedWrap of those keys would have made (same header,
// same derivation, nonces counting from zero), so every region node opens them with no change,
// and the gateway needs no region round trip per data key.
//
// What the holder of a delegated key can do, and no more:
//   - seal data keys of its choosing under that one salt: what the Wrap operation on the service
//     key already lets it do at the region;
//   - open the blobs of that salt: only those it sealed itself, whose keys it made.
//
// It learns nothing about L3 (the derivation is one-way) nor about the key of any other salt, so
// no blob the region or another gateway made opens with it. See docs/gateway.md, "Delegated data
// keys", for how revocation reaches it.

// ErrDelegateSpent is returned by WrapDelegate.Wrap once the delegated key has sealed
// ItemsPerDerivedKey data keys (or its Limit): the holder asks the region for another.
var ErrDelegateSpent = errors.New("wrap: delegated wrapping key used up")

// DeriveWrapKey derives a fresh one-time data-key wrapping key of l3 into dst, under a new random
// salt and the suite this process writes with, for a WrapDelegate elsewhere (NewWrapDelegate with
// the same kdf and salt). dst is key material: the caller sends it only inside mutual TLS and
// wipes it.
func (l3 *ServiceKey) DeriveWrapKey(dst *[KeySize]byte) (KDF, [SaltSize]byte, error) {
	salt, err := randomSalt()
	if err != nil {
		return 0, salt, err
	}
	if l3.IsZero() {
		return 0, salt, ErrDestroyed
	}
	if err := l3.core().derive(dst, writeKDF, labelWrapDataKey, &salt); err != nil {
		return 0, salt, err
	}
	return writeKDF, salt, nil
}

// WrapDelegate seals data keys under one delegated wrapping key of a service key (see
// DeriveWrapKey). It is safe for concurrent use: each Wrap takes the next nonce of the key's
// counter, and none is used twice. Destroy it when it is no longer to be used.
//
// Like the one-time keys the region derives per batch (DESIGN.md, "Where secrets live,
// honestly"), the AES key schedule lives in the Go heap inside crypto/cipher for the delegate's
// life; the derived key bytes themselves are not kept.
type WrapDelegate struct {
	id    KeyID
	kdf   KDF
	salt  [SaltSize]byte
	aead  atomic.Pointer[cipher.AEAD] // nil once destroyed
	used  atomic.Uint64               // nonces handed out
	limit uint64                      // data keys it may seal: ItemsPerDerivedKey, or fewer (Limit)
}

// NewWrapDelegate makes a WrapDelegate for the service key version parent from a delegated key:
// the suite kdf, the salt and the 32-byte derived key the region sent. key is only read; the
// caller wipes it.
func NewWrapDelegate(parent KeyID, kdf KDF, salt, key []byte) (*WrapDelegate, error) {
	if err := parent.validateService(); err != nil {
		return nil, err
	}
	if parent.Version == 0 {
		return nil, fmt.Errorf("%w: a delegated key names one version", ErrInvalidKeyID)
	}
	if !kdf.known() {
		return nil, fmt.Errorf("%w: KDF id %d", ErrUnsupportedVersion, uint8(kdf))
	}
	if err := checkWriteKDF(kdf); err != nil {
		return nil, err
	}
	if fips140.Enabled() && !kdf.randomNonce() {
		// This process writes the FIPS suite only (writeKDF), whatever suite a region of another
		// mode derived the key for.
		return nil, fmt.Errorf("%w: a delegated key of suite %v, in FIPS 140-3 mode, which writes suite %v only",
			ErrFIPSMode, kdf, KDFHKDFSHA256RandomNonce)
	}
	if len(salt) != SaltSize {
		return nil, fmt.Errorf("%w: a %d-byte salt, want %d", ErrInvalidKey, len(salt), SaltSize)
	}
	if len(key) != KeySize || isAllZero(key) {
		return nil, ErrInvalidKey
	}
	aead, err := gcmFor(key, kdf)
	if err != nil {
		return nil, err
	}
	d := &WrapDelegate{id: parent, kdf: kdf, salt: [SaltSize]byte(salt), limit: ItemsPerDerivedKey}
	d.aead.Store(&aead)
	return d, nil
}

// ID is the service key version the delegate wraps under.
func (d *WrapDelegate) ID() KeyID { return d.id }

// Limit lowers how many data keys the delegate seals in all to n (the max_items the region
// handed it out for), when n is below ItemsPerDerivedKey; it returns d. Call it before any Wrap.
func (d *WrapDelegate) Limit(n int) *WrapDelegate {
	if n >= 0 && uint64(n) < d.limit {
		d.limit = uint64(n)
	}
	return d
}

// Remaining is how many more data keys the delegate may seal.
func (d *WrapDelegate) Remaining() int {
	return int(d.limit - min(d.used.Load(), d.limit))
}

// Wrap seals the data key plaintext (KeySize bytes, not all zero), bound to context, into a blob
// that any node holding the parent service key opens with Unwrap. plaintext is only read.
// ErrDelegateSpent: the delegate has sealed its limit of keys; ErrDestroyed: Destroy was
// called.
func (d *WrapDelegate) Wrap(plaintext, context []byte) ([]byte, error) {
	if err := CheckDataKey(plaintext); err != nil {
		return nil, err
	}
	if err := checkContext(context); err != nil {
		return nil, err
	}
	a := d.aead.Load()
	if a == nil {
		return nil, ErrDestroyed
	}
	c := d.used.Add(1) - 1
	if c >= d.limit {
		return nil, ErrDelegateSpent
	}
	nonce := nonceFor(c)
	out := make([]byte, 0, headerSize(KindWrappedDataKey, d.id, KeyID{})+ciphertextSize)
	return seal(out, *a, KindWrappedDataKey, d.kdf, d.id, KeyID{}, &d.salt, &nonce, plaintext, context), nil
}

// Destroy makes the delegate refuse every further Wrap. A Wrap already past its check finishes.
func (d *WrapDelegate) Destroy() {
	if d != nil {
		d.aead.Store(nil)
	}
}

// IsZero reports whether the delegate was destroyed (or is nil).
func (d *WrapDelegate) IsZero() bool { return d == nil || d.aead.Load() == nil }
