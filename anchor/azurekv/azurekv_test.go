package azurekv_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	"github.com/kryptonkms/krypton/anchor/azurekv"
	"github.com/kryptonkms/krypton/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }

// kinds are the two key flavours: a vault RSA key and a Managed HSM
// oct-HSM key.
var kinds = []struct {
	name, kty, host string
	alg             azkeys.EncryptionAlgorithm
}{
	{"vault-rsa", "RSA", "krypton-test.vault.azure.net", azkeys.EncryptionAlgorithmRSAOAEP256},
	{"mhsm-oct", "oct-HSM", "krypton-test.managedhsm.azure.net", azkeys.EncryptionAlgorithmA256KW},
}

func (f *fakeVault) options(t testing.TB) anchor.Options {
	return anchor.Options{
		Logger: anchortest.Logger(t),
		Provider: map[string]any{anchor.SchemeAzureKV: azurekv.Options{
			Credential: f.cred,
			Client:     azkeys.ClientOptions{ClientOptions: f.clientOptions()},
		}},
	}
}

func (f *fakeVault) open(t testing.TB, uri string) (anchor.Provider, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return anchor.Open(ctx, uri, f.options(t))
}

func (f *fakeVault) mustOpen(t testing.TB, uri string) anchor.Provider {
	t.Helper()
	p, err := f.open(t, uri)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// keyName returns the key name of a provider's Describe().Key
// ("host/keys/name[/version]").
func keyName(p anchor.Provider) string {
	return strings.Split(p.Describe().Key, "/")[2]
}

func TestConformance(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			f := newFakeVault(t)
			anchortest.Run(t, anchortest.Harness{
				Open: func(t *testing.T) anchor.Provider {
					p, err := f.open(t, "azurekv://"+kind.host+"/keys/"+f.create(kind.kty))
					if err != nil {
						t.Fatalf("Open: %v", err)
					}
					return p
				},
				Reopen: func(t *testing.T, p anchor.Provider) anchor.Provider {
					q, err := f.open(t, p.Describe().URI)
					if err != nil {
						t.Fatalf("Open: %v", err)
					}
					return q
				},
				Disable: func(t *testing.T, p anchor.Provider) { f.setEnabled(keyName(p), false) },
				Enable:  func(t *testing.T, p anchor.Provider) { f.setEnabled(keyName(p), true) },
				Destroy: func(t *testing.T, p anchor.Provider) { f.set(keyName(p), func(k *fakeKey) { k.deleted = true }) },
				FailTransiently: func(t *testing.T, p anchor.Provider) func() {
					f.set(keyName(p), func(k *fakeKey) { k.failing = true })
					return func() { f.set(keyName(p), func(k *fakeKey) { k.failing = false }) }
				},
				ExactReasons: true,
				Secrets:      []string{fakeToken},
				Timeout:      20 * time.Second,
			})
			// The client answered the bearer challenge with a token for
			// the scope the challenge named.
			scope := "https://vault.azure.net/.default"
			if kind.kty == "oct-HSM" {
				scope = "https://managedhsm.azure.net/.default"
			}
			if _, ok := f.cred.scopes.Load(scope); !ok {
				t.Errorf("credential never asked for %s", scope)
			}
			f.mu.Lock()
			challenges := f.challenges
			f.mu.Unlock()
			if challenges == 0 {
				t.Error("the client never met the bearer challenge")
			}
		})
	}
}

// The blob pins the key version that sealed it: after a rotation, old
// blobs still open and new ones use the new version.
func TestRotation(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			f := newFakeVault(t)
			name := f.create(kind.kty)
			p := f.mustOpen(t, "azurekv://"+kind.host+"/keys/"+name)
			ctx := context.Background()
			ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 7}
			k1 := bytes.Repeat([]byte{1}, 32)
			old, err := p.Seal(ctx, k1, ac)
			if err != nil {
				t.Fatal(err)
			}
			var v1 string
			f.set(name, func(k *fakeKey) { v1 = k.versions[0].id })
			v2 := f.rotate(name)
			k2 := bytes.Repeat([]byte{2}, 32)
			cur, err := p.Seal(ctx, k2, ac)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(old, []byte(v1)) || !bytes.Contains(cur, []byte(v2)) {
				t.Fatal("blobs do not name the version that sealed them")
			}
			for _, c := range []struct{ blob, want []byte }{{old, k1}, {cur, k2}} {
				got, err := p.Unseal(ctx, c.blob, ac)
				if err != nil || !bytes.Equal(got, c.want) {
					t.Fatalf("Unseal after rotation: %v", err)
				}
			}
			// A URI that names a version seals with it.
			q := f.mustOpen(t, "azurekv://"+kind.host+"/keys/"+name+"/"+v1)
			pinned, err := q.Seal(ctx, k1, ac)
			if err != nil || !bytes.Contains(pinned, []byte(v1)) {
				t.Fatalf("Seal on a versioned URI: %v, or blob names another version", err)
			}
			// Disabling the old version denies its blobs only.
			f.set(name, func(k *fakeKey) { k.versions[0].enabled = false })
			if _, err := p.Unseal(ctx, old, ac); !errors.Is(err, anchor.ErrDisabled) {
				t.Errorf("Unseal with a disabled version: %v, want ErrDisabled", err)
			}
			if got, err := p.Unseal(ctx, cur, ac); err != nil || !bytes.Equal(got, k2) {
				t.Errorf("Unseal with the current version: %v", err)
			}
		})
	}
}

// A blob sealed under one key does not open under another: the version it
// names is not the other key's, which the provider tells from a deleted
// key by reading the key.
func TestOtherKey(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			f := newFakeVault(t)
			a := f.mustOpen(t, "azurekv://"+kind.host+"/keys/"+f.create(kind.kty))
			b := f.mustOpen(t, "azurekv://"+kind.host+"/keys/"+f.create(kind.kty))
			ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}
			sealed, err := a.Seal(context.Background(), bytes.Repeat([]byte{9}, 32), ac)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Unseal(context.Background(), sealed, ac); !errors.Is(err, anchor.ErrInvalidCiphertext) {
				t.Fatalf("Unseal under another key: %v, want ErrInvalidCiphertext", err)
			}
		})
	}
}

// The Context is bound by the digest inside the wrapped payload: moving
// a blob between tenants, regions or versions is refused after unwrap.
func TestContextBinding(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			f := newFakeVault(t)
			p := f.mustOpen(t, "azurekv://"+kind.host+"/keys/"+f.create(kind.kty))
			ctx := context.Background()
			ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}
			k := bytes.Repeat([]byte{0x5a}, 32)
			sealed, err := p.Seal(ctx, k, ac)
			if err != nil {
				t.Fatal(err)
			}
			before := f.count("unwrapkey")
			for _, other := range []anchor.Context{
				{Region: "eu-west-2", Tenant: "acme", Version: 1},
				{Region: "eu-west-1", Tenant: "acme2", Version: 1},
				{Region: "eu-west-1", Tenant: "acme", Version: 2},
			} {
				pt, err := p.Unseal(ctx, sealed, other)
				if pt != nil || !errors.Is(err, anchor.ErrInvalidCiphertext) {
					t.Errorf("Unseal under %v: %v, want ErrInvalidCiphertext", other, err)
				}
				if err != nil && strings.Contains(err.Error(), hex.EncodeToString(k)) {
					t.Error("error shows the key")
				}
			}
			// The vault did unwrap: the refusal is the digest's.
			if got := f.count("unwrapkey") - before; got != 3 {
				t.Errorf("%d unwrapkey calls, want 3", got)
			}
		})
	}
}

// The classification of what the real client gets from the fake.
func TestErrorsFromVault(t *testing.T) {
	f := newFakeVault(t)
	host := kinds[0].host
	ctx := context.Background()
	ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}
	k := bytes.Repeat([]byte{3}, 32)

	t.Run("open missing key", func(t *testing.T) {
		_, err := f.open(t, "azurekv://"+host+"/keys/no-such-key")
		if !errors.Is(err, anchor.ErrKeyNotFound) {
			t.Fatalf("Open: %v, want ErrKeyNotFound", err)
		}
		var ae *azurekv.APIError
		var re *azcore.ResponseError
		if !errors.As(err, &ae) || ae.StatusCode != 404 || ae.Code != "KeyNotFound" || !errors.As(err, &re) {
			t.Fatalf("Open: %v: want an *azurekv.APIError 404 KeyNotFound wrapping *azcore.ResponseError", err)
		}
	})
	t.Run("open disabled key", func(t *testing.T) {
		name := f.create("RSA")
		f.setEnabled(name, false)
		if _, err := f.open(t, "azurekv://"+host+"/keys/"+name); !errors.Is(err, anchor.ErrDisabled) {
			t.Fatalf("Open: %v, want ErrDisabled", err)
		}
	})
	t.Run("open missing version", func(t *testing.T) {
		name := f.create("RSA")
		if _, err := f.open(t, "azurekv://"+host+"/keys/"+name+"/"+newVersionID()); !errors.Is(err, anchor.ErrKeyNotFound) {
			t.Fatalf("Open: %v, want ErrKeyNotFound", err)
		}
	})
	t.Run("role removed", func(t *testing.T) {
		name := f.create("RSA")
		p := f.mustOpen(t, "azurekv://"+host+"/keys/"+name)
		sealed, err := p.Seal(ctx, k, ac)
		if err != nil {
			t.Fatal(err)
		}
		f.set(name, func(k *fakeKey) { k.forbidden = true })
		for what, err := range map[string]error{"Check": p.Check(ctx), "Seal": second(p.Seal(ctx, k, ac)), "Unseal": second(p.Unseal(ctx, sealed, ac))} {
			if !errors.Is(err, anchor.ErrAccessDenied) || anchor.IsTransient(err) {
				t.Errorf("%s: %v, want ErrAccessDenied", what, err)
			}
		}
	})
	t.Run("throttled", func(t *testing.T) {
		name := f.create("RSA")
		p := f.mustOpen(t, "azurekv://"+host+"/keys/"+name)
		f.set(name, func(k *fakeKey) { k.throttled = true })
		start := time.Now()
		err := p.Check(ctx)
		if !anchor.IsTransient(err) || anchor.IsDenied(err) {
			t.Errorf("Check while throttled: %v, want transient", err)
		}
		var ae *azurekv.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 429 {
			t.Errorf("Check while throttled: %v, want 429", err)
		}
		// Retry-After (60 s) is above the test's MaxRetryDelay: no wait. (The bound was 900 ms
		// under a Retry-After of 1 s, close enough to a slow -race run on busy cores to fail.)
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("Check while throttled took %v: it waited out Retry-After", d)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		name := f.create("RSA")
		o := f.options(t)
		ko := o.Provider[anchor.SchemeAzureKV].(azurekv.Options)
		ko.Credential = &tokenCred{token: "another-token-0000", tenant: fakeTenant}
		o.Provider = map[string]any{anchor.SchemeAzureKV: &ko}
		_, err := anchor.Open(ctx, "azurekv://"+host+"/keys/"+name, o)
		if !errors.Is(err, anchor.ErrAccessDenied) {
			t.Fatalf("Open with a token the vault refuses: %v, want ErrAccessDenied", err)
		}
		if strings.Contains(fmt.Sprintf("%v %+v", err, err), "another-token") {
			t.Error("error shows the token")
		}
	})
	t.Run("credential fails", func(t *testing.T) {
		name := f.create("RSA")
		o := f.options(t)
		ko := o.Provider[anchor.SchemeAzureKV].(azurekv.Options)
		ko.Credential = &tokenCred{token: fakeToken, tenant: "another-tenant"}
		o.Provider = map[string]any{anchor.SchemeAzureKV: ko}
		_, err := anchor.Open(ctx, "azurekv://"+host+"/keys/"+name, o)
		if !anchor.IsTransient(err) || anchor.IsDenied(err) {
			t.Fatalf("Open with a failing credential: %v, want transient", err)
		}
	})
	t.Run("bad options", func(t *testing.T) {
		o := f.options(t)
		o.Provider = map[string]any{anchor.SchemeAzureKV: "nope"}
		_, err := anchor.Open(ctx, "azurekv://"+host+"/keys/x", o)
		if err == nil || !strings.HasPrefix(err.Error(), "azurekv: ") {
			t.Fatalf("Open with bad options: %v", err)
		}
		ko := f.options(t).Provider[anchor.SchemeAzureKV].(azurekv.Options)
		ko.Algorithm = azkeys.EncryptionAlgorithmA256KW
		o.Provider = map[string]any{anchor.SchemeAzureKV: ko}
		_, err = anchor.Open(ctx, "azurekv://"+host+"/keys/"+f.create("RSA"), o)
		if !errors.Is(err, anchor.ErrKeyUnusable) {
			t.Fatalf("Open with A256KW on an RSA key: %v, want ErrKeyUnusable", err)
		}
	})
}

func second[T any](_ T, err error) error { return err }

// RFC 3394 section 4.6: 256 bits of key data with a 256-bit KEK. Checks the
// fake's A256KW.
func TestFakeKeyWrapVector(t *testing.T) {
	kek, _ := hex.DecodeString("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	data, _ := hex.DecodeString("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
	want, _ := hex.DecodeString("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
	got, err := kwWrap(kek, data)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("kwWrap = %x, %v; want %x", got, err, want)
	}
	back, err := kwUnwrap(kek, got)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("kwUnwrap: %v", err)
	}
	got[3] ^= 1
	if _, err := kwUnwrap(kek, got); err == nil {
		t.Fatal("kwUnwrap accepted a tampered input")
	}
}

// BenchmarkSealUnseal measures Seal (wrapkey + the checking unwrapkey) and
// Unseal (unwrapkey) against the fake over HTTPS, and reports medians and
// 99th percentiles:
//
//	go test -run '^$' -bench SealUnseal -benchtime 500x ./anchor/azurekv/
func BenchmarkSealUnseal(b *testing.B) {
	for _, kind := range kinds {
		b.Run(kind.name, func(b *testing.B) {
			f := newFakeVault(b)
			p := f.mustOpen(b, "azurekv://"+kind.host+"/keys/"+f.create(kind.kty))
			ctx := context.Background()
			ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}
			k := bytes.Repeat([]byte{7}, 32)
			var seal, unseal []time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				s, err := p.Seal(ctx, k, ac)
				t1 := time.Now()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Unseal(ctx, s, ac); err != nil {
					b.Fatal(err)
				}
				seal, unseal = append(seal, t1.Sub(t0)), append(unseal, time.Since(t1))
			}
			pct := func(d []time.Duration, q float64) float64 {
				slices.Sort(d)
				return float64(d[int(q*float64(len(d)-1))].Microseconds())
			}
			b.ReportMetric(pct(seal, 0.5), "seal-p50-µs")
			b.ReportMetric(pct(seal, 0.99), "seal-p99-µs")
			b.ReportMetric(pct(unseal, 0.5), "unseal-p50-µs")
			b.ReportMetric(pct(unseal, 0.99), "unseal-p99-µs")
		})
	}
}
