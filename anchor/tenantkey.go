package anchor

import (
	"context"
	"errors"
	"fmt"

	"github.com/kryptonkms/krypton/wrap"
)

// SealTenantKey seals the tenant key k under p, bound to the Context
// {region, k's tenant, k's version}. The plaintext copy it takes from k is
// wiped before it returns.
//
//	sealed, err := anchor.SealTenantKey(ctx, p, l2, "eu-west-1")
//
// Errors: those of Provider.Seal; ErrInvalidContext for a bad region; an
// error wrapping wrap.ErrDestroyed if k has been destroyed.
func SealTenantKey(ctx context.Context, p Provider, k *wrap.TenantKey, region string) ([]byte, error) {
	id := k.ID()
	ac := Context{Region: region, Tenant: id.Tenant, Version: id.Version}
	if err := ac.Validate(); err != nil {
		return nil, err
	}
	b := k.Bytes()
	if b == nil {
		return nil, fmt.Errorf("anchor: seal tenant key %s: %w", id, wrap.ErrDestroyed)
	}
	defer clear(b)
	return p.Seal(ctx, b, ac)
}

// UnsealTenantKey unseals a blob made by SealTenantKey into a
// *wrap.TenantKey named {ac.Tenant, ac.Version}. The plaintext never
// outlives the call outside locked memory: it is wiped as soon as it has
// been copied in. The caller must Destroy the returned key.
//
// Errors: those of Provider.Unseal, and a *DeniedError with
// ReasonInvalidCiphertext if the blob opens but does not hold a tenant
// key (wrong length, all zero).
func UnsealTenantKey(ctx context.Context, p Provider, sealed []byte, ac Context) (*wrap.TenantKey, error) {
	pt, err := p.Unseal(ctx, sealed, ac)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	k, err := wrap.TenantKeyFromBytes(wrap.KeyID{Tenant: ac.Tenant, Version: ac.Version}, pt)
	if errors.Is(err, wrap.ErrLockedMemory) {
		// The node's locked memory is full, not the blob wrong: never a denial by L1.
		return nil, err
	}
	if err != nil {
		d := p.Describe()
		return nil, Deny("unseal", d.Scheme, ReasonInvalidCiphertext,
			errors.Join(errors.New("anchor: blob does not hold a tenant key"), err))
	}
	return k, nil
}
