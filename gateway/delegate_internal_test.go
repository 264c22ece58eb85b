package gateway

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestDelegateAnswerChecked: the gateway installs a region's DelegateWrap answer only if it is for
// the key asked for, within the blob format's limits, and well formed; anything else is refused
// (and the request takes the region path), so a wrong answer never seals a data key.
func TestDelegateAnswerChecked(t *testing.T) {
	var d delegates
	asked := wrap.KeyID{Tenant: "acme", Service: "payments"}
	good := func() *kv1.DelegateWrapResponse {
		return &kv1.DelegateWrapResponse{
			Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 3}, Kdf: uint32(wrap.WriteKDF()),
			Salt: bytes.Repeat([]byte{1}, wrap.SaltSize), DerivedKey: bytes.Repeat([]byte{2}, wrap.KeySize),
			MaxItems: wrap.ItemsPerDerivedKey, Ttl: durationpb.New(30 * time.Second),
		}
	}
	wd, err := d.check(asked, good())
	if err != nil {
		t.Fatal(err)
	}
	wd.Destroy()
	for name, spoil := range map[string]func(r *kv1.DelegateWrapResponse){
		"another service":   func(r *kv1.DelegateWrapResponse) { r.Key.Service = "ledger" },
		"another tenant":    func(r *kv1.DelegateWrapResponse) { r.Key.Tenant = "other" },
		"no version":        func(r *kv1.DelegateWrapResponse) { r.Key.Version = 0 },
		"no items":          func(r *kv1.DelegateWrapResponse) { r.MaxItems = 0 },
		"too many items":    func(r *kv1.DelegateWrapResponse) { r.MaxItems = wrap.ItemsPerDerivedKey + 1 },
		"no ttl":            func(r *kv1.DelegateWrapResponse) { r.Ttl = nil },
		"a ttl over a hour": func(r *kv1.DelegateWrapResponse) { r.Ttl = durationpb.New(2 * time.Hour) },
		"an unknown suite":  func(r *kv1.DelegateWrapResponse) { r.Kdf = 77 },
		"a short salt":      func(r *kv1.DelegateWrapResponse) { r.Salt = r.Salt[:4] },
		"a short key":       func(r *kv1.DelegateWrapResponse) { r.DerivedKey = r.DerivedKey[:16] },
		"a zero key":        func(r *kv1.DelegateWrapResponse) { r.DerivedKey = make([]byte, wrap.KeySize) },
	} {
		r := good()
		spoil(r)
		if wd, err := d.check(asked, r); err == nil {
			wd.Destroy()
			t.Errorf("%s: installed", name)
		}
	}
	// A version asked for is the version that must come back.
	if _, err := d.check(wrap.KeyID{Tenant: "acme", Service: "payments", Version: 2}, good()); err == nil {
		t.Error("a key of v3 installed for v2")
	}
}

// TestDelegateHonoursMaxItems: a delegated key seals no more data keys than the region's max_items
// says, even where the blob format would allow more.
func TestDelegateHonoursMaxItems(t *testing.T) {
	var d delegates
	resp := &kv1.DelegateWrapResponse{
		Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 3}, Kdf: uint32(wrap.WriteKDF()),
		Salt: bytes.Repeat([]byte{1}, wrap.SaltSize), DerivedKey: bytes.Repeat([]byte{2}, wrap.KeySize),
		MaxItems: 2, Ttl: durationpb.New(30 * time.Second),
	}
	wd, err := d.check(wrap.KeyID{Tenant: "acme", Service: "payments"}, resp)
	if err != nil {
		t.Fatal(err)
	}
	defer wd.Destroy()
	if n := wd.Remaining(); n != 2 {
		t.Fatalf("%d remaining, want 2", n)
	}
	pt := bytes.Repeat([]byte{7}, wrap.KeySize)
	for i := range 2 {
		if _, err := wd.Wrap(pt, nil); err != nil {
			t.Fatalf("wrap %d: %v", i, err)
		}
	}
	if _, err := wd.Wrap(pt, nil); !errors.Is(err, wrap.ErrDelegateSpent) {
		t.Fatalf("a third wrap under a key for 2: %v", err)
	}
}

// TestDelegatedMapMakesRoom: key references the region refused (a caller naming versions that do
// not exist, say) fill the map only until a key the gateway can use needs its place: an entry that
// holds no delegated key and has no fetch in flight makes room; one in use does not.
func TestDelegatedMapMakesRoom(t *testing.T) {
	d := &delegates{held: map[wrap.KeyID]*delegated{}}
	for v := range maxDelegated {
		d.held[wrap.KeyID{Tenant: "acme", Service: "payments", Version: uint32(1000 + v)}] = &delegated{off: 1 << 62}
	}
	if !d.roomLocked() {
		t.Fatal("a map full of refused key references makes no room")
	}
	if len(d.held) != maxDelegated-1 {
		t.Fatalf("%d entries", len(d.held))
	}
	busy := &delegates{held: map[wrap.KeyID]*delegated{}}
	for v := range maxDelegated {
		busy.held[wrap.KeyID{Tenant: "acme", Service: "payments", Version: uint32(1 + v)}] = &delegated{fetching: true}
	}
	if busy.roomLocked() || len(busy.held) != maxDelegated {
		t.Fatal("an entry with a fetch in flight was dropped")
	}
}

// TestDelegateSaltRepeatRefused: an answer whose salt an earlier one had (a region node's broken
// random source, an answer replayed) is refused: sealing under it would repeat the first key's
// nonces, under the same key (AES-GCM nonce reuse).
func TestDelegateSaltRepeatRefused(t *testing.T) {
	var d delegates
	resp := func(salt byte) *kv1.DelegateWrapResponse {
		return &kv1.DelegateWrapResponse{
			Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 3}, Kdf: uint32(wrap.WriteKDF()),
			Salt: bytes.Repeat([]byte{salt}, wrap.SaltSize), DerivedKey: bytes.Repeat([]byte{2}, wrap.KeySize),
			MaxItems: wrap.ItemsPerDerivedKey, Ttl: durationpb.New(30 * time.Second),
		}
	}
	asked := wrap.KeyID{Tenant: "acme", Service: "payments"}
	first, err := d.check(asked, resp(1))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Destroy()
	if wd, err := d.check(asked, resp(1)); err == nil {
		wd.Destroy()
		t.Fatal("a delegated key of a salt seen before was taken")
	}
	second, err := d.check(asked, resp(2))
	if err != nil {
		t.Fatal(err)
	}
	second.Destroy()
}
