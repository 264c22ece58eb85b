package wrap

import (
	"bytes"
	"crypto/fips140"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
)

var (
	l2ID = KeyID{Tenant: "acme", Version: 2}
	l3ID = KeyID{Tenant: "acme", Service: "payments", Version: 3}
)

func newTenantKey(t testing.TB, id KeyID) *TenantKey {
	t.Helper()
	k, err := NewTenantKey(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

func newServiceKey(t testing.TB, id KeyID) *ServiceKey {
	t.Helper()
	k, err := NewServiceKey(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

// serviceKeyBytes makes a service key with chosen bytes (b is wiped).
func serviceKeyWith(t testing.TB, id KeyID, b []byte) *ServiceKey {
	t.Helper()
	k, err := ServiceKeyFromBytes(id, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Destroy)
	return k
}

// allKDFs are the suites a blob may have; kdfs those this process may write:
// all of them, except under GODEBUG=fips140=only, which writes the FIPS
// suite only (and still reads every suite).
var (
	allKDFs = []KDF{KDFHKDFSHA256, KDFCounterHMACSHA256, KDFHKDFSHA256RandomNonce}
	kdfs    = func() []KDF {
		if fips140.Enforced() {
			return []KDF{KDFHKDFSHA256RandomNonce}
		}
		return allKDFs
	}()
)

func TestWrapUnwrapRoundTrip(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	for _, kdf := range kdfs {
		t.Run(kdf.String(), func(t *testing.T) {
			for _, ctx := range [][]byte{nil, []byte("bucket=invoices"), bytes.Repeat([]byte{0xa5}, MaxContextSize)} {
				dk := NewDataKey()
				salt, _ := saltFrom(randReader{})
				blob, err := l3.wrap(dk, ctx, kdf, &salt)
				if err != nil {
					t.Fatal(err)
				}
				got, err := l3.Unwrap(blob, ctx)
				if err != nil {
					t.Fatalf("Unwrap: %v", err)
				}
				if !got.Equal(dk) {
					t.Fatal("unwrapped key differs")
				}
				h, err := ParseHeader(blob)
				if err != nil {
					t.Fatal(err)
				}
				if h.Kind != KindWrappedDataKey || h.KDF != kdf || h.Parent != l3ID || h.Subject != (KeyID{}) || h.Salt != salt {
					t.Fatalf("header %+v", h)
				}
			}
		})
	}
	// The public Wrap uses the default KDF.
	dk := NewDataKey()
	blob, err := l3.Wrap(dk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := ParseHeader(blob); h.KDF != WriteKDF() {
		t.Fatalf("Wrap used KDF %v, want %v", h.KDF, WriteKDF())
	}
	if want := map[bool]KDF{false: defaultKDF, true: KDFHKDFSHA256RandomNonce}[fips140.Enabled()]; WriteKDF() != want {
		t.Fatalf("WriteKDF() = %v with fips140.Enabled() = %v, want %v", WriteKDF(), fips140.Enabled(), want)
	}
	if got, err := l3.Unwrap(blob, []byte{}); err != nil || !got.Equal(dk) {
		t.Fatalf("nil and empty contexts differ: %v", err)
	}
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	dk := NewDataKey()
	n := copy(p, dk.b[:])
	dk.Destroy()
	return n, nil
}

func TestSealOpenServiceKey(t *testing.T) {
	l2 := newTenantKey(t, l2ID)
	l3 := newServiceKey(t, l3ID)
	for _, kdf := range kdfs {
		salt, _ := saltFrom(randReader{})
		blob, err := l2.sealServiceKey(l3, kdf, &salt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := l2.OpenServiceKey(l3ID, blob)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(l3) {
			t.Fatal("opened service key differs")
		}
		got.Destroy()
		h, err := ParseHeader(blob)
		if err != nil || h.Parent != l2ID || h.Subject != l3ID || h.Kind != KindSealedServiceKey {
			t.Fatalf("header %+v, %v", h, err)
		}
	}
	other := newServiceKey(t, KeyID{Tenant: "globex", Service: "payments", Version: 1})
	if _, err := l2.SealServiceKey(other); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("sealing another tenant's key: %v", err)
	}
}

// TestBlobBoundToIdentity checks that a blob opens only under its own
// tenant, service, version, kind and context, even when the other key
// holds the very same bytes.
func TestBlobBoundToIdentity(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, KeySize)
	mk := func(id KeyID) *ServiceKey { return serviceKeyWith(t, id, bytes.Clone(raw)) }
	l3 := mk(l3ID)
	dk := NewDataKey()
	ctx := []byte("ctx")
	blob, err := l3.Wrap(dk, ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []KeyID{
		{Tenant: "acme2", Service: "payments", Version: 3},
		{Tenant: "acme", Service: "payments2", Version: 3},
		{Tenant: "acme", Service: "payments", Version: 4},
	} {
		if _, err := mk(id).Unwrap(blob, ctx); !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("blob opened under %v: %v", id, err)
		}
	}
	for _, c := range [][]byte{nil, []byte("ctx2"), []byte("ct"), []byte("CTX")} {
		if _, err := l3.Unwrap(blob, c); !errors.Is(err, ErrAuthentication) {
			t.Errorf("blob opened with context %q: %v", c, err)
		}
	}
	// A forged header naming another key with the same bytes still
	// fails: the header is authenticated.
	other := mk(KeyID{Tenant: "acme", Service: "paymentz", Version: 3})
	forged := bytes.Clone(blob)
	copy(forged[bytes.Index(forged, []byte("payments")):], "paymentz")
	if _, err := other.Unwrap(forged, ctx); !errors.Is(err, ErrAuthentication) {
		t.Errorf("forged header opened: %v", err)
	}
	// A sealed service key is not a wrapped data key, and vice versa.
	l2 := newTenantKey(t, l2ID)
	sealed, err := l2.SealServiceKey(l3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l3.Unwrap(sealed, nil); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("sealed L3 unwrapped as L4: %v", err)
	}
	if _, err := l2.OpenServiceKey(l3ID, blob); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("wrapped L4 opened as L3: %v", err)
	}
	if _, err := l2.OpenServiceKey(KeyID{Tenant: "acme", Service: "payments", Version: 4}, sealed); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("sealed L3 opened as another version: %v", err)
	}
	l2b := newTenantKey(t, KeyID{Tenant: "acme", Version: 3})
	if _, err := l2b.OpenServiceKey(l3ID, sealed); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("sealed L3 opened under another L2 version: %v", err)
	}
	l2c, err := TenantKeyFromBytes(l2ID, bytes.Repeat([]byte{9}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	defer l2c.Destroy()
	if _, err := l2c.OpenServiceKey(l3ID, sealed); !errors.Is(err, ErrAuthentication) {
		t.Errorf("sealed L3 opened under another L2 of the same name: %v", err)
	}
}

// TestTamperAndTruncate flips every bit and cuts at every length of both
// kinds of blob.
func TestTamperAndTruncate(t *testing.T) {
	l2 := newTenantKey(t, l2ID)
	l3 := newServiceKey(t, l3ID)
	ctx := []byte("ctx")
	wrapped, err := l3.Wrap(NewDataKey(), ctx)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := l2.SealServiceKey(l3)
	if err != nil {
		t.Fatal(err)
	}
	opens := map[string]struct {
		blob []byte
		open func([]byte) error
	}{
		"wrapped": {wrapped, func(b []byte) error { _, err := l3.Unwrap(b, ctx); return err }},
		"sealed": {sealed, func(b []byte) error {
			k, err := l2.OpenServiceKey(l3ID, b)
			k.Destroy()
			return err
		}},
	}
	typed := []error{ErrMalformed, ErrUnsupportedVersion, ErrKeyMismatch, ErrAuthentication}
	isTyped := func(err error) bool {
		for _, e := range typed {
			if errors.Is(err, e) {
				return true
			}
		}
		return false
	}
	for name, o := range opens {
		if err := o.open(o.blob); err != nil {
			t.Fatalf("%s: untampered blob: %v", name, err)
		}
		for i := 0; i < len(o.blob)*8; i++ {
			b := bytes.Clone(o.blob)
			b[i/8] ^= 1 << (i % 8)
			if err := o.open(b); err == nil || !isTyped(err) {
				t.Fatalf("%s: bit %d flipped: %v", name, i, err)
			}
		}
		for n := 0; n < len(o.blob); n++ {
			if err := o.open(o.blob[:n]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: truncated to %d: %v", name, n, err)
			}
		}
		if err := o.open(append(bytes.Clone(o.blob), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: trailing byte: %v", name, err)
		}
	}
	if _, err := l3.Unwrap(make([]byte, MaxBlobSize+1), nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := l3.Unwrap(wrapped, make([]byte, MaxContextSize+1)); !errors.Is(err, ErrContextTooLarge) {
		t.Fatalf("oversized context: %v", err)
	}
	if _, err := l3.Wrap(NewDataKey(), make([]byte, MaxContextSize+1)); !errors.Is(err, ErrContextTooLarge) {
		t.Fatalf("oversized context: %v", err)
	}
}

func TestBatch(t *testing.T) {
	l3 := newServiceKey(t, l3ID)
	const n = ItemsPerDerivedKey + 3 // crosses one derivation boundary
	dks := make([]*DataKey, n)
	ctxs := make([][]byte, n)
	for i := range dks {
		dks[i] = NewDataKey()
		ctxs[i] = fmt.Appendf(nil, "item-%d", i)
	}
	for _, kdf := range kdfs {
		blobs, err := l3.wrapBatch(dks, ctxs, kdf, randReader{})
		if err != nil {
			t.Fatal(err)
		}
		salts := map[[SaltSize]byte]int{}
		nonces := map[[NonceSize]byte]int{}
		for i, b := range blobs {
			h, err := ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			salts[h.Salt]++
			if !kdf.randomNonce() && h.Nonce != nonceFor(uint64(i%ItemsPerDerivedKey)) {
				t.Fatalf("item %d nonce %x", i, h.Nonce)
			}
			if kdf.randomNonce() {
				nonces[h.Nonce]++
			}
		}
		if len(salts) != 2 {
			t.Fatalf("%d salts for %d items, want 2", len(salts), n)
		}
		if kdf.randomNonce() && len(nonces) != n {
			t.Fatalf("%d distinct random nonces for %d items", len(nonces), n)
		}
		// Each blob opens alone.
		for _, i := range []int{0, 1, n - 1} {
			got, err := l3.Unwrap(blobs[i], ctxs[i])
			if err != nil || !got.Equal(dks[i]) {
				t.Fatalf("item %d alone: %v", i, err)
			}
		}
		got, err := l3.UnwrapBatch(blobs, ctxs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if !got[i].Equal(dks[i]) {
				t.Fatalf("item %d differs", i)
			}
		}
		// Per-item failures.
		blobs[1] = append(bytes.Clone(blobs[1][:len(blobs[1])-1]), blobs[1][len(blobs[1])-1]^1)
		ctxs2 := append([][]byte(nil), ctxs...)
		ctxs2[2] = []byte("wrong")
		blobs[3] = blobs[3][:10]
		got, err = l3.UnwrapBatch(blobs, ctxs2)
		var be *BatchError
		if !errors.As(err, &be) || len(be.Errs) != n {
			t.Fatalf("UnwrapBatch err = %v", err)
		}
		if !errors.Is(be.Errs[1], ErrAuthentication) || !errors.Is(be.Errs[2], ErrAuthentication) ||
			!errors.Is(be.Errs[3], ErrMalformed) || be.Errs[0] != nil || got[1] != nil || !got[0].Equal(dks[0]) {
			t.Fatalf("per-item errors %v", be.Errs[:4])
		}
		if !errors.Is(err, ErrAuthentication) {
			t.Fatal("BatchError does not unwrap to its items")
		}
	}
	if _, err := l3.WrapBatch(dks, ctxs[:1]); !errors.Is(err, ErrBatchMismatch) {
		t.Fatal(err)
	}
	if _, err := l3.UnwrapBatch([][]byte{nil}, ctxs); !errors.Is(err, ErrBatchMismatch) {
		t.Fatal(err)
	}
	dead := NewDataKey()
	dead.Destroy()
	if _, err := l3.WrapBatch([]*DataKey{NewDataKey(), dead}, nil); !errors.Is(err, ErrDestroyed) {
		t.Fatal(err)
	}
	if out, err := l3.WrapBatch(nil, nil); err != nil || len(out) != 0 {
		t.Fatal(out, err)
	}
}

func TestRedacted(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, KeySize)
	l2, _ := TenantKeyFromBytes(l2ID, bytes.Clone(raw))
	defer l2.Destroy()
	l3 := serviceKeyWith(t, l3ID, bytes.Clone(raw))
	dk, _ := DataKeyFromBytes(bytes.Clone(raw))
	type holder struct {
		L2 *TenantKey
		L3 ServiceKey
		D  DataKey
	}
	h := holder{l2, *l3, *dk}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, l2), fmt.Sprintf(verb, l3), fmt.Sprintf(verb, dk),
			fmt.Sprintf(verb, *dk), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
	}
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	for _, s := range outs {
		for _, leak := range []string{"ab ab", "abab", "ABAB", "171 171", "\\xab"} {
			if bytes.Contains([]byte(s), []byte(leak)) {
				t.Fatalf("key bytes leak: %s", s)
			}
		}
	}
	if got, want := l3.String(), "wrap.ServiceKey(acme/payments@v3, redacted)"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got, want := string(j), `{"L2":"wrap.TenantKey(acme@v2, redacted)","L3":"wrap.ServiceKey(acme/payments@v3, redacted)","D":"wrap.DataKey(redacted)"}`; got != want {
		t.Fatalf("JSON = %s, want %s", got, want)
	}
	l3.Destroy()
	if got, want := fmt.Sprint(l3), "wrap.ServiceKey(acme/payments@v3, destroyed)"; got != want {
		t.Fatalf("after Destroy: %q, want %q", got, want)
	}
}

func TestDestroy(t *testing.T) {
	l2 := newTenantKey(t, l2ID)
	l3 := newServiceKey(t, l3ID)
	dk := NewDataKey()
	blob, _ := l3.Wrap(dk, nil)
	sealed, _ := l2.SealServiceKey(l3)
	if b := l2.Bytes(); len(b) != KeySize || isAllZero(b) {
		t.Fatal("Bytes")
	}
	if b := dk.Bytes(); len(b) != KeySize || !bytes.Equal(b, dk.b[:]) {
		t.Fatal("Bytes")
	}
	for i := 0; i < 2; i++ { // idempotent
		l2.Destroy()
		l3.Destroy()
		dk.Destroy()
	}
	if !l2.IsZero() || !l3.IsZero() || !dk.IsZero() || l2.Bytes() != nil || dk.Bytes() != nil {
		t.Fatal("destroyed keys are not zero")
	}
	if dk.b != [KeySize]byte{} {
		t.Fatal("data key not wiped")
	}
	if l3.ID() != l3ID || l3.Equal(l3) {
		t.Fatal("ID or Equal after Destroy")
	}
	if _, err := l3.Wrap(NewDataKey(), nil); !errors.Is(err, ErrDestroyed) {
		t.Fatal(err)
	}
	if _, err := l3.Unwrap(blob, nil); !errors.Is(err, ErrDestroyed) {
		t.Fatal(err)
	}
	if _, err := l2.OpenServiceKey(l3ID, sealed); !errors.Is(err, ErrDestroyed) {
		t.Fatal(err)
	}
	if _, err := newServiceKey(t, l3ID).Wrap(dk, nil); !errors.Is(err, ErrDestroyed) {
		t.Fatal(err)
	}
	var zero ServiceKey
	var nilKey *ServiceKey
	if _, err := zero.Unwrap(blob, nil); !errors.Is(err, ErrDestroyed) {
		t.Fatal(err)
	}
	if _, err := nilKey.Wrap(NewDataKey(), nil); !errors.Is(err, ErrDestroyed) {
		t.Fatal(err)
	}
	nilKey.Destroy()
	if !zero.IsZero() || !nilKey.IsZero() {
		t.Fatal("zero keys")
	}
}

func TestConstructors(t *testing.T) {
	for _, b := range [][]byte{nil, make([]byte, 31), make([]byte, 33), make([]byte, 32)} {
		if _, err := DataKeyFromBytes(b); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("DataKeyFromBytes(%d bytes): %v", len(b), err)
		}
		if _, err := ServiceKeyFromBytes(l3ID, b); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ServiceKeyFromBytes(%d bytes): %v", len(b), err)
		}
	}
	b := bytes.Repeat([]byte{1}, KeySize)
	if _, err := TenantKeyFromBytes(l3ID, b); !errors.Is(err, ErrInvalidKeyID) || !isAllZero(b) {
		t.Errorf("TenantKeyFromBytes with a service id: %v (or b not wiped)", err)
	}
	if _, err := NewServiceKey(l2ID); !errors.Is(err, ErrInvalidKeyID) {
		t.Error(err)
	}
	if _, err := NewTenantKey(KeyID{Tenant: "acme"}); !errors.Is(err, ErrInvalidKeyID) {
		t.Error(err)
	}
	b = bytes.Repeat([]byte{1}, KeySize)
	k1 := serviceKeyWith(t, l3ID, b)
	if !isAllZero(b) {
		t.Error("FromBytes did not wipe its input")
	}
	k2 := serviceKeyWith(t, l3ID, bytes.Repeat([]byte{1}, KeySize))
	k3 := serviceKeyWith(t, l3ID, bytes.Repeat([]byte{2}, KeySize))
	k4 := serviceKeyWith(t, KeyID{Tenant: "acme", Service: "payments", Version: 4}, bytes.Repeat([]byte{1}, KeySize))
	if !k1.Equal(k2) || k1.Equal(k3) || k1.Equal(k4) || k1.Equal(nil) {
		t.Error("Equal")
	}
}

// TestConcurrentDestroy runs wraps against a Destroy; under -race this
// checks that a key is never unmapped under a derivation.
func TestConcurrentDestroy(t *testing.T) {
	l3, err := NewServiceKey(l3ID)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; ; i++ {
				dk := NewDataKey()
				blob, err := l3.Wrap(dk, nil)
				if errors.Is(err, ErrDestroyed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := l3.Unwrap(blob, nil); err != nil && !errors.Is(err, ErrDestroyed) {
					t.Error(err)
					return
				}
			}
		}()
	}
	close(start)
	dk := NewDataKey()
	// Destroy once the workers are surely running: wait until a wrap
	// from this goroutine has succeeded, then a few more.
	for i := 0; i < 50; i++ {
		if _, err := l3.Wrap(dk, nil); err != nil {
			t.Fatal(err)
		}
	}
	l3.Destroy()
	wg.Wait()
}

// TestMaxBlobSize checks that the longest names give exactly the
// documented maximum sizes.
func TestMaxBlobSize(t *testing.T) {
	if MaxBlobSize != 235 {
		t.Fatalf("MaxBlobSize = %d, docs/format.md says 235", MaxBlobSize)
	}
	long := func(c byte) string { return string(bytes.Repeat([]byte{c}, MaxNameLen)) }
	l2 := newTenantKey(t, KeyID{Tenant: long('t'), Version: 1 << 31})
	l3 := newServiceKey(t, KeyID{Tenant: long('t'), Service: long('s'), Version: 1<<32 - 1})
	sealed, err := l2.SealServiceKey(l3)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := l3.Wrap(NewDataKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != MaxBlobSize || len(wrapped) != 230 {
		t.Fatalf("sealed %d bytes, wrapped %d bytes", len(sealed), len(wrapped))
	}
	if k, err := l2.OpenServiceKey(l3.ID(), sealed); err != nil || !k.Equal(l3) {
		t.Fatalf("OpenServiceKey: %v", err)
	} else {
		k.Destroy()
	}
}
