package wrap

import (
	"crypto/fips140"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"sync"
)

// lockedKey is the core shared by TenantKey and ServiceKey: a parent key
// that derives one-time keys. Its bytes and its prepared HMAC states live
// in one memguard LockedBuffer (mlocked, between guard pages, canary
// checked, read-only after creation) for as long as the key is alive.
//
// Why a LockedBuffer and not an Enclave: opening an Enclave (and
// destroying the buffer it opens into) costs 160-190 µs here under load
// (BenchmarkEnclaveOpen; 65-85 µs on a quiet machine), using
// a held LockedBuffer costs 8-11 ns (BenchmarkLockedBufferHold: the read
// lock), and a whole wrap costs about 1.4 µs. A parent key's at-rest form
// is its sealed blob (an L3 under its L2, in the FSM) or the anchor (an L2
// under L1), so no Enclave is needed at all. Each LockedBuffer costs 3
// pages (one mlocked) and several syscalls to create (80-90 µs,
// BenchmarkNewServiceKey), so the keyring must bound how many keys it
// holds open.
//
// mu guards buf: readers (derivations) hold it shared for the whole time
// they read the locked memory, Destroy holds it exclusively, so a key can
// never be unmapped under a concurrent wrap.
type lockedKey struct {
	id KeyID

	mu  sync.RWMutex
	buf *LockedBuffer // nil once destroyed
}

// newLockedKey copies key into locked memory and wipes key, also when the
// budget has no room (ErrLockedMemory).
func newLockedKey(id KeyID, key []byte) (*lockedKey, error) {
	defer clear(key)
	return newLockedKeyFunc(id, func(dst []byte) error {
		copy(dst, key)
		return nil
	})
}

// newLockedKeyFunc makes a locked buffer, lets fill write the KeySize key
// bytes straight into it (OpenServiceKey decrypts into it, so an opened L3
// never touches unlocked memory), and prepares the HMAC states. It returns
// ErrLockedMemory when the locked-memory budget has no room (locked.go).
func newLockedKeyFunc(id KeyID, fill func(dst []byte) error) (*lockedKey, error) {
	buf, err := newLockedBuffer(lockedSize)
	if err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if err := fill(b[offKey:offInner]); err != nil {
		buf.Destroy()
		return nil, err
	}
	prepareHMAC(b[offInner:lockedSize], b[offKey:offInner])
	buf.Freeze()
	return &lockedKey{id: id, buf: buf}, nil
}

func randomLockedKey(id KeyID) (*lockedKey, error) {
	var k [KeySize]byte
	if _, err := rand.Read(k[:]); err != nil {
		panic("wrap: crypto/rand failed: " + err.Error()) // crypto/rand.Read never fails on Linux
	}
	return newLockedKey(id, k[:]) // wipes k
}

// lockedKeyFromBytes checks and copies b in, and wipes b whatever happens.
func lockedKeyFromBytes(id KeyID, b []byte) (*lockedKey, error) {
	defer clear(b)
	if len(b) != KeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidKey, len(b), KeySize)
	}
	if isAllZero(b) {
		return nil, fmt.Errorf("%w: all zero", ErrInvalidKey)
	}
	return newLockedKey(id, b)
}

// isAllZero reports whether b is all zero bytes, eight at a time, with no
// early exit (its time depends on len(b) only).
func isAllZero(b []byte) bool {
	var acc uint64
	for ; len(b) >= 8; b = b[8:] {
		acc |= binary.LittleEndian.Uint64(b)
	}
	for _, c := range b {
		acc |= uint64(c)
	}
	return acc == 0
}

// acquire returns the locked bytes with the read lock held, or
// ErrDestroyed. The caller must call release.
func (k *lockedKey) acquire() ([]byte, error) {
	if k == nil {
		return nil, ErrDestroyed
	}
	k.mu.RLock()
	if k.buf == nil {
		k.mu.RUnlock()
		return nil, ErrDestroyed
	}
	return k.buf.Bytes(), nil
}

func (k *lockedKey) release() { k.mu.RUnlock() }

// derive computes the one-time key for label and salt into out.
func (k *lockedKey) derive(out *[KeySize]byte, kdf KDF, label string, salt *[SaltSize]byte) error {
	b, err := k.acquire()
	if err != nil {
		return err
	}
	defer k.release()
	switch kdf {
	case KDFCounterHMACSHA256:
		if fips140.Enabled() {
			deriveCounterHMAC(out, b[offKey:offInner], label, salt)
			break
		}
		deriveCounter(out, b[offInner:offOuter], b[offOuter:lockedSize], label, salt)
	case KDFHKDFSHA256, KDFHKDFSHA256RandomNonce:
		deriveHKDF(out, b[offKey:offInner], label, salt)
	default:
		return fmt.Errorf("%w: KDF id %d", ErrUnsupportedVersion, uint8(kdf))
	}
	return nil
}

func (k *lockedKey) destroy() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.buf != nil {
		k.buf.Destroy() // wipes, then unmaps
		k.buf = nil
	}
}

func (k *lockedKey) isZero() bool {
	if k == nil {
		return true
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.buf == nil
}

func (k *lockedKey) equal(o *lockedKey) bool {
	if k == nil || o == nil {
		return false
	}
	if k == o {
		return !k.isZero()
	}
	// Copy one key out rather than hold both read locks at once: two
	// opposite Equal calls plus two pending Destroys would deadlock.
	var a [KeySize]byte
	defer clear(a[:])
	kb, err := k.acquire()
	if err != nil {
		return false
	}
	copy(a[:], kb[:KeySize])
	k.release()
	b, err := o.acquire()
	if err != nil {
		return false
	}
	defer o.release()
	return k.id == o.id && subtle.ConstantTimeCompare(a[:], b[:KeySize]) == 1
}

func (k *lockedKey) bytes() []byte {
	b, err := k.acquire()
	if err != nil {
		return nil
	}
	defer k.release()
	return append([]byte(nil), b[:KeySize]...)
}

func (k *lockedKey) identity() KeyID {
	if k == nil {
		return KeyID{}
	}
	return k.id
}

// redacted is the printed form of every key: type, identity and state,
// never bytes.
func redacted(typ string, id KeyID, zero bool) string {
	state := "redacted"
	if zero {
		state = "destroyed"
	}
	if id == (KeyID{}) {
		return "wrap." + typ + "(" + state + ")"
	}
	return "wrap." + typ + "(" + id.String() + ", " + state + ")"
}

// TenantKey is a tenant key (L2): 256 bits that seal the tenant's service
// keys. Its bytes live in locked memory and are never printed; it is not
// comparable with == (use Equal). A TenantKey is safe for concurrent use,
// including Destroy. Every TenantKey must be Destroyed: memguard has no
// finalizers.
type TenantKey struct {
	_ [0]func() // not comparable
	k *lockedKey
}

// NewTenantKey returns a fresh random tenant key named id (which must have
// no Service).
func NewTenantKey(id KeyID) (*TenantKey, error) {
	if err := id.validateTenant(); err != nil {
		return nil, err
	}
	k, err := randomLockedKey(id)
	if err != nil {
		return nil, err
	}
	return &TenantKey{k: k}, nil
}

// TenantKeyFromBytes returns the tenant key named id with the KeySize bytes
// of b, for an L2 just unsealed by the anchor. It copies b into locked
// memory and wipes b, whether or not it succeeds.
func TenantKeyFromBytes(id KeyID, b []byte) (*TenantKey, error) {
	if err := id.validateTenant(); err != nil {
		clear(b)
		return nil, err
	}
	k, err := lockedKeyFromBytes(id, b)
	if err != nil {
		return nil, err
	}
	return &TenantKey{k: k}, nil
}

// ID returns the key's identity (also after Destroy).
func (k *TenantKey) ID() KeyID { return k.core().identity() }

// Bytes returns a fresh copy of the key's bytes, or nil after Destroy. It
// exists for the one place that must hand an L2 onward: sealing it under
// the customer's L1 through the anchor. The caller owns the copy and must
// wipe it (clear(b)) as soon as it has been handed on.
func (k *TenantKey) Bytes() []byte { return k.core().bytes() }

// Equal reports, in constant time in the key bytes, whether k and o are
// both live and hold the same identity and bytes.
func (k *TenantKey) Equal(o *TenantKey) bool { return k.core().equal(o.core()) }

// IsZero reports whether k holds no key: nil, the zero value, or
// destroyed.
func (k *TenantKey) IsZero() bool { return k.core().isZero() }

// Destroy wipes the key and releases its locked memory. It is idempotent;
// every other method then returns ErrDestroyed (or false, nil).
func (k *TenantKey) Destroy() { k.core().destroy() }

func (k *TenantKey) core() *lockedKey {
	if k == nil {
		return nil
	}
	return k.k
}

// String returns a redacted form such as "wrap.TenantKey(acme@v2,
// redacted)".
func (k TenantKey) String() string { return redacted("TenantKey", k.k.identity(), k.k.isZero()) }

// GoString is String, so that %#v shows no bytes either.
func (k TenantKey) GoString() string { return k.String() }

// Format prints the redacted form for every verb, so that %x or %v
// cannot reach the bytes.
func (k TenantKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// MarshalText returns the redacted form, so that a key that strays into a
// text or JSON encoder prints as its name.
func (k TenantKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// MarshalJSON returns the redacted form as a JSON string.
func (k TenantKey) MarshalJSON() ([]byte, error) { return jsonString(k.String()), nil }

// ServiceKey is a service key (L3): 256 bits that wrap the service's data
// keys. Its bytes live in locked memory and are never printed or
// exported; it is not comparable with == (use Equal). A ServiceKey is safe
// for concurrent use, including Destroy. Every ServiceKey must be
// Destroyed: memguard has no finalizers.
type ServiceKey struct {
	_ [0]func() // not comparable
	k *lockedKey
}

// NewServiceKey returns a fresh random service key named id (which must
// have a Service).
func NewServiceKey(id KeyID) (*ServiceKey, error) {
	if err := id.validateService(); err != nil {
		return nil, err
	}
	k, err := randomLockedKey(id)
	if err != nil {
		return nil, err
	}
	return &ServiceKey{k: k}, nil
}

// ServiceKeyFromBytes returns the service key named id with the KeySize
// bytes of b. It copies b into locked memory and wipes b, whether or not it
// succeeds. Production code gets service keys from OpenServiceKey; this is
// for tests and imports.
func ServiceKeyFromBytes(id KeyID, b []byte) (*ServiceKey, error) {
	if err := id.validateService(); err != nil {
		clear(b)
		return nil, err
	}
	k, err := lockedKeyFromBytes(id, b)
	if err != nil {
		return nil, err
	}
	return &ServiceKey{k: k}, nil
}

// ID returns the key's identity (also after Destroy).
func (k *ServiceKey) ID() KeyID { return k.core().identity() }

// Equal reports, in constant time in the key bytes, whether k and o are
// both live and hold the same identity and bytes.
func (k *ServiceKey) Equal(o *ServiceKey) bool { return k.core().equal(o.core()) }

// IsZero reports whether k holds no key: nil, the zero value, or
// destroyed.
func (k *ServiceKey) IsZero() bool { return k.core().isZero() }

// Destroy wipes the key and releases its locked memory. It is idempotent;
// every other method then returns ErrDestroyed (or false, nil). Wraps
// running concurrently finish first.
func (k *ServiceKey) Destroy() { k.core().destroy() }

func (k *ServiceKey) core() *lockedKey {
	if k == nil {
		return nil
	}
	return k.k
}

// String returns a redacted form such as
// "wrap.ServiceKey(acme/payments@v3, redacted)".
func (k ServiceKey) String() string { return redacted("ServiceKey", k.k.identity(), k.k.isZero()) }

// GoString is String, so that %#v shows no bytes either.
func (k ServiceKey) GoString() string { return k.String() }

// Format prints the redacted form for every verb.
func (k ServiceKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// MarshalText returns the redacted form.
func (k ServiceKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// MarshalJSON returns the redacted form as a JSON string.
func (k ServiceKey) MarshalJSON() ([]byte, error) { return jsonString(k.String()), nil }

// jsonString quotes s, which is a redacted form: ASCII letters, digits,
// and [./@_-(), ], none of which JSON escapes.
func jsonString(s string) []byte {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
