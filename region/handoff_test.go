package region

import (
	"bytes"
	"testing"

	"github.com/kryptonkms/krypton/wrap"
)

func TestHandoffRoundTripAndBinding(t *testing.T) {
	id := wrap.KeyID{Tenant: "acme", Version: 2}
	l2, err := wrap.NewTenantKey(id)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Destroy()

	r, err := newHandoffRecipient()
	if err != nil {
		t.Fatal(err)
	}
	enc, ct, err := sealHandoff("eu-1", "node-2", l2, r.publicKey())
	if err != nil {
		t.Fatal(err)
	}
	plain := l2.Bytes()
	defer clear(plain)
	if bytes.Contains(ct, plain) || bytes.Contains(enc, plain) {
		t.Fatal("the sealed handoff contains the plaintext key")
	}

	got, err := r.open("eu-1", "node-2", id, enc, ct)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if !got.Equal(l2) {
		t.Fatal("handoff did not carry the same key")
	}
	got.Destroy()

	// Every part of the binding matters: another region, node, tenant or version does not open.
	for name, tc := range map[string]struct {
		region, node string
		id           wrap.KeyID
	}{
		"region":  {"us-1", "node-2", id},
		"node":    {"eu-1", "node-3", id},
		"tenant":  {"eu-1", "node-2", wrap.KeyID{Tenant: "other", Version: 2}},
		"version": {"eu-1", "node-2", wrap.KeyID{Tenant: "acme", Version: 3}},
	} {
		if k, err := r.open(tc.region, tc.node, tc.id, enc, ct); err == nil {
			k.Destroy()
			t.Errorf("%s: a handoff opened under another %s", name, name)
		}
	}

	// Another recipient's key does not open it either, and tampering is caught.
	other, _ := newHandoffRecipient()
	if k, err := other.open("eu-1", "node-2", id, enc, ct); err == nil {
		k.Destroy()
		t.Error("a handoff opened with another recipient's key")
	}
	bad := bytes.Clone(ct)
	bad[0] ^= 1
	if k, err := r.open("eu-1", "node-2", id, enc, bad); err == nil {
		k.Destroy()
		t.Error("a tampered handoff opened")
	}
	if _, _, err := sealHandoff("eu-1", "node-2", l2, []byte("short")); err == nil {
		t.Error("a malformed public key was accepted")
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
