package wrap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestWrapKeysRoundTrip: WrapKeys wraps keys held as bytes (no context, one shared, one per item,
// across a derivation boundary) into blobs that Unwrap, UnwrapBatch and UnwrapKeys open; it leaves
// the plaintexts as they were (the caller wipes them).
func TestWrapKeysRoundTrip(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	const n = ItemsPerDerivedKey + 3
	keys := NewDataKeys(n)
	orig := make([][]byte, n)
	perItem := make([][]byte, n)
	for i := range keys {
		orig[i] = bytes.Clone(keys[i])
		perItem[i] = fmt.Appendf(nil, "item-%d", i)
	}
	for _, tc := range []struct {
		name     string
		contexts [][]byte
	}{{"none", nil}, {"shared", [][]byte{[]byte("shared")}}, {"per item", perItem}} {
		blobs, err := l3.WrapKeys(keys, tc.contexts)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(blobs) != n {
			t.Fatalf("%s: %d blobs for %d keys", tc.name, len(blobs), n)
		}
		for i := range keys {
			if !bytes.Equal(keys[i], orig[i]) {
				t.Fatalf("%s: WrapKeys changed plaintext %d", tc.name, i)
			}
		}
		salts := map[[SaltSize]byte]int{}
		for i, b := range blobs {
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			salts[h.Salt]++
			wantCounter := !WriteKDF().randomNonce() // the FIPS suite's nonces are random
			if (wantCounter && h.Nonce != nonceFor(uint64(i%ItemsPerDerivedKey))) || h.Parent != l3ID || h.Kind != KindWrappedDataKey {
				t.Fatalf("%s item %d: header %+v", tc.name, i, h)
			}
		}
		if len(salts) != 2 {
			t.Fatalf("%s: %d salts for %d items, want 2", tc.name, len(salts), n)
		}
		// Each blob opens alone, and in a batch of either kind.
		for _, i := range []int{0, 1, ItemsPerDerivedKey, n - 1} {
			dk, err := l3.Unwrap(blobs[i], ItemContext(tc.contexts, i))
			if err != nil || !bytes.Equal(dk.Bytes(), orig[i]) {
				t.Fatalf("%s item %d alone: %v", tc.name, i, err)
			}
		}
		var perItemCtx [][]byte
		if tc.contexts != nil {
			perItemCtx = make([][]byte, n)
			for i := range perItemCtx {
				perItemCtx[i] = ItemContext(tc.contexts, i)
			}
		}
		dks, err := l3.UnwrapBatch(blobs, perItemCtx)
		if err != nil {
			t.Fatalf("%s: UnwrapBatch: %v", tc.name, err)
		}
		dst := make([]byte, n*KeySize)
		plain, err := l3.UnwrapKeys(dst, blobs, tc.contexts)
		if err != nil {
			t.Fatalf("%s: UnwrapKeys: %v", tc.name, err)
		}
		for i := range n {
			if !bytes.Equal(dks[i].Bytes(), orig[i]) || !bytes.Equal(plain[i], orig[i]) {
				t.Fatalf("%s item %d opens to other bytes", tc.name, i)
			}
		}
		// The plaintexts are full slices of dst: appending to one does not overwrite the next.
		_ = append(plain[0], 0xff)
		if !bytes.Equal(plain[1], orig[1]) || !bytes.Equal(dst[:KeySize], orig[0]) {
			t.Fatalf("%s: UnwrapKeys' plaintexts are not where they should be in dst", tc.name)
		}
	}
}

// TestWrapKeysRefuses: WrapKeys fails the whole call for a plaintext that is no data key, a context
// over its limit, a wrong number of contexts or a destroyed key, naming the item's index and never
// its bytes.
func TestWrapKeysRefuses(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	secret := []byte("SECRET-PLAINTEXT-0123456789abcde")
	keys := func(n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = bytes.Clone(secret)
		}
		return out
	}
	with := func(ks [][]byte, i int, k []byte) [][]byte { ks[i] = k; return ks }
	long := make([]byte, MaxContextSize+1)
	for _, tc := range []struct {
		name     string
		keys     [][]byte
		contexts [][]byte
		want     error
		index    string
	}{
		{"short key", with(keys(5), 3, secret[:31]), nil, ErrInvalidKey, "item 3"},
		{"long key", with(keys(5), 0, append(bytes.Clone(secret), 1)), nil, ErrInvalidKey, "item 0"},
		{"no key", with(keys(5), 4, nil), nil, ErrInvalidKey, "item 4"},
		{"all-zero key", with(keys(5), 2, make([]byte, KeySize)), nil, ErrInvalidKey, "item 2"},
		{"long context", keys(5), [][]byte{nil, nil, nil, long, nil}, ErrContextTooLarge, "item 3"},
		{"long shared context", keys(5), [][]byte{long}, ErrContextTooLarge, "item 0"},
		{"two contexts for five", keys(5), [][]byte{nil, nil}, ErrBatchMismatch, ""},
		{"six contexts for five", keys(5), make([][]byte, 6), ErrBatchMismatch, ""},
	} {
		blobs, err := l3.WrapKeys(tc.keys, tc.contexts)
		if !errors.Is(err, tc.want) || blobs != nil {
			t.Errorf("%s: %v, %d blobs; want %v", tc.name, err, len(blobs), tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.index) {
			t.Errorf("%s: %q does not name %q", tc.name, err, tc.index)
		}
		if strings.Contains(err.Error(), string(secret[:16])) || strings.Contains(err.Error(), hex.EncodeToString(secret[:8])) {
			t.Errorf("%s: the error shows the plaintext: %v", tc.name, err)
		}
	}
	if blobs, err := l3.WrapKeys(nil, nil); err != nil || len(blobs) != 0 {
		t.Fatal(blobs, err)
	}
	dead := newServiceKey(t, l3ID)
	dead.Destroy()
	if _, err := dead.WrapKeys(keys(2), nil); !errors.Is(err, ErrDestroyed) {
		t.Fatalf("WrapKeys under a destroyed key: %v", err)
	}
	if _, err := dead.UnwrapKeys(make([]byte, KeySize), [][]byte{{1}}, nil); !errors.Is(err, ErrDestroyed) {
		t.Fatalf("UnwrapKeys under a destroyed key: %v", err)
	}
}

// TestUnwrapKeysPerItem: UnwrapKeys answers each blob on its own, as UnwrapBatch does: the failed
// items have no plaintext and a zero part of dst, the others open.
func TestUnwrapKeysPerItem(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	other := newServiceKey(t, KeyID{Tenant: "acme", Service: "ledger", Version: 1})
	keys := NewDataKeys(4)
	blobs, err := l3.WrapKeys(keys, [][]byte{[]byte("ctx")})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.WrapKeys(keys[:1], [][]byte{[]byte("ctx")})
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(blobs[1])
	tampered[len(tampered)-1] ^= 1
	// Another salt: the same parent (the header is parsed once per run of such blobs), but the
	// key derived for it does not open the blob.
	otherSalt := bytes.Clone(blobs[2])
	otherSalt[len(otherSalt)-(SaltSize+NonceSize+ciphertextSize)] ^= 1
	items := []struct {
		blob, ctx []byte
		want      error // nil: opens to keys[key]
		key       int
	}{
		{blobs[0], []byte("ctx"), nil, 0},
		{tampered, []byte("ctx"), ErrAuthentication, 0},
		{blobs[2], []byte("other"), ErrAuthentication, 0},
		{blobs[3][:10], []byte("ctx"), ErrMalformed, 0},
		{foreign[0], []byte("ctx"), ErrKeyMismatch, 0},
		{blobs[3], make([]byte, MaxContextSize+1), ErrContextTooLarge, 0},
		{otherSalt, []byte("ctx"), ErrAuthentication, 0},
		{blobs[3], []byte("ctx"), nil, 3},
		{blobs[2], []byte("ctx"), nil, 2},
	}
	var in, ctxs [][]byte
	for _, it := range items {
		in, ctxs = append(in, it.blob), append(ctxs, it.ctx)
	}
	dst := bytes.Repeat([]byte{0xaa}, len(items)*KeySize)
	plain, err := l3.UnwrapKeys(dst, in, ctxs)
	var be *BatchError
	if !errors.As(err, &be) || len(be.Errs) != len(items) {
		t.Fatalf("UnwrapKeys: %v", err)
	}
	for i, it := range items {
		part := dst[i*KeySize : (i+1)*KeySize]
		if it.want != nil {
			if !errors.Is(be.Errs[i], it.want) || plain[i] != nil || !bytes.Equal(part, make([]byte, KeySize)) {
				t.Errorf("item %d: %v, plaintext %v, dst part not zero; want %v", i, be.Errs[i], plain[i] != nil, it.want)
			}
			continue
		}
		if be.Errs[i] != nil || !bytes.Equal(plain[i], keys[it.key]) || !bytes.Equal(part, keys[it.key]) {
			t.Errorf("item %d: %v, or other bytes", i, be.Errs[i])
		}
	}
	// Call-level problems.
	if _, err := l3.UnwrapKeys(make([]byte, KeySize), blobs[:2], nil); !errors.Is(err, ErrBatchMismatch) {
		t.Errorf("UnwrapKeys with a short dst: %v", err)
	}
	if _, err := l3.UnwrapKeys(make([]byte, 3*KeySize), blobs[:3], [][]byte{nil, nil}); !errors.Is(err, ErrBatchMismatch) {
		t.Errorf("UnwrapKeys with two contexts for three blobs: %v", err)
	}
}

// TestNewDataKeys: n distinct keys of KeySize bytes, each a full slice of its own.
func TestNewDataKeys(t *testing.T) {
	keys := NewDataKeys(64)
	seen := map[string]bool{}
	for i, k := range keys {
		if len(k) != KeySize || cap(k) != KeySize || isAllZero(k) || seen[string(k)] {
			t.Fatalf("key %d: %d bytes (cap %d), or zero, or a repeat", i, len(k), cap(k))
		}
		seen[string(k)] = true
	}
	if len(NewDataKeys(0)) != 0 {
		t.Fatal("NewDataKeys(0) is not empty")
	}
}

// TestSameParent: blobs of one key, whatever their salt, nonce and ciphertext, have the same parent;
// blobs of another key, kind or length do not.
func TestSameParent(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	l3b := newServiceKey(t, KeyID{Tenant: "acme", Service: "paymentz", Version: 3})
	v4 := newServiceKey(t, KeyID{Tenant: "acme", Service: "payments", Version: 4})
	a, err := l3.WrapKeys(NewDataKeys(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := l3.WrapKeys(NewDataKeys(1), [][]byte{[]byte("ctx")})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := l3b.WrapKeys(NewDataKeys(1), nil)
	later, _ := v4.WrapKeys(NewDataKeys(1), nil)
	sealed, err := newTenantKey(t, l2ID).SealServiceKey(l3)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		prev, blob []byte
		want       bool
	}{
		{"same batch", a[0], a[1], true},
		{"another batch", a[0], b[0], true},
		{"another service", a[0], other[0], false},
		{"another version", a[0], later[0], false},
		{"another kind", a[0], sealed, false},
		{"truncated", a[0], a[1][:len(a[1])-1], false},
		{"empty", a[0], nil, false},
		{"both empty", nil, nil, false},
	} {
		if got := SameParent(tc.prev, tc.blob); got != tc.want {
			t.Errorf("%s: SameParent = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestIsAllZero: every length, with one non-zero byte at every position.
func TestIsAllZero(t *testing.T) {
	for n := range 41 {
		b := make([]byte, n)
		if !isAllZero(b) {
			t.Fatalf("%d zero bytes: not all zero", n)
		}
		for i := range b {
			b[i] = 0x80
			if isAllZero(b) {
				t.Fatalf("%d bytes with byte %d set: all zero", n, i)
			}
			b[i] = 0
		}
	}
}

// BenchmarkWrapKeys256 is BenchmarkWrapBatch256 for keys held as bytes, with one shared context.
func BenchmarkWrapKeys256(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	keys := NewDataKeys(256)
	ctxs := [][]byte{[]byte("bucket=invoices/2026")}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l3.WrapKeys(keys, ctxs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnwrapKeys256 is BenchmarkUnwrapBatch256 into one buffer.
func BenchmarkUnwrapKeys256(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	blobs, err := l3.WrapKeys(NewDataKeys(256), nil)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, 256*KeySize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l3.UnwrapKeys(dst, blobs, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWrapKeyUnwrapKey checks the unary byte forms against Wrap and Unwrap: each opens what the
// other made, the plaintext is only read, bad keys and contexts are refused, and a destroyed key
// answers ErrDestroyed (what the region looks a key up again on).
func TestWrapKeyUnwrapKey(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	dk := NewDataKey()
	key := dk.Bytes()
	orig := bytes.Clone(key)
	ctx := []byte("ctx")
	blob, err := l3.WrapKey(key, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, orig) {
		t.Fatal("WrapKey changed the plaintext")
	}
	if len(blob) != cap(blob) {
		t.Errorf("blob of %d bytes has capacity %d: the salt's spare bytes are visible to appends", len(blob), cap(blob))
	}
	if got, err := l3.Unwrap(blob, ctx); err != nil || !got.Equal(dk) {
		t.Fatalf("Unwrap of WrapKey's blob: %v", err)
	}
	other, err := l3.Wrap(dk, ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{blob, other} {
		got, err := l3.UnwrapKey(b, ctx)
		if err != nil || !bytes.Equal(got, orig) {
			t.Fatalf("UnwrapKey: %v", err)
		}
		if _, err := l3.UnwrapKey(b, []byte("other")); !errors.Is(err, ErrAuthentication) {
			t.Fatalf("UnwrapKey under another context: %v, want ErrAuthentication", err)
		}
	}
	if bytes.Equal(blob[:len(blob)-ciphertextSize], other[:len(other)-ciphertextSize]) {
		t.Fatal("two wraps drew the same salt and nonce")
	}
	for _, bad := range [][]byte{nil, key[:31], make([]byte, KeySize)} {
		if _, err := l3.WrapKey(bad, nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("WrapKey(%d bytes): %v, want ErrInvalidKey", len(bad), err)
		}
	}
	if _, err := l3.WrapKey(key, make([]byte, MaxContextSize+1)); !errors.Is(err, ErrContextTooLarge) {
		t.Errorf("WrapKey with a long context: %v", err)
	}
	l3.Destroy()
	if _, err := l3.WrapKey(key, ctx); !errors.Is(err, ErrDestroyed) {
		t.Errorf("WrapKey after Destroy: %v, want ErrDestroyed", err)
	}
	if _, err := l3.UnwrapKey(blob, ctx); !errors.Is(err, ErrDestroyed) {
		t.Errorf("UnwrapKey after Destroy: %v, want ErrDestroyed", err)
	}
}
