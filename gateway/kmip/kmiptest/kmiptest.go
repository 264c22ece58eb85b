// Package kmiptest supports tests of the KMIP front end: Keys, an
// implementation of kmip.Keys that wraps data keys with the real wrap
// package under one service key (L3) per identity, held in memory as a
// region node holds them.
package kmiptest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/wrap"
)

// ErrRefused is returned for an identity whose keys Refuse has revoked.
var ErrRefused = errors.New("kmiptest: key refused")

// Keys wraps and unwraps with real AES-256-GCM under per-identity service
// keys. Errors for refused identities wrap ErrRefused and, if set, Refusal.
type Keys struct {
	// Refusal is wrapped into the error of a refused identity (for
	// example kmip.ErrKeyRefused), so that tests see how the server maps
	// it.
	Refusal error

	mu      sync.Mutex
	l3      map[string]*wrap.ServiceKey
	refused map[string]bool

	// Generated, Wrapped and Unwrapped count successful calls.
	Generated, Wrapped, Unwrapped atomic.Int64
}

// NewKeys returns an empty Keys; call Close to destroy its service keys.
func NewKeys() *Keys {
	return &Keys{l3: map[string]*wrap.ServiceKey{}, refused: map[string]bool{}}
}

func (k *Keys) serviceKey(id pki.Identity) (*wrap.ServiceKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	name := id.Tenant + "/" + id.Service
	if k.refused[name] {
		return nil, errors.Join(ErrRefused, k.Refusal)
	}
	if l3, ok := k.l3[name]; ok {
		return l3, nil
	}
	l3, err := wrap.NewServiceKey(wrap.KeyID{Tenant: id.Tenant, Service: id.Service, Version: 1})
	if err != nil {
		return nil, err
	}
	k.l3[name] = l3
	return l3, nil
}

// GenerateDataKey implements kmip.Keys.
func (k *Keys) GenerateDataKey(_ context.Context, owner pki.Identity, aad []byte) ([]byte, []byte, error) {
	l3, err := k.serviceKey(owner)
	if err != nil {
		return nil, nil, err
	}
	dk := wrap.NewDataKey()
	defer dk.Destroy()
	blob, err := l3.Wrap(dk, aad)
	if err != nil {
		return nil, nil, err
	}
	k.Generated.Add(1)
	return dk.Bytes(), blob, nil
}

// WrapKey implements kmip.Keys.
func (k *Keys) WrapKey(_ context.Context, owner pki.Identity, plaintext, aad []byte) ([]byte, error) {
	l3, err := k.serviceKey(owner)
	if err != nil {
		return nil, err
	}
	dk, err := wrap.DataKeyFromBytes(bytes.Clone(plaintext)) // it wipes its argument
	if err != nil {
		return nil, err
	}
	defer dk.Destroy()
	blob, err := l3.Wrap(dk, aad)
	if err != nil {
		return nil, err
	}
	k.Wrapped.Add(1)
	return blob, nil
}

// Unwrap implements kmip.Keys.
func (k *Keys) Unwrap(_ context.Context, owner pki.Identity, wrapped, aad []byte) ([]byte, error) {
	l3, err := k.serviceKey(owner)
	if err != nil {
		return nil, err
	}
	dk, err := l3.Unwrap(wrapped, aad)
	if err != nil {
		return nil, err
	}
	defer dk.Destroy()
	k.Unwrapped.Add(1)
	return dk.Bytes(), nil
}

// Refuse makes every later call for tenant/service fail, as a region does
// once the service key is revoked.
func (k *Keys) Refuse(tenant, service string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refused[tenant+"/"+service] = true
}

// Close destroys the service keys.
func (k *Keys) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, l3 := range k.l3 {
		l3.Destroy()
		delete(k.l3, name)
	}
}
