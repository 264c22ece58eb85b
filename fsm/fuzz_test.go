package fsm

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecode: Decode never panics; what it accepts re-encodes to an entry
// that decodes the same, and applying it never panics.
func FuzzDecode(f *testing.F) {
	for _, b := range genLog(f, 7, 60) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		b2, err := Encode(e)
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v", err)
		}
		e2, err := Decode(b2)
		if err != nil || !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip: %+v / %+v, %v", e, e2, err)
		}
		h := fixture(t)
		before := h.s.Hash()
		if _, err := h.s.Apply(h.index+1, e); err != nil && h.s.Hash() != before {
			t.Fatal("refused entry changed the state")
		}
	})
}

// FuzzRestore: Restore never panics, and what it accepts is a state that
// snapshots and restores to the same hash.
func FuzzRestore(f *testing.F) {
	f.Add(snapshotBytes(f, fixture(f).s))
	f.Add([]byte(`{"format":"krypton-fsm-snapshot","v":1,"index":3}` + "\n" + `{"end":{"records":0}}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewState(Options{})
		if err := s.Restore(bytes.NewReader(b)); err != nil {
			return
		}
		s2 := NewState(Options{})
		if err := s2.Restore(bytes.NewReader(snapshotBytes(t, s))); err != nil {
			t.Fatalf("re-restore: %v", err)
		}
		if s.Hash() != s2.Hash() {
			t.Fatal("hash changed across snapshot")
		}
	})
}

// FuzzDecodeResponse: DecodeResponse never panics, and what it accepts
// encodes again.
func FuzzDecodeResponse(f *testing.F) {
	b, _ := EncodeResponse(Result{Index: 1, EventErr: ErrRevoked})
	f.Add(b)
	b, _ = EncodeResponse(refuse(ErrLocked, "a", "b", 1))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeResponse(b)
		if err != nil {
			return
		}
		if _, err := EncodeResponse(v); err != nil {
			t.Fatalf("decoded response does not encode: %v", err)
		}
	})
}
