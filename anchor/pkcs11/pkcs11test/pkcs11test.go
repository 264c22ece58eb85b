// Package pkcs11test runs SoftHSM2 tokens for tests of any package, so that they can open real
// pkcs11 anchors:
//
//	func TestMain(m *testing.M) {
//		hsm, err := pkcs11test.Setup(dir) // before anything calls C_Initialize
//		...
//		tok, err := hsm.InitToken("krypton", soPIN, userPIN)
//		code := m.Run()
//		hsm.Close()
//	}
//
//	label := tok.NewKey(t)            // a non-extractable AES-256 key
//	p, err := anchor.Open(ctx, tok.URI(label), anchor.Options{})
//	tok.Disable(t, label)             // the customer's kill switch
//
// A Cryptoki module is initialised once per process: Setup points SoftHSM2 at a token directory
// of its own (SOFTHSM2_CONF) and calls C_Initialize; the pkcs11 provider then finds the module
// initialised and shares it. Administration opens a session per call and closes it again, so
// that it never keeps the token logged in on behalf of a provider.
package pkcs11test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// ModulePath is where Debian's softhsm2 package installs the module.
const ModulePath = "/usr/lib/softhsm/libsofthsm2.so"

// Missing returns why SoftHSM2 cannot be used here, or nil. Callers skip only when it is missing
// and KRYPTON_REQUIRE_PEERS is not "1" (see Required).
func Missing() error {
	if _, err := os.Stat(ModulePath); err != nil {
		return fmt.Errorf("pkcs11test: SoftHSM2 is not installed (%s); install softhsm2 or set KRYPTON_REQUIRE_PEERS=1 to fail", ModulePath)
	}
	return nil
}

// Required reports whether the test peers are required (KRYPTON_REQUIRE_PEERS=1, as CI sets),
// so that a missing SoftHSM2 fails instead of skipping.
func Required() bool { return os.Getenv("KRYPTON_REQUIRE_PEERS") == "1" }

var setupOnce sync.Mutex // guards setupDone
var setupDone bool

// HSM is SoftHSM2 set up for this process.
type HSM struct {
	dir string
	ctx *p11.Ctx
	mu  sync.Mutex // serialises administration (C_Login state is per process)
}

// Setup writes a SoftHSM2 configuration with a token directory under dir, points SOFTHSM2_CONF
// at it and initialises the module. Call it once per process, from TestMain, before anything
// else in the process calls C_Initialize on SoftHSM2 (which would read the environment's
// configuration, not this one).
func Setup(dir string) (*HSM, error) {
	setupOnce.Lock()
	defer setupOnce.Unlock()
	if setupDone {
		return nil, errors.New("pkcs11test: Setup called twice in one process")
	}
	if err := Missing(); err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		return nil, err
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	ctx := p11.New(ModulePath)
	if ctx == nil {
		return nil, errors.New("pkcs11test: SoftHSM2 module does not load")
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11test: C_Initialize: %w", err)
	}
	setupDone = true
	return &HSM{dir: dir, ctx: ctx}, nil
}

// Close finalises the module. Close every provider first.
func (h *HSM) Close() error {
	err := h.ctx.Finalize()
	h.ctx.Destroy()
	return err
}

// Ctx is the module's context, for administration this package does not offer.
func (h *HSM) Ctx() *p11.Ctx { return h.ctx }

// Token is an initialised token with its PINs.
type Token struct {
	h     *HSM
	Label string
	SOPIN string
	PIN   string
	// PINFile holds PIN (mode 0600), for the URI's pin-source=file:.
	PINFile string
}

// InitToken initialises a token with label in SoftHSM2's free slot (C_InitToken with soPIN,
// then C_InitPIN with pin) and writes pin to a file for URIs.
func (h *HSM) InitToken(label, soPIN, pin string) (*Token, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	slots, err := h.ctx.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("pkcs11test: C_GetSlotList: %w", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		ti, err := h.ctx.GetTokenInfo(s)
		if err == nil && ti.Flags&p11.CKF_TOKEN_INITIALIZED == 0 {
			free, found = s, true
			break
		}
	}
	if !found {
		return nil, errors.New("pkcs11test: no free slot")
	}
	if err := h.ctx.InitToken(free, soPIN, label); err != nil {
		return nil, fmt.Errorf("pkcs11test: C_InitToken: %w", err)
	}
	tok := &Token{h: h, Label: label, SOPIN: soPIN, PIN: pin}
	// Slot ids change when a token is initialised: find it again by label.
	slot, err := tok.slot()
	if err != nil {
		return nil, err
	}
	s, err := h.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return nil, fmt.Errorf("pkcs11test: C_OpenSession: %w", err)
	}
	defer h.ctx.CloseSession(s)
	if err := h.ctx.Login(s, p11.CKU_SO, soPIN); err != nil {
		return nil, fmt.Errorf("pkcs11test: SO C_Login: %w", err)
	}
	defer h.ctx.Logout(s)
	if err := h.ctx.InitPIN(s, pin); err != nil {
		return nil, fmt.Errorf("pkcs11test: C_InitPIN: %w", err)
	}
	var r [8]byte
	rand.Read(r[:])
	tok.PINFile = filepath.Join(h.dir, "pin-"+hex.EncodeToString(r[:]))
	if err := os.WriteFile(tok.PINFile, []byte(pin+"\n"), 0o600); err != nil {
		return nil, err
	}
	return tok, nil
}

func (tok *Token) slot() (uint, error) {
	slots, err := tok.h.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11test: C_GetSlotList: %w", err)
	}
	for _, s := range slots {
		if ti, err := tok.h.ctx.GetTokenInfo(s); err == nil && ti.Label == tok.Label {
			return s, nil
		}
	}
	return 0, fmt.Errorf("pkcs11test: no token %q", tok.Label)
}

// URI returns the anchor URI of the key with label on this token, with the PIN from PINFile.
func (tok *Token) URI(label string) string {
	return "pkcs11:token=" + tok.Label + ";object=" + label + "?module-path=" + ModulePath + "&pin-source=file:" + tok.PINFile
}

// Do runs f on a new read-write session logged in as the user, then closes the session (when no
// other session of this process is open on the token, that logs the token out). A token already
// logged in by a provider of this process is used as it is.
func (tok *Token) Do(f func(ctx *p11.Ctx, s p11.SessionHandle) error) error {
	tok.h.mu.Lock()
	defer tok.h.mu.Unlock()
	slot, err := tok.slot()
	if err != nil {
		return err
	}
	ctx := tok.h.ctx
	s, err := ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("pkcs11test: C_OpenSession: %w", err)
	}
	defer ctx.CloseSession(s)
	if err := ctx.Login(s, p11.CKU_USER, tok.PIN); err != nil && !errors.Is(err, p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)) {
		return fmt.Errorf("pkcs11test: C_Login: %w", err)
	}
	return f(ctx, s)
}

// KeyTemplate is the key the pkcs11 anchor requires (see its package doc): a sensitive,
// non-extractable AES-256 token key that may encrypt and decrypt, with label.
func KeyTemplate(label string) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
}

// GenerateKey makes a key with C_GenerateKey(CKM_AES_KEY_GEN) from KeyTemplate(label); changes
// (by attribute type) replace the template's attributes.
func (tok *Token) GenerateKey(t testing.TB, label string, changes ...*p11.Attribute) {
	t.Helper()
	tmpl := KeyTemplate(label)
	for _, c := range changes {
		for i, a := range tmpl {
			if a.Type == c.Type {
				tmpl[i] = c
			}
		}
	}
	err := tok.Do(func(ctx *p11.Ctx, s p11.SessionHandle) error {
		_, err := ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl)
		return err
	})
	if err != nil {
		t.Fatalf("pkcs11test: C_GenerateKey: %v", err)
	}
}

// NewKey generates a key (as GenerateKey) with a fresh random label and returns the label.
func (tok *Token) NewKey(t testing.TB, changes ...*p11.Attribute) string {
	t.Helper()
	var r [8]byte
	rand.Read(r[:])
	label := "root-" + hex.EncodeToString(r[:])
	tok.GenerateKey(t, label, changes...)
	return label
}

// findKey returns the one secret key with label.
func findKey(ctx *p11.Ctx, s p11.SessionHandle, label string) (p11.ObjectHandle, error) {
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	if err := ctx.FindObjectsInit(s, tmpl); err != nil {
		return 0, err
	}
	objs, _, err := ctx.FindObjects(s, 2)
	ctx.FindObjectsFinal(s)
	if err != nil {
		return 0, err
	}
	if len(objs) != 1 {
		return 0, fmt.Errorf("pkcs11test: %d keys labelled %q", len(objs), label)
	}
	return objs[0], nil
}

// SetEnabled sets CKA_ENCRYPT and CKA_DECRYPT of the key with label to on.
func (tok *Token) SetEnabled(t testing.TB, label string, on bool) {
	t.Helper()
	err := tok.Do(func(ctx *p11.Ctx, s p11.SessionHandle) error {
		h, err := findKey(ctx, s, label)
		if err != nil {
			return err
		}
		return ctx.SetAttributeValue(s, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_ENCRYPT, on),
			p11.NewAttribute(p11.CKA_DECRYPT, on),
		})
	})
	if err != nil {
		t.Fatalf("pkcs11test: CKA_ENCRYPT/CKA_DECRYPT=%v: %v", on, err)
	}
}

// Disable forbids the key with label to encrypt and decrypt: the customer's kill switch.
func (tok *Token) Disable(t testing.TB, label string) { t.Helper(); tok.SetEnabled(t, label, false) }

// Enable allows the key with label to encrypt and decrypt again.
func (tok *Token) Enable(t testing.TB, label string) { t.Helper(); tok.SetEnabled(t, label, true) }

// Destroy destroys the key with label (C_DestroyObject): every blob sealed under it is lost.
func (tok *Token) Destroy(t testing.TB, label string) {
	t.Helper()
	err := tok.Do(func(ctx *p11.Ctx, s p11.SessionHandle) error {
		h, err := findKey(ctx, s, label)
		if err != nil {
			return err
		}
		return ctx.DestroyObject(s, h)
	})
	if err != nil {
		t.Fatalf("pkcs11test: C_DestroyObject: %v", err)
	}
}
