package wrap

import (
	"bytes"
	"crypto/rand"
	"fmt"
)

// The batch operations on data keys held as bytes, for a server that
// receives and returns them as bytes (the packed RPCs of the region): they
// make no DataKey per item and no copy of a plaintext, so a batch of 256
// costs a handful of allocations. The plaintexts stay the caller's to
// wipe; a DataKey is still the type to hold one key for a while.
//
// contexts, in each of them, is none (nil or empty: no context for any
// item), one context shared by every item, or exactly one per item.

// WrapKeys wraps each plaintexts[i] — a data key of KeySize bytes, not all
// zero — under l3 as WrapBatch does (one derivation per
// ItemsPerDerivedKey items), bound to its context. It reads the plaintexts
// in place, copies them nowhere and does not wipe them: the caller wipes
// them when done (it may need them again, to retry after ErrDestroyed).
// Either every item is wrapped or none is; a plaintext or context that is
// not acceptable fails the call with an error naming its index.
func (l3 *ServiceKey) WrapKeys(plaintexts, contexts [][]byte) ([][]byte, error) {
	if err := checkContexts(contexts, len(plaintexts)); err != nil {
		return nil, err
	}
	if l3.IsZero() {
		return nil, ErrDestroyed
	}
	for i, p := range plaintexts {
		if err := CheckDataKey(p); err != nil {
			return nil, fmt.Errorf("wrap: batch item %d: %w", i, err)
		}
	}
	return l3.sealItems(len(plaintexts), func(i int) []byte { return plaintexts[i] }, contexts, writeKDF, nil)
}

// UnwrapKeys opens each blobs[i] under l3 as UnwrapBatch does (one
// derivation per distinct salt), writing the data keys into dst, which
// must hold len(blobs)*KeySize bytes: item i's key is
// dst[i*KeySize:(i+1)*KeySize], returned as plaintexts[i]. Items fail
// independently (a context over its limit fails its items, as in
// UnwrapBatch): if any fails, UnwrapKeys returns a *BatchError with one
// error per item, plaintexts[i] is nil exactly where item i failed, and
// its part of dst is zero. dst holds plaintext keys: the caller wipes it
// when done. A call-level problem (the number of contexts, a short dst, a
// destroyed l3) returns a plain error and no keys.
func (l3 *ServiceKey) UnwrapKeys(dst []byte, blobs, contexts [][]byte) ([][]byte, error) {
	if err := checkContextCount(contexts, len(blobs)); err != nil {
		return nil, err
	}
	if len(dst) < len(blobs)*KeySize {
		return nil, fmt.Errorf("%w: %d bytes for %d keys", ErrBatchMismatch, len(dst), len(blobs))
	}
	if l3.IsZero() {
		return nil, ErrDestroyed
	}
	plaintexts := make([][]byte, len(blobs))
	var errs []error
	var aeads aeadCache
	for i, blob := range blobs {
		context := ItemContext(contexts, i)
		out := dst[i*KeySize : (i+1)*KeySize : (i+1)*KeySize]
		h, aead, err := aeads.forBlob(l3, blob, context)
		if err == nil {
			// open clears out when the blob does not authenticate.
			err = open(out, aead, blob, &h, context)
		}
		if err != nil {
			clear(out)
			if errs == nil {
				errs = make([]error, len(blobs))
			}
			errs[i] = err
			continue
		}
		plaintexts[i] = out
	}
	if errs != nil {
		return plaintexts, &BatchError{Errs: errs}
	}
	return plaintexts, nil
}

// NewDataKeys returns n fresh random data keys of KeySize bytes, in one
// allocation: what a batch GenerateDataKey hands out in plaintext (wrap
// them with WrapKeys). The caller owns them and must wipe them when done.
func NewDataKeys(n int) [][]byte {
	buf := make([]byte, n*KeySize)
	if _, err := rand.Read(buf); err != nil {
		panic("wrap: crypto/rand failed: " + err.Error()) // crypto/rand.Read never fails on Linux
	}
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = buf[i*KeySize : (i+1)*KeySize : (i+1)*KeySize]
	}
	return keys
}

// checkContextCount checks the number of contexts of a batch of n items:
// none, one shared, or one per item.
func checkContextCount(contexts [][]byte, n int) error {
	if len(contexts) > 1 && len(contexts) != n {
		return fmt.Errorf("%w: %d items, %d contexts", ErrBatchMismatch, n, len(contexts))
	}
	return nil
}

// checkContexts is checkContextCount, and each context within
// MaxContextSize.
func checkContexts(contexts [][]byte, n int) error {
	if err := checkContextCount(contexts, n); err != nil {
		return err
	}
	for i, c := range contexts {
		if err := checkContext(c); err != nil {
			return fmt.Errorf("wrap: batch item %d: %w", i, err)
		}
	}
	return nil
}

// SameParent reports whether blob is as long as prev and has the same
// header but for salt and nonce. If ParseHeader accepted prev, it then
// accepts blob too, with the same Kind, KDF, Parent and Subject: a server
// that reads the key of many blobs of one batch may parse only the first.
func SameParent(prev, blob []byte) bool {
	const tail = SaltSize + NonceSize + ciphertextSize
	return len(blob) == len(prev) && len(blob) >= tail && bytes.Equal(blob[:len(blob)-tail], prev[:len(prev)-tail])
}
