package wrap

import (
	"bytes"
	"crypto/cipher"
	"crypto/fips140"
	"errors"
	"sync"
	"testing"
)

// newDelegate derives a delegated key of l3 and makes the gateway's side of it, as the region and
// the gateway do across the wire.
func newDelegate(t *testing.T, l3 *ServiceKey) *WrapDelegate {
	t.Helper()
	var k [KeySize]byte
	kdf, salt, err := l3.DeriveWrapKey(&k)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewWrapDelegate(l3.ID(), kdf, salt[:], k[:])
	clear(k[:])
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestWrapDelegateBlobsOpenAtTheServiceKey: what a delegate seals is an ordinary blob of the
// service key — same header as WrapKeys makes but for salt and nonce — that Unwrap, UnwrapKeys and
// UnwrapBatch open with its context and only with it; concurrent Wraps never share a nonce.
func TestWrapDelegateBlobsOpenAtTheServiceKey(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	d := newDelegate(t, l3)
	if d.ID() != l3ID || d.Remaining() != ItemsPerDerivedKey {
		t.Fatalf("delegate %v with %d left", d.ID(), d.Remaining())
	}
	const workers, each = 8, 64
	keys := NewDataKeys(workers * each)
	blobs := make([][]byte, len(keys))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * each; i < (w+1)*each; i++ {
				b, err := d.Wrap(keys[i], []byte("ctx"))
				if err != nil {
					t.Error(err)
					return
				}
				blobs[i] = b
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if d.Remaining() != ItemsPerDerivedKey-len(keys) {
		t.Fatalf("%d left after %d wraps", d.Remaining(), len(keys))
	}
	ref, err := l3.WrapKeys(keys[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	nonces := map[[NonceSize]byte]bool{}
	for i, b := range blobs {
		if !SameParent(ref[0], b) {
			t.Fatalf("blob %d: header differs from a WrapKeys blob's beyond salt and nonce", i)
		}
		h, err := ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		if !WriteKDF().randomNonce() && nonces[h.Nonce] {
			t.Fatalf("blob %d: nonce used twice", i)
		}
		nonces[h.Nonce] = true
		pt, err := l3.UnwrapKey(b, []byte("ctx"))
		if err != nil || !bytes.Equal(pt, keys[i]) {
			t.Fatalf("blob %d: %v", i, err)
		}
		if _, err := l3.UnwrapKey(b, []byte("other")); !errors.Is(err, ErrAuthentication) {
			t.Fatalf("blob %d under another context: %v", i, err)
		}
	}
	dst := make([]byte, len(blobs)*KeySize)
	if _, err := l3.UnwrapKeys(dst, blobs, [][]byte{[]byte("ctx")}); err != nil {
		t.Fatal(err)
	}
	other := newServiceKey(t, KeyID{Tenant: l3ID.Tenant, Service: l3ID.Service, Version: l3ID.Version + 1})
	if _, err := other.UnwrapKey(blobs[0], []byte("ctx")); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("another version opened a delegate's blob: %v", err)
	}
}

// TestWrapDelegateLimits: a delegate seals ItemsPerDerivedKey keys and then refuses, refuses after
// Destroy, and refuses what Wrap refuses (a weak key, a context over the limit) without spending a
// nonce; NewWrapDelegate refuses bad material.
func TestWrapDelegateLimits(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	d := newDelegate(t, l3)
	key := NewDataKeys(1)[0]
	if _, err := d.Wrap(make([]byte, KeySize), nil); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("all-zero data key: %v", err)
	}
	if _, err := d.Wrap(key, make([]byte, MaxContextSize+1)); !errors.Is(err, ErrContextTooLarge) {
		t.Fatalf("oversized context: %v", err)
	}
	if d.Remaining() != ItemsPerDerivedKey {
		t.Fatalf("refused wraps spent nonces: %d left", d.Remaining())
	}
	for i := range ItemsPerDerivedKey {
		if _, err := d.Wrap(key, nil); err != nil {
			t.Fatalf("wrap %d: %v", i, err)
		}
	}
	if _, err := d.Wrap(key, nil); !errors.Is(err, ErrDelegateSpent) || d.Remaining() != 0 {
		t.Fatalf("wrap past the limit: %v, %d left", err, d.Remaining())
	}
	d2 := newDelegate(t, l3)
	d2.Destroy()
	if _, err := d2.Wrap(key, nil); !errors.Is(err, ErrDestroyed) || !d2.IsZero() {
		t.Fatalf("wrap after Destroy: %v", err)
	}

	var k [KeySize]byte
	kdf, salt, err := l3.DeriveWrapKey(&k)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		parent KeyID
		kdf    KDF
		salt   []byte
		key    []byte
		want   error
	}{
		{"tenant key", l2ID, kdf, salt[:], k[:], ErrInvalidKeyID},
		{"no version", KeyID{Tenant: l3ID.Tenant, Service: l3ID.Service}, kdf, salt[:], k[:], ErrInvalidKeyID},
		{"unknown suite", l3ID, 9, salt[:], k[:], ErrUnsupportedVersion},
		{"short salt", l3ID, kdf, salt[:8], k[:], ErrInvalidKey},
		{"short key", l3ID, kdf, salt[:], k[:16], ErrInvalidKey},
		{"zero key", l3ID, kdf, salt[:], make([]byte, KeySize), ErrInvalidKey},
	} {
		if _, err := NewWrapDelegate(tc.parent, tc.kdf, tc.salt, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	l3.Destroy()
	if _, _, err := l3.DeriveWrapKey(&k); !errors.Is(err, ErrDestroyed) {
		t.Fatalf("derive from a destroyed key: %v", err)
	}
}

// TestDeriveWrapKeyIsOneWay: two delegated keys of one service key differ (fresh salts), and
// neither is the service key.
func TestDeriveWrapKeyIsOneWay(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, KeySize)
	l3, err := ServiceKeyFromBytes(l3ID, raw)
	if err != nil {
		t.Fatal(err)
	}
	var a, b [KeySize]byte
	_, sa, err := l3.DeriveWrapKey(&a)
	if err != nil {
		t.Fatal(err)
	}
	_, sb, err := l3.DeriveWrapKey(&b)
	if err != nil {
		t.Fatal(err)
	}
	if sa == sb || a == b || bytes.Equal(a[:], raw) || bytes.Equal(b[:], raw) {
		t.Fatal("delegated keys repeat, or are the service key")
	}
}

// TestCounterNonceBeyondLimitRefused: a holder of a delegated key (a service certificate may ask
// for one) that seals past the count it was handed out for, choosing the nonce in the header
// itself, makes a blob no unwrap opens: one delegated key stands for at most ItemsPerDerivedKey
// data keys, however its holder behaves.
func TestCounterNonceBeyondLimitRefused(t *testing.T) {
	if WriteKDF().randomNonce() {
		t.Skip("the FIPS suite's nonces are random")
	}
	l3 := newServiceKey(t, l3ID)
	var k [KeySize]byte
	kdf, salt, err := l3.DeriveWrapKey(&k)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := newAEADFromKey(k[:], kdf)
	if err != nil {
		t.Fatal(err)
	}
	key := NewDataKeys(1)[0]
	for _, c := range []uint64{ItemsPerDerivedKey - 1, ItemsPerDerivedKey, 1 << 40} {
		nonce := nonceFor(c)
		blob := seal(nil, aead, KindWrappedDataKey, kdf, l3ID, KeyID{}, &salt, &nonce, key, []byte("ctx"))
		dk, err := l3.Unwrap(blob, []byte("ctx"))
		if err == nil {
			dk.Destroy()
		}
		if ok := err == nil; ok != (c < ItemsPerDerivedKey) {
			t.Errorf("nonce %d: %v", c, err)
		}
	}
	nonce := nonceFor(0)
	nonce[0] = 1
	blob := seal(nil, aead, KindWrappedDataKey, kdf, l3ID, KeyID{}, &salt, &nonce, key, nil)
	if _, err := l3.UnwrapKeys(nil, [][]byte{blob}, nil); err == nil {
		t.Error("a nonce with its high bytes set opened")
	}
}

func newAEADFromKey(k []byte, kdf KDF) (cipher.AEAD, error) {
	d, err := NewWrapDelegate(l3ID, kdf, make([]byte, SaltSize), k)
	if err != nil {
		return nil, err
	}
	return *d.aead.Load(), nil
}

// TestWrapDelegateFIPSWritesFIPSSuite: in FIPS 140-3 mode (GODEBUG=fips140=on or only) a process
// writes the FIPS suite only, so it takes no delegated key of another suite (one a region not in
// that mode derived); out of it, every suite is taken. Run with GODEBUG=fips140=on to see the
// first half.
func TestWrapDelegateFIPSWritesFIPSSuite(t *testing.T) {
	k := bytes.Repeat([]byte{2}, KeySize)
	salt := make([]byte, SaltSize)
	for _, kdf := range []KDF{KDFHKDFSHA256, KDFCounterHMACSHA256, KDFHKDFSHA256RandomNonce} {
		d, err := NewWrapDelegate(l3ID, kdf, salt, k)
		if want := !fips140.Enabled() || kdf.randomNonce(); (err == nil) != want {
			t.Errorf("suite %v with fips140.Enabled() = %v: %v", kdf, fips140.Enabled(), err)
		}
		d.Destroy()
	}
}
