package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kryptonkms/krypton/anchor"
	p11 "github.com/miekg/pkcs11"
)

// pool hands out the Provider's sessions, one per operation: a Cryptoki
// session is not safe for concurrent use. At most cap(sem) sessions exist;
// an operation waits for a free one (or its context).
type pool struct {
	mod   *module
	token tokenSelector
	pin   secret

	sem  chan struct{} // one token per session that may be in use
	done chan struct{} // closed by close: waiters give up

	mu     sync.Mutex // guards idle and closed
	idle   []p11.SessionHandle
	closed bool
}

func newPool(mod *module, token tokenSelector, pin secret, size int) *pool {
	return &pool{mod: mod, token: token, pin: pin, sem: make(chan struct{}, size), done: make(chan struct{})}
}

// get returns an idle session, or opens and logs in a new one.
func (p *pool) get(ctx context.Context, op string) (p11.SessionHandle, error) {
	select {
	case p.sem <- struct{}{}:
	case <-p.done:
		return 0, anchor.ErrClosed
	case <-ctx.Done():
		return 0, anchor.Transient(op, anchor.SchemePKCS11, fmt.Errorf("pkcs11: waiting for a session: %w", ctx.Err()))
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		return 0, anchor.ErrClosed
	}
	if n := len(p.idle); n > 0 {
		s := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return s, nil
	}
	p.mu.Unlock()
	s, err := p.open(op)
	if err != nil {
		<-p.sem
		return 0, err
	}
	return s, nil
}

// put gives back a session that get returned. c says what its last error
// meant for it (the zero value: healthy).
func (p *pool) put(s p11.SessionHandle, c classified) {
	defer func() { <-p.sem }()
	if c.dropSession {
		if c.closeSession {
			p.mod.ctx.CloseSession(s)
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.mod.ctx.CloseSession(s)
		return
	}
	p.idle = append(p.idle, s)
}

// open finds the token by label, opens a read-only session on it and logs
// in (once per process and token; see module.login).
func (p *pool) open(op string) (p11.SessionHandle, error) {
	slot, err := p.mod.findSlot(p.token)
	if err != nil {
		if errors.Is(err, ErrAmbiguousToken) {
			return 0, anchor.Deny(op, anchor.SchemePKCS11, anchor.ReasonKeyUnusable, err)
		}
		return 0, toAnchor(op, classify(err, false), err)
	}
	s, err := p.mod.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	if err != nil {
		err = fmt.Errorf("pkcs11: C_OpenSession: %w", err)
		return 0, toAnchor(op, classify(err, false), err)
	}
	if err := p.mod.login(s, slot, p.pin); err != nil {
		p.mod.ctx.CloseSession(s)
		return 0, toAnchor(op, classify(err, false), err)
	}
	return s, nil
}

// close waits for the sessions in use, closes them all and makes every
// later get return anchor.ErrClosed.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	p.mu.Unlock()
	for range cap(p.sem) { // every session back
		p.sem <- struct{}{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.idle {
		p.mod.ctx.CloseSession(s)
	}
	p.idle = nil
}

// secret is a PIN. It prints as "xxxxx" whatever the verb, so a Provider
// printed with %+v or logged by accident does not show it.
type secret []byte

func (secret) Format(f fmt.State, _ rune)   { f.Write([]byte("xxxxx")) }
func (secret) String() string               { return "xxxxx" }
func (secret) GoString() string             { return "xxxxx" }
func (secret) LogValue() slog.Value         { return slog.StringValue("xxxxx") }
func (secret) MarshalText() ([]byte, error) { return []byte("xxxxx"), nil }
