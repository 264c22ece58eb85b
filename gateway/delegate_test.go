package gateway_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// regionWraps is how many wrap calls the gateway has sent to region nodes, of every form.
func regionWraps(t *testing.T, g *gateway.Gateway) float64 {
	n := 0.0
	for _, m := range []string{"Wrap", "PackedWrap", "BatchWrap"} {
		n += counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": m})
	}
	return n
}

// TestDelegatedDataKeys: with a delegated wrapping key (the default), the gateway makes and wraps
// data keys with no region call, and every node of the region opens what it made, with the
// context and only with it.
func TestDelegatedDataKeys(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)

	type made struct{ pt, blob, ctx []byte }
	var keys []made
	clustertest.Eventually(t, 30*time.Second, "a burst of 100 data keys made without a region wrap", func() bool {
		before, delegated := regionWraps(t, g), counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil)
		keys = keys[:0]
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 25 {
					ctx := fmt.Appendf(nil, "w=%d i=%d", w, i)
					pt, blob, used, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, ctx)
					if err != nil {
						t.Errorf("GenerateDataKey: %v", err)
						return
					}
					if used != (wrap.KeyID{Tenant: "acme", Service: "payments", Version: 1}) {
						t.Errorf("data key under %v", used)
					}
					mu.Lock()
					keys = append(keys, made{pt, blob, ctx})
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		return regionWraps(t, g) == before && counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil) == delegated+100
	})
	for i, k := range keys {
		node := i % len(r.Nodes)
		c := r.ServingWrapClient(node, "acme", "payments")
		resp, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: k.blob, Context: k.ctx})
		if err != nil || !bytes.Equal(resp.GetPlaintext(), k.pt) {
			t.Fatalf("key %d on %s: %v", i, r.Cfgs[node].NodeID, err)
		}
		if i < 4 {
			if _, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: k.blob, Context: []byte("another")}); err == nil {
				t.Fatalf("key %d opened under another context", i)
			}
		}
	}
}

// TestDelegatedKeysRevocation: once RevokeKey (or LockTenant) returns, no data key is made under
// the key any more: GenerateDataKeys that start after it all fail, while callers hammer the
// gateway through the revocation, and the first one fails at once.
func TestDelegatedKeysRevocation(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	setupTenant(t, r, "locked", "app")
	admin := r.AdminClient(r.WaitLeader())
	for _, tc := range []struct {
		name, tenant, service string
		cut                   func() error
	}{
		{"revoked", "acme", "payments", func() error {
			_, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "revoke", Reason: "test",
				Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}})
			return err
		}},
		{"locked", "locked", "app", func() error {
			_, err := admin.LockTenant(ctxT(t), &kv1.LockTenantRequest{RequestId: "lock", Tenant: "locked", Reason: "test"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, r, tc.tenant, tc.service, nil)
			clustertest.Eventually(t, 30*time.Second, "a data key under a delegated key", func() bool {
				if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
					t.Fatal(err)
				}
				return counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil) > 0
			})
			var (
				cutAt   atomic.Int64 // UnixNano when the revocation returned; 0 before
				stop    = make(chan struct{})
				late    atomic.Int64 // successes that started after the revocation returned
				after   atomic.Int64 // attempts that started after it
				wg      sync.WaitGroup
				started = time.Now()
			)
			for range 4 {
				wg.Go(func() {
					// Paced, so that the delegated key in use is not used up (4,096 keys) before
					// the cut: the cut must find it live.
					tick := time.NewTicker(time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						begun := time.Since(started)
						_, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, []byte("x"))
						if c := cutAt.Load(); c != 0 && int64(begun) > c {
							after.Add(1)
							if err == nil {
								late.Add(1)
							}
						}
					}
				})
			}
			clustertest.Eventually(t, 10*time.Second, "the callers running", func() bool {
				return counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil) > 40
			})
			if err := tc.cut(); err != nil {
				t.Fatal(err)
			}
			cutAt.Store(int64(time.Since(started)))
			if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("GenerateDataKey after the cut returned: %v, want FailedPrecondition", err)
			}
			clustertest.Eventually(t, 20*time.Second, "200 data-key attempts after the cut", func() bool { return after.Load() >= 200 })
			close(stop)
			wg.Wait()
			if n := late.Load(); n != 0 {
				t.Fatalf("%d of %d data keys begun after the cut returned were made", n, after.Load())
			}
		})
	}
}

// TestDelegatedWrapsFallBack: against a region that hands out no delegated keys (Config.DelegateTTL
// negative, as an older version answering Unimplemented), data keys are wrapped at the region,
// and the gateway asks for a delegated key once, not on every request.
func TestDelegatedWrapsFallBack(t *testing.T) {
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) { c.DelegateTTL = -1 }))
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	for range 200 {
		pt, blob, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := g.Unwrap(ctxT(t), blob, nil)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Unwrap: %v", err)
		}
	}
	if n := counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil); n != 0 {
		t.Fatalf("%v data keys under a delegated key the region never gave", n)
	}
	asked := counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": "DelegateWrap"})
	if refused := counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": "DelegateWrap", "code": "FailedPrecondition"}); asked == 0 || asked > 3 || refused != asked {
		t.Fatalf("asked for a delegated key %v times (%v refused): want once, remembered", asked, refused)
	}
}

// TestDelegatedKeysFollowRotation: once a rotation has been applied, the gateway's data keys go
// under the new version (the region's ROTATED key event drops the delegated key of the old one,
// which would otherwise be used until it is refreshed, 22 s after it was handed out), again under a
// delegated key.
func TestDelegatedKeysFollowRotation(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	clustertest.Eventually(t, 30*time.Second, "a data key under a delegated key", func() bool {
		if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
			t.Fatal(err)
		}
		return counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil) > 0
	})
	admin := r.AdminClient(r.WaitLeader())
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rotate", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	v2 := wrap.KeyID{Tenant: "acme", Service: "payments", Version: 2}
	clustertest.Eventually(t, 20*time.Second, "data keys under v2, made here", func() bool {
		before := counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil)
		_, _, used, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return used == v2 && counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil) > before
	})
}

// TestDelegatedKeysAfterRefusedReferences: a caller that names 64 key versions that do not exist
// (each refused by the region, which the gateway remembers) does not keep the gateway's own key
// from getting a delegated key afterwards.
func TestDelegatedKeysAfterRefusedReferences(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	for v := range 64 {
		if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{Version: uint32(100 + v)}, nil); status.Code(err) != codes.NotFound {
			t.Fatalf("v%d: %v, want NotFound", 100+v, err)
		}
	}
	clustertest.Eventually(t, 30*time.Second, "the gateway's own key made here after the refusals", func() bool {
		if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
			t.Fatal(err)
		}
		return counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil) > 0
	})
}

// TestDelegatedKeysAfterRotationUndone: a rotation the gateway heard of and a restored region state
// then undid (the FLUSH, and the new stream's snapshot) does not leave the gateway refusing every
// delegated key of the version that is current again, asking for one every 20 ms for good.
func TestDelegatedKeysAfterRotationUndone(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	made := func() float64 { return counter(t, g.Registry(), "krypton_gateway_delegated_data_keys_total", nil) }
	clustertest.Eventually(t, 30*time.Second, "a data key under a delegated key", func() bool {
		if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
			t.Fatal(err)
		}
		return made() > 0
	})
	g.RotatedForTest(wrap.KeyID{Tenant: "acme", Service: "payments", Version: 2})
	g.ResetForTest()
	v1 := wrap.KeyID{Tenant: "acme", Service: "payments", Version: 1}
	clustertest.Eventually(t, 10*time.Second, "data keys under v1 made here again", func() bool {
		before := made()
		_, _, used, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return used == v1 && made() > before
	})
}
