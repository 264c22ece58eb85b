package pkcs11

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	p11 "github.com/miekg/pkcs11"
)

func setEnabled(t *testing.T, p anchor.Provider, on bool) {
	t.Helper()
	env.test.SetEnabled(t, p.(*Provider).key.label, on)
}

func TestConformance(t *testing.T) {
	needHSM(t)
	anchortest.Run(t, anchortest.Harness{
		Open: func(t *testing.T) anchor.Provider { return openNew(t, Options{}) },
		Reopen: func(t *testing.T, p anchor.Provider) anchor.Provider {
			q, err := openURI(t, testURI(p.(*Provider).key.label), Options{})
			if err != nil {
				t.Fatal(err)
			}
			return q
		},
		// The customer's kill switch: CKA_ENCRYPT and CKA_DECRYPT set
		// false on the key (SoftHSM2 allows it on a sensitive,
		// non-extractable key), and back.
		Disable: func(t *testing.T, p anchor.Provider) { setEnabled(t, p, false) },
		Enable:  func(t *testing.T, p anchor.Provider) { setEnabled(t, p, true) },
		Destroy: func(t *testing.T, p anchor.Provider) {
			env.test.Destroy(t, p.(*Provider).key.label)
		},
		// A lost session: the hook closes, with the real module, the
		// session each operation is about to use, so that every call meets
		// CKR_SESSION_HANDLE_INVALID from SoftHSM2 and the pool opens (and
		// logs in) a fresh session for the next one.
		FailTransiently: func(t *testing.T, p anchor.Provider) func() {
			pp := p.(*Provider)
			breakSession := func(s p11.SessionHandle) { env.mod.ctx.CloseSession(s) }
			pp.beforeOp.Store(&breakSession)
			return func() { pp.beforeOp.Store(nil) }
		},
		ExactReasons: true,
		Secrets:      []string{testPIN, otherPIN, soPIN},
	})
}

var ac = anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 3}

func TestWrongContextAndTamperedBlob(t *testing.T) {
	p := openNew(t, Options{})
	ctx := context.Background()
	k := make([]byte, 32)
	rand.Read(k)
	sealed, err := p.Seal(ctx, k, ac)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != headerSize+32+tagSize || sealed[0] != formatGCM {
		t.Fatalf("sealed blob: %d bytes, format %#x; want %d, %#x", len(sealed), sealed[0], headerSize+32+tagSize, formatGCM)
	}
	for name, c := range map[string]anchor.Context{
		"version": {Region: ac.Region, Tenant: ac.Tenant, Version: ac.Version + 1},
		"tenant":  {Region: ac.Region, Tenant: "acme2", Version: ac.Version},
		"region":  {Region: "eu-west-2", Tenant: ac.Tenant, Version: ac.Version},
	} {
		if pt, err := p.Unseal(ctx, sealed, c); pt != nil || !errors.Is(err, anchor.ErrInvalidCiphertext) {
			t.Errorf("wrong %s: %v, want ErrInvalidCiphertext", name, err)
		}
	}
	for name, i := range map[string]int{"format": 0, "iv": 1, "ciphertext": headerSize, "tag": len(sealed) - 1} {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x40
		if pt, err := p.Unseal(ctx, bad, ac); pt != nil || !errors.Is(err, anchor.ErrInvalidCiphertext) {
			t.Errorf("%s byte flipped: %v, want ErrInvalidCiphertext", name, err)
		}
	}
	// A failed authentication leaves the pooled session usable.
	got, err := p.Unseal(ctx, sealed, ac)
	if err != nil || !bytes.Equal(got, k) {
		t.Fatalf("Unseal after the refusals: %v", err)
	}
	// Another key's blob does not open either.
	q := openNew(t, Options{})
	if _, err := q.Unseal(ctx, sealed, ac); !errors.Is(err, anchor.ErrInvalidCiphertext) {
		t.Errorf("blob of another key: %v, want ErrInvalidCiphertext", err)
	}
}

// Sixteen goroutines share a Provider of four sessions: the pool must
// serialise each session's use (run with -race) and nothing may mix up.
func TestConcurrent16(t *testing.T) {
	p := openNew(t, Options{Sessions: 4})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			c := anchor.Context{Region: "eu-west-1", Tenant: fmt.Sprintf("t%d", g), Version: 1}
			for range 25 {
				k := make([]byte, 32)
				rand.Read(k)
				sealed, err := p.Seal(ctx, k, c)
				if err != nil {
					errs <- err
					return
				}
				got, err := p.Unseal(ctx, sealed, c)
				if err != nil || !bytes.Equal(got, k) {
					errs <- fmt.Errorf("unseal: %v", err)
					return
				}
				if g%4 == 0 {
					if err := p.Check(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(p.pool.idle); n > 4 {
		t.Errorf("%d idle sessions, pool size 4", n)
	}
}

func TestOpenDenials(t *testing.T) {
	needHSM(t)
	label := genKey(t, testToken)
	otherLabel := genKey(t, otherToken)
	// A provider holding sessions keeps the test token logged in for the "token logged in" case.
	held, err := openURI(t, testURI(label), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	base := "?module-path=" + softhsmPath
	for _, tc := range []struct {
		name, uri string
		want      error
	}{
		{"key not found", testURI("no-such-key"), anchor.ErrKeyNotFound},
		// Nobody in this process is logged in to the other token: this
		// is SoftHSM2's own CKR_PIN_INCORRECT.
		{"wrong PIN", "pkcs11:token=" + otherToken + ";object=" + otherLabel + base + "&pin-value=" + testPIN, anchor.ErrAccessDenied},
		// The test token is logged in (login is per process): a wrong
		// PIN must not ride on that login.
		{"wrong PIN, token logged in", "pkcs11:token=" + testToken + ";object=" + label + base + "&pin-value=" + otherPIN, anchor.ErrAccessDenied},
		{"extractable key", testURI(genKey(t, testToken, p11.NewAttribute(p11.CKA_EXTRACTABLE, true))), anchor.ErrKeyUnusable},
		{"not sensitive", testURI(genKey(t, testToken, p11.NewAttribute(p11.CKA_SENSITIVE, false))), anchor.ErrKeyUnusable},
		{"AES-128", testURI(genKey(t, testToken, p11.NewAttribute(p11.CKA_VALUE_LEN, 16))), anchor.ErrKeyUnusable},
		{"disabled", testURI(genKey(t, testToken, p11.NewAttribute(p11.CKA_ENCRYPT, false))), anchor.ErrDisabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := openURI(t, tc.uri, Options{})
			if err == nil {
				p.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Open: %v, want %v", err, tc.want)
			}
			noPIN(t, "the error", fmt.Sprintf("%v %+v %#v", err, err, err))
		})
	}
	// The other token opens with its own PIN.
	p, err := openURI(t, "pkcs11:token="+otherToken+";object="+otherLabel+base+"&pin-value="+otherPIN, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	noPIN(t, "Describe", fmt.Sprintf("%v %+v %#v", p.Describe(), p.Describe(), p.Describe()))
	noPIN(t, "the Provider", fmt.Sprintf("%v %+v %#v %+v %v", p, p, p, p.pool, p.pool.pin))
	// A PIN logged by mistake is redacted; TestMain scans every log line.
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, nil))
	l.Info("oops", "pin", p.pool.pin, "pool", p.pool, "provider", p)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("oops", "pin", p.pool.pin)
	testLogger(t).Info("oops", "pin", p.pool.pin)
	if !bytes.Contains(buf.Bytes(), []byte("xxxxx")) {
		t.Error("the PIN is not shown as xxxxx in logs")
	}
	noPIN(t, "a log", buf.String())
}

func TestTokenAbsentIsTransient(t *testing.T) {
	needHSM(t)
	_, err := openURI(t, "pkcs11:token=no-such-token;object=k?module-path="+softhsmPath+"&pin-value="+testPIN, Options{})
	if !anchor.IsTransient(err) || anchor.IsDenied(err) {
		t.Fatalf("Open on an absent token: %v, want transient", err)
	}
	noPIN(t, "the error", fmt.Sprintf("%v %+v", err, err))
}

func TestOpenArguments(t *testing.T) {
	needHSM(t)
	for name, uri := range map[string]string{
		"no module":     "pkcs11:token=" + testToken + ";object=k?pin-value=" + testPIN,
		"no pin file":   "pkcs11:token=" + testToken + ";object=k?module-path=" + softhsmPath + "&pin-source=file:/nonexistent/pin",
		"no such lib":   "pkcs11:token=" + testToken + ";object=k?module-path=/nonexistent/lib.so&pin-value=" + testPIN,
		"not a library": "pkcs11:token=" + testToken + ";object=k?module-path=" + env.pinFile + "&pin-value=" + testPIN,
	} {
		_, err := openURI(t, uri, Options{})
		if err == nil {
			t.Errorf("%s: Open succeeded", name)
			continue
		}
		if len(err.Error()) < 8 || !bytes.Contains([]byte(err.Error()), []byte("pkcs11: ")) {
			t.Errorf("%s: %q does not say pkcs11", name, err)
		}
		noPIN(t, name, err.Error())
	}
	if _, err := anchor.Open(context.Background(), testURI("k"), anchor.Options{Provider: map[string]any{"pkcs11": 3}}); err == nil {
		t.Error("Open with options of the wrong type succeeded")
	}
}

// After a Destroy, a key made again with the same label does not open the
// old blobs: they are refused, not mistaken for the new key's.
func TestRecreatedLabel(t *testing.T) {
	p := openNew(t, Options{})
	ctx := context.Background()
	k := make([]byte, 32)
	sealed, err := p.Seal(ctx, k, ac)
	if err != nil {
		t.Fatal(err)
	}
	env.test.Destroy(t, p.key.label)
	if err := p.Check(ctx); !errors.Is(err, anchor.ErrDestroyed) {
		t.Fatalf("Check after destroy: %v", err)
	}
	env.test.GenerateKey(t, p.key.label)
	if _, err := p.Unseal(ctx, sealed, ac); !errors.Is(err, anchor.ErrInvalidCiphertext) {
		t.Fatalf("old blob under the new key: %v, want ErrInvalidCiphertext", err)
	}
}

func TestModuleShared(t *testing.T) {
	needHSM(t)
	a := openNew(t, Options{})
	b := openNew(t, Options{})
	if a.mod != b.mod || a.mod != env.mod {
		t.Fatal("two Providers on one module path do not share it")
	}
	registry.mu.Lock()
	refs := env.mod.refs
	registry.mu.Unlock()
	a.Close()
	a.Close()
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if env.mod.refs != refs-1 {
		t.Fatalf("refs %d after Close (twice), want %d", env.mod.refs, refs-1)
	}
}
