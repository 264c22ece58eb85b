package anchor

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// The AAD encoding is part of the stored contract: a change makes every
// sealed L2 unopenable. These fixed bytes guard it.
func TestContextAADFixedBytes(t *testing.T) {
	got := Context{Region: "eu-west-1", Tenant: "acme", Version: 3}.AAD()
	want := "6b727970746f6e20616e63686f72204c3220636f6e74657874207631" + "00" +
		"0009" + hex.EncodeToString([]byte("eu-west-1")) +
		"0004" + hex.EncodeToString([]byte("acme")) +
		"00000003"
	if hex.EncodeToString(got) != want {
		t.Errorf("AAD = %x\nwant  %s", got, want)
	}
}

func TestContextAADUnambiguous(t *testing.T) {
	cs := []Context{
		{Region: "eu", Tenant: "acme", Version: 1},
		{Region: "eua", Tenant: "cme", Version: 1},
		{Region: "eu", Tenant: "acme", Version: 2},
		{Region: "eu", Tenant: "acme", Version: 256},
		{Region: "eu-west-1", Tenant: "acme", Version: 1},
		{Region: "acme", Tenant: "eu", Version: 1},
	}
	seen := map[string]Context{}
	for _, c := range cs {
		if prev, dup := seen[string(c.AAD())]; dup {
			t.Errorf("%v and %v encode alike", prev, c)
		}
		seen[string(c.AAD())] = c
	}
	c := cs[0]
	if !bytes.Equal(c.AAD(), c.AAD()) {
		t.Error("AAD is not deterministic")
	}
}

func TestContextMap(t *testing.T) {
	m := Context{Region: "eu-west-1", Tenant: "acme", Version: 12}.Map()
	want := map[string]string{"krypton-purpose": "tenant-key", "krypton-region": "eu-west-1", "krypton-tenant": "acme", "krypton-l2-version": "12"}
	if len(m) != len(want) {
		t.Fatalf("Map = %v", m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("Map[%q] = %q, want %q", k, m[k], v)
		}
	}
}

func TestContextValidate(t *testing.T) {
	if err := (Context{Region: "eu-west-1", Tenant: "acme", Version: 1}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Context{{}, {Region: "eu", Tenant: "acme"}, {Region: "EU", Tenant: "acme", Version: 1}, {Region: "eu", Tenant: "a/b", Version: 1}, {Tenant: "acme", Version: 1}} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidContext) {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestCheckArgs(t *testing.T) {
	ac := Context{Region: "eu", Tenant: "acme", Version: 1}
	for _, n := range []int{0, MaxPlaintextSize + 1} {
		if err := CheckSeal(make([]byte, n), ac); !errors.Is(err, ErrPlaintextSize) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
	if err := CheckSeal(make([]byte, 32), ac); err != nil {
		t.Error(err)
	}
	for _, n := range []int{0, MaxSealedSize + 1} {
		if err := CheckUnseal("x", make([]byte, n), ac); !errors.Is(err, ErrInvalidCiphertext) || !IsDenied(err) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}
