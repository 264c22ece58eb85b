package region

import (
	"math"
	"testing"

	"github.com/kryptonkms/krypton/wrap"
)

// TestKeyringBound: a full keyring evicts and destroys a key that was not used since the last
// sweep, keeps the one in use, and counts evictions; a duplicate put still returns the held key.
func TestKeyringBound(t *testing.T) {
	r := newKeyring(4)
	defer r.wipeAll()
	id := func(v uint32) wrap.KeyID { return wrap.KeyID{Tenant: "a", Service: "s", Version: v} }
	var keys []*wrap.ServiceKey
	for v := uint32(1); v <= 4; v++ {
		k, err := wrap.NewServiceKey(id(v))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.putServiceKey(k))
	}
	hot := keys[0]
	for v := uint32(5); v <= 20; v++ {
		if r.serviceKey(id(1)) != hot { // key 1 is used between every two puts
			t.Fatalf("the key in use was evicted before version %d", v)
		}
		k, err := wrap.NewServiceKey(id(v))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.putServiceKey(k))
		if _, n := r.counts(); n != 4 {
			t.Fatalf("%d service keys held, want 4", n)
		}
	}
	if _, ev := r.evictions(); ev != 16 {
		t.Errorf("%d evictions, want 16", ev)
	}
	// Every key the keyring no longer holds was destroyed; those it holds were not.
	for v, k := range keys {
		if held := r.serviceKey(id(uint32(v+1))) != nil; held == k.IsZero() {
			t.Errorf("version %d: held %v, destroyed %v", v+1, held, k.IsZero())
		}
	}
	// Tenant keys are bounded apart from service keys.
	for v := uint32(1); v <= 6; v++ {
		l2, err := wrap.NewTenantKey(wrap.KeyID{Tenant: "a", Version: v})
		if err != nil {
			t.Fatal(err)
		}
		r.putTenantKey(l2)
	}
	if tk, sk := r.counts(); tk != 4 || sk != 4 {
		t.Errorf("held %d tenant and %d service keys, want 4 and 4", tk, sk)
	}
	if n := r.wipeTenant("a"); n != 8 || r.size() != 0 {
		t.Errorf("wipeTenant wiped %d, %d left", n, r.size())
	}
}

func TestKeyringWipes(t *testing.T) {
	r := newKeyring(0)
	defer r.wipeAll()
	mk := func(id wrap.KeyID) *wrap.ServiceKey {
		k, err := wrap.NewServiceKey(id)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	l2, _ := wrap.NewTenantKey(wrap.KeyID{Tenant: "a", Version: 1})
	r.putTenantKey(l2)
	a1 := r.putServiceKey(mk(wrap.KeyID{Tenant: "a", Service: "s", Version: 1}))
	r.putServiceKey(mk(wrap.KeyID{Tenant: "a", Service: "s", Version: 2}))
	b1 := r.putServiceKey(mk(wrap.KeyID{Tenant: "b", Service: "s", Version: 1}))
	if r.size() != 4 {
		t.Fatalf("size = %d, want 4", r.size())
	}
	// A second key for a held id is destroyed, the held one kept.
	dup := mk(wrap.KeyID{Tenant: "a", Service: "s", Version: 1})
	if got := r.putServiceKey(dup); got != a1 || !dup.IsZero() {
		t.Fatal("a duplicate put replaced the held key or leaked the duplicate")
	}
	if n := r.wipeService("a", "s", 2); n != 1 || r.serviceKey(wrap.KeyID{Tenant: "a", Service: "s", Version: 2}) != nil {
		t.Fatalf("wipeService(version 2) wiped %d", n)
	}
	if n := r.wipeTenant("a"); n != 2 || !a1.IsZero() || r.tenantKey("a", 1) != nil {
		t.Fatalf("wipeTenant wiped %d keys; a1 zero=%v", n, a1.IsZero())
	}
	if b1.IsZero() || r.size() != 1 {
		t.Fatal("wiping tenant a touched tenant b")
	}
	r.wipeAll()
	if !b1.IsZero() || r.size() != 0 {
		t.Fatal("wipeAll left keys")
	}
}

// TestAutoKeyringSize: an unconfigured keyring takes three quarters of the free locked-memory
// budget, shared by L2 and L3, within its bounds.
func TestAutoKeyringSize(t *testing.T) {
	for _, c := range []struct{ fit, want int }{
		{math.MaxInt, DefaultKeyringSize},
		{1984, 744}, // 8 MiB less the margin, one page per key
		{10, MinKeyringSize},
		{1 << 30, MaxAutoKeyringSize},
	} {
		if got := autoKeyringSize(c.fit); got != c.want {
			t.Errorf("autoKeyringSize(%d) = %d, want %d", c.fit, got, c.want)
		}
	}
}
