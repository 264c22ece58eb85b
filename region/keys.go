package region

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/tracing"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// serviceKey returns the unsealed L3 version id, opening it from the state machine's sealed blob
// under its L2 on first use. Callers check fsm's Usable first: this only finds the key.
func (n *Node) serviceKey(ctx context.Context, id wrap.KeyID) (*wrap.ServiceKey, error) {
	if k := n.keys.serviceKey(id); k != nil {
		return k, nil
	}
	// Not in the keyring: the span shows the wait to open the key (its L2 from the anchor, if
	// that is not open either).
	ctx, span := tracing.StartSpan(ctx, n.tracer, "region.open-key")
	defer span.End()
	kv, err := n.state.KeyVersion(id.Tenant, id.Service, id.Version)
	if err != nil {
		return nil, err
	}
	l2, err := n.tenantKey(ctx, id.Tenant, kv.SealedBy)
	if err != nil {
		return nil, err
	}
	k, err := l2.OpenServiceKey(id, kv.Sealed)
	if errors.Is(err, wrap.ErrDestroyed) {
		// The L2 was evicted from the keyring (or wiped) after the lookup: look it up once more.
		if l2, err = n.tenantKey(ctx, id.Tenant, kv.SealedBy); err != nil {
			return nil, err
		}
		k, err = l2.OpenServiceKey(id, kv.Sealed)
	}
	if errors.Is(err, wrap.ErrLockedMemory) {
		// No room in RLIMIT_MEMLOCK even after every keyring gave back what it could: Unavailable.
		return nil, err
	}
	if err != nil {
		// The blob is in replicated state and was sealed by this region: failing to open it
		// means corruption or a wrong L2, never a caller's mistake.
		n.log.Error("sealed service key does not open under its tenant key", "key", id.String(), "err", err)
		return nil, fmt.Errorf("region: service key %s does not open: %w", id, err)
	}
	return n.keys.putServiceKey(k), nil
}

// tenantKey returns the unsealed L2 version of a tenant. The leader unseals it through the tenant's
// anchor; a follower asks the leader for it (DESIGN.md, "The keyring"). Concurrent callers for
// the same version share one unseal or fetch.
func (n *Node) tenantKey(ctx context.Context, tenant string, version uint32) (*wrap.TenantKey, error) {
	if k := n.keys.tenantKey(tenant, version); k != nil {
		return k, nil
	}
	v, err, _ := n.flight.Do(tenant+"@"+strconv.FormatUint(uint64(version), 10), func() (any, error) {
		if k := n.keys.tenantKey(tenant, version); k != nil {
			return k, nil
		}
		var k *wrap.TenantKey
		var err error
		if n.cl.IsLeader() {
			k, err = n.unsealTenantKey(ctx, tenant, version)
		} else {
			k, err = n.fetchTenantKey(ctx, tenant, version)
		}
		if err != nil {
			return nil, err
		}
		return n.keys.putTenantKey(k), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*wrap.TenantKey), nil
}

// sealedL2 finds a tenant's sealed L2 version in the state.
func (n *Node) sealedL2(tenant string, version uint32) (fsm.Tenant, []byte, error) {
	t, err := n.state.Tenant(tenant)
	if err != nil {
		return t, nil, err
	}
	if version == 0 || int(version) > len(t.L2) {
		return t, nil, &fsm.Error{Err: fsm.ErrVersionNotFound, Tenant: tenant, Version: version}
	}
	return t, t.L2[version-1].Sealed, nil
}

// unsealTenantKey asks the tenant's L1 to open its sealed L2 version.
func (n *Node) unsealTenantKey(ctx context.Context, tenant string, version uint32) (*wrap.TenantKey, error) {
	t, sealed, err := n.sealedL2(tenant, version)
	if err != nil {
		return nil, err
	}
	p, err := n.anchors.get(ctx, t.Anchor)
	if err != nil {
		return nil, err
	}
	k, err := anchor.Retry(ctx, anchor.DefaultRetryPolicy(), func(ctx context.Context) (*wrap.TenantKey, error) {
		return anchor.UnsealTenantKey(ctx, p, sealed, anchor.Context{Region: n.cfg.Region, Tenant: tenant, Version: version})
	})
	n.countAnchor("unseal", err)
	return k, err
}

// fetchTenantKey asks the leader for an L2 version, sealed to a key pair made for this call.
func (n *Node) fetchTenantKey(ctx context.Context, tenant string, version uint32) (*wrap.TenantKey, error) {
	client, _, err := n.peers.leader()
	if err != nil {
		return nil, err
	}
	r, err := wrap.NewHandoffRecipient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := client.FetchTenantKey(ctx, &kv1.FetchTenantKeyRequest{
		NodeId:             n.cfg.NodeID,
		Tenant:             tenant,
		TenantKeyVersion:   version,
		Suite:              kv1.HpkeSuite_HPKE_SUITE_X25519_SHA256_AES256GCM,
		RecipientPublicKey: r.PublicKey(),
	})
	if err != nil {
		return nil, err
	}
	return r.Open(n.cfg.Region, n.cfg.NodeID, wrap.KeyID{Tenant: tenant, Version: version}, resp.GetEncapsulatedKey(), resp.GetCiphertext())
}

func (n *Node) countAnchor(op string, err error) {
	outcome := "ok"
	switch {
	case err == nil:
	case anchor.IsDenied(err):
		outcome = "denied"
	default:
		outcome = "transient"
	}
	n.metrics.anchorCalls.WithLabelValues(op, outcome).Inc()
}
