package anchor_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	_ "github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/wrap"
)

func openDev(t *testing.T) anchor.Provider {
	t.Helper()
	uri := "file://" + filepath.Join(t.TempDir(), "root.key")
	p, err := anchor.Open(context.Background(), uri, anchor.Options{Create: true, Logger: anchortest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestTenantKeyRoundTrip(t *testing.T) {
	ctx := context.Background()
	p := openDev(t)
	k, err := wrap.NewTenantKey(wrap.KeyID{Tenant: "acme", Version: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	sealed, err := anchor.SealTenantKey(ctx, p, k, "eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 4}
	got, err := anchor.UnsealTenantKey(ctx, p, sealed, ac)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Destroy()
	if !got.Equal(k) {
		t.Fatal("unsealed tenant key differs")
	}
	// The blob is bound to the key's identity and region.
	for _, other := range []anchor.Context{
		{Region: "eu-west-2", Tenant: "acme", Version: 4},
		{Region: "eu-west-1", Tenant: "acme", Version: 5},
		{Region: "eu-west-1", Tenant: "umbrella", Version: 4},
	} {
		if _, err := anchor.UnsealTenantKey(ctx, p, sealed, other); !errors.Is(err, anchor.ErrInvalidCiphertext) {
			t.Errorf("%v: %v, want ErrInvalidCiphertext", other, err)
		}
	}
}

func TestTenantKeyErrors(t *testing.T) {
	ctx := context.Background()
	p := openDev(t)
	k, err := wrap.NewTenantKey(wrap.KeyID{Tenant: "acme", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anchor.SealTenantKey(ctx, p, k, "Bad Region"); !errors.Is(err, anchor.ErrInvalidContext) {
		t.Errorf("bad region: %v", err)
	}
	k.Destroy()
	if _, err := anchor.SealTenantKey(ctx, p, k, "eu-west-1"); !errors.Is(err, wrap.ErrDestroyed) {
		t.Errorf("destroyed key: %v", err)
	}
	// A blob that opens but holds no tenant key (16 bytes) is a denial.
	ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}
	sealed, err := p.Seal(ctx, make([]byte, 16), ac)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anchor.UnsealTenantKey(ctx, p, sealed, ac); !errors.Is(err, anchor.ErrInvalidCiphertext) {
		t.Errorf("short plaintext: %v", err)
	}
}

func TestProbe(t *testing.T) {
	p := openDev(t)
	if err := anchor.Probe(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := anchor.Probe(context.Background(), p); !errors.Is(err, anchor.ErrClosed) {
		t.Fatalf("Probe after Close: %v", err)
	}
}
