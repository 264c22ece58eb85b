package wrap

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
)

// DataKey is a data key (L4): 256 bits an application encrypts its data
// with. It is not comparable with == (use Equal) and never printed.
//
// Unlike parent keys, a DataKey's bytes live in an ordinary Go array,
// wiped by Destroy, not in memguard: a gateway makes and drops one per
// request, up to a million a second, and a LockedBuffer costs 80-90 µs and
// three pages (one mlocked) to create (BenchmarkNewServiceKey), 60 times
// the cost of the wrap itself (NewDataKey is 0.2 µs); and a data key's
// plaintext leaves the process anyway, in the response to the application
// that asked for it. See DESIGN.md.
//
// A DataKey belongs to one goroutine at a time: Destroy must not run
// concurrently with its other methods. Do not copy a DataKey value (the
// copy would not be wiped); pass *DataKey.
type DataKey struct {
	_    [0]func() // not comparable
	b    [KeySize]byte
	live bool
}

// NewDataKey returns a fresh random data key.
func NewDataKey() *DataKey {
	dk := &DataKey{live: true}
	if _, err := rand.Read(dk.b[:]); err != nil {
		panic("wrap: crypto/rand failed: " + err.Error()) // crypto/rand.Read never fails on Linux
	}
	return dk
}

// CheckDataKey reports whether b can be a data key: KeySize bytes, not all
// zero (ErrInvalidKey otherwise; the message never holds b's bytes).
func CheckDataKey(b []byte) error {
	if len(b) != KeySize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrInvalidKey, len(b), KeySize)
	}
	if isAllZero(b) {
		return fmt.Errorf("%w: all zero", ErrInvalidKey)
	}
	return nil
}

// DataKeyFromBytes returns the data key with the KeySize bytes of b,
// for a key the application generated itself (KMIP Register, say). It
// copies b and wipes b, whether or not it succeeds.
func DataKeyFromBytes(b []byte) (*DataKey, error) {
	defer clear(b)
	if err := CheckDataKey(b); err != nil {
		return nil, err
	}
	dk := &DataKey{live: true}
	copy(dk.b[:], b)
	return dk, nil
}

// Bytes returns a fresh copy of the key's bytes, or nil after Destroy: the
// plaintext a GenerateDataKey or Unwrap caller receives. The caller owns
// the copy and must wipe it (clear(b)) when done.
func (k *DataKey) Bytes() []byte {
	if k.IsZero() {
		return nil
	}
	return append([]byte(nil), k.b[:]...)
}

// Equal reports, in constant time, whether k and o are both live and hold
// the same bytes.
func (k *DataKey) Equal(o *DataKey) bool {
	if k.IsZero() || o.IsZero() {
		return false
	}
	return subtle.ConstantTimeCompare(k.b[:], o.b[:]) == 1
}

// IsZero reports whether k holds no key: nil, the zero value, or
// destroyed.
func (k *DataKey) IsZero() bool { return k == nil || !k.live }

// Destroy wipes the key. It is idempotent; Wrap then returns ErrDestroyed.
func (k *DataKey) Destroy() {
	if k == nil {
		return
	}
	clear(k.b[:])
	k.live = false
}

// String returns "wrap.DataKey(redacted)" (or "wrap.DataKey(destroyed)").
// The formatting methods have value receivers, so that a DataKey value
// inside a struct that gets printed or encoded is redacted too; they wipe
// their copy of the bytes on return.
func (k DataKey) String() string {
	defer clear(k.b[:])
	return redacted("DataKey", KeyID{}, !k.live)
}

// GoString is String, so that %#v shows no bytes either.
func (k DataKey) GoString() string {
	defer clear(k.b[:])
	return redacted("DataKey", KeyID{}, !k.live)
}

// Format prints the redacted form for every verb.
func (k DataKey) Format(f fmt.State, _ rune) {
	defer clear(k.b[:])
	_, _ = f.Write([]byte(redacted("DataKey", KeyID{}, !k.live)))
}

// MarshalText returns the redacted form.
func (k DataKey) MarshalText() ([]byte, error) {
	defer clear(k.b[:])
	return []byte(redacted("DataKey", KeyID{}, !k.live)), nil
}

// MarshalJSON returns the redacted form as a JSON string.
func (k DataKey) MarshalJSON() ([]byte, error) {
	defer clear(k.b[:])
	return jsonString(redacted("DataKey", KeyID{}, !k.live)), nil
}
