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

// serviceKey returns the unsealed L3 version id pinned in the keyring, and the release the caller
// calls when done with it (eviction passes a pinned key by: DESIGN.md, "The keyring"). It opens the
// key from the state machine's sealed blob under its L2 on first use; concurrent callers missing
// the same key share one open (singleflight). Callers check fsm's Usable first: this only finds
// the key.
func (n *Node) serviceKey(ctx context.Context, id wrap.KeyID) (*wrap.ServiceKey, func(), error) {
	for {
		if k, release := n.keys.acquireServiceKey(id); k != nil {
			return k, release, nil
		}
		// Only the caller whose function runs gets its key pinned by the put; the others take it
		// from the keyring on the next turn (or open it again if it was evicted meanwhile).
		var mine *wrap.ServiceKey
		var release func()
		_, err, _ := n.svcFlight.Do(id.String(), func() (any, error) {
			if mine, release = n.keys.acquireServiceKey(id); mine != nil {
				return nil, nil
			}
			k, err := n.openServiceKey(ctx, id)
			if err != nil {
				return nil, err
			}
			n.keys.svcOpens.Add(1)
			mine, release = n.keys.putServiceKeyPinned(k)
			return nil, nil
		})
		if err != nil {
			return nil, nil, err
		}
		if mine != nil {
			return mine, release, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
	}
}

// lockedMemoryWait bounds how long opening a key waits for locked memory (RLIMIT_MEMLOCK) to come
// free when every key held is pinned by a call in flight, before it answers Unavailable.
const lockedMemoryWait = 2 * time.Second

// openServiceKey opens L3 version id from its sealed blob under its L2 (pinned while it is used).
func (n *Node) openServiceKey(ctx context.Context, id wrap.KeyID) (*wrap.ServiceKey, error) {
	// Not in the keyring: the span shows the wait to open the key (its L2 from the anchor, if
	// that is not open either).
	ctx, span := tracing.StartSpan(ctx, n.tracer, "region.open-key")
	defer span.End()
	kv, err := n.state.KeyVersion(id.Tenant, id.Service, id.Version)
	if err != nil {
		return nil, err
	}
	var k *wrap.ServiceKey
	// Keys pinned by the calls in flight are not evicted, so a full budget frees up as those calls
	// end: wait for it a little (a cold key costs latency, not an error) before answering.
	wait := time.Millisecond
	deadline := time.Now().Add(lockedMemoryWait)
	for destroyed := 0; ; {
		var l2 *wrap.TenantKey
		var release func()
		l2, release, err = n.tenantKeyPinned(ctx, id.Tenant, kv.SealedBy)
		if err != nil {
			return nil, err
		}
		k, err = l2.OpenServiceKey(id, kv.Sealed)
		release()
		if errors.Is(err, wrap.ErrDestroyed) && destroyed == 0 {
			// The L2 was wiped (a pinned key is never evicted) after the lookup: look it up once more.
			destroyed++
			continue
		}
		if errors.Is(err, wrap.ErrLockedMemory) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(wait):
			}
			wait = min(2*wait, 50*time.Millisecond)
			continue
		}
		break
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
	return k, nil
}

// tenantKey returns the unsealed L2 version of a tenant (unpinned: see tenantKeyPinned).
func (n *Node) tenantKey(ctx context.Context, tenant string, version uint32) (*wrap.TenantKey, error) {
	k, release, err := n.tenantKeyPinned(ctx, tenant, version)
	if err != nil {
		return nil, err
	}
	release()
	return k, nil
}

// tenantKeyPinned returns the unsealed L2 version of a tenant pinned in the keyring, and its
// release. The leader unseals it through the tenant's anchor; a follower asks the leader for it
// (DESIGN.md, "The keyring"). Concurrent callers for the same version share one unseal or fetch.
func (n *Node) tenantKeyPinned(ctx context.Context, tenant string, version uint32) (*wrap.TenantKey, func(), error) {
	for {
		if k, release := n.keys.acquireTenantKey(tenant, version); k != nil {
			return k, release, nil
		}
		var mine *wrap.TenantKey
		var release func()
		_, err, _ := n.flight.Do(tenant+"@"+strconv.FormatUint(uint64(version), 10), func() (any, error) {
			if mine, release = n.keys.acquireTenantKey(tenant, version); mine != nil {
				return nil, nil
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
			n.keys.tenantOpens.Add(1)
			mine, release = n.keys.putTenantKeyPinned(k)
			return nil, nil
		})
		if err != nil {
			return nil, nil, err
		}
		if mine != nil {
			return mine, release, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
	}
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
