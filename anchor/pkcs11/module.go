package pkcs11

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// A Cryptoki module may be initialised once per process (a second
// C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED) and its login
// state is per process and token, not per session. So every Provider on
// the same module path shares one *module, reference counted: the first
// acquire loads and initialises it, the last release finalises and
// unloads it.
var registry struct {
	mu      sync.Mutex         // guards modules and every module.refs
	modules map[string]*module // by module path
}

type module struct {
	path    string
	ctx     *p11.Ctx
	ownInit bool // we called C_Initialize, so we call C_Finalize
	refs    int  // guarded by registry.mu

	mu sync.Mutex // guards pins
	// pins holds, per slot, a SHA-256 of the PIN this process logged in
	// with. Login is per process: a second Provider on the same token
	// gets CKR_USER_ALREADY_LOGGED_IN whatever PIN it gives, so the PIN is
	// compared here instead, lest a wrong PIN ride on another's login.
	pins map[uint][32]byte
}

// acquire returns the shared module for path, loading and initialising it
// if no Provider holds it.
func acquire(path string) (*module, error) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if m := registry.modules[path]; m != nil {
		m.refs++
		return m, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("pkcs11: module: %w", err)
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, errors.New("pkcs11: module cannot be loaded (not a PKCS#11 library?)")
	}
	m := &module{path: path, ctx: ctx, refs: 1, ownInit: true, pins: map[uint][32]byte{}}
	if err := ctx.Initialize(); err != nil {
		if !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			ctx.Destroy()
			return nil, fmt.Errorf("pkcs11: C_Initialize: %w", err)
		}
		// Someone else in this process (another library) initialised it:
		// use it, and leave C_Finalize to them.
		m.ownInit = false
	}
	if registry.modules == nil {
		registry.modules = map[string]*module{}
	}
	registry.modules[path] = m
	return m, nil
}

// release drops one reference; the last one finalises and unloads the
// module. Every session of the caller must be closed by then.
func (m *module) release() {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	m.refs--
	if m.refs > 0 {
		return
	}
	delete(registry.modules, m.path)
	if m.ownInit {
		m.ctx.Finalize()
	}
	m.ctx.Destroy()
}

// login logs the user in on slot through session s, once per process and
// token. An empty PIN skips the login (tokens without CKF_LOGIN_REQUIRED,
// or a protected authentication path).
func (m *module) login(s p11.SessionHandle, slot uint, pin []byte) error {
	if len(pin) == 0 {
		return nil
	}
	sum := sha256.Sum256(pin)
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.ctx.Login(s, p11.CKU_USER, string(pin))
	switch {
	case err == nil:
		m.pins[slot] = sum
		return nil
	case errors.Is(err, p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)):
		if have, ok := m.pins[slot]; ok && subtle.ConstantTimeCompare(have[:], sum[:]) != 1 {
			// miekg's error carries only the return value, never the PIN.
			return fmt.Errorf("pkcs11: token is logged in with another PIN: %w", p11.Error(p11.CKR_PIN_INCORRECT))
		}
		m.pins[slot] = sum
		return nil
	}
	return fmt.Errorf("pkcs11: C_Login: %w", err)
}

// findSlot returns the slot of the token with the given label (and
// serial, if not empty), looked up by label every time: slot ids change
// when tokens are initialised or a device reconnects.
func (m *module) findSlot(sel tokenSelector) (uint, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: C_GetSlotList: %w", err)
	}
	found, n := uint(0), 0
	for _, s := range slots {
		ti, err := m.ctx.GetTokenInfo(s)
		if err != nil {
			continue // a token removed between the calls
		}
		if sel.matches(s, ti) {
			found, n = s, n+1
		}
	}
	switch n {
	case 0:
		return 0, fmt.Errorf("pkcs11: no token matches the URI: %w", p11.Error(p11.CKR_TOKEN_NOT_PRESENT))
	case 1:
		return found, nil
	}
	return 0, ErrAmbiguousToken
}

// tokenSelector is the token part of a URI.
type tokenSelector struct {
	label, serial string
	slot          uint
	hasSlot       bool
}

func (t tokenSelector) matches(slot uint, ti p11.TokenInfo) bool {
	return (t.label == "" || ti.Label == t.label) &&
		(t.serial == "" || ti.SerialNumber == t.serial) &&
		(!t.hasSlot || slot == t.slot)
}
