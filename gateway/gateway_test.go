package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestRoundTripAndFailover encrypts and decrypts through the gateway against a three-node region,
// then keeps doing so from several callers while the leader is killed: no request may fail, since
// every one of them can be served by another node once the region has a leader again.
func TestRoundTripAndFailover(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	c := tcpClient(t, r, g, "acme", "payments")

	enc, err := c.Encrypt(ctxT(t), &kv1.EncryptRequest{Data: []byte("card 4111"), Context: []byte("order=1")})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if got := enc.GetKey(); got.GetTenant() != "acme" || got.GetService() != "payments" || got.GetVersion() != 1 {
		t.Fatalf("Encrypt used key %v, want acme/payments/1", got)
	}
	dec, err := c.Decrypt(ctxT(t), &kv1.DecryptRequest{Ciphertext: enc.GetCiphertext(), Context: []byte("order=1")})
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if string(dec.GetData()) != "card 4111" {
		t.Fatalf("Decrypt = %q", dec.GetData())
	}
	if _, err := c.Decrypt(ctxT(t), &kv1.DecryptRequest{Ciphertext: enc.GetCiphertext(), Context: []byte("order=2")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Decrypt with another context: %v, want InvalidArgument", err)
	}

	// Wait until the gateway knows every node, so that failover has somewhere to go.
	clustertest.Eventually(t, 20*time.Second, "gateway sees three serving nodes", func() bool {
		return counter(t, g.Registry(), "krypton_gateway_region_node_serving", nil) == 3
	})

	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		ok     atomic.Int64
		failMu sync.Mutex
		fails  []error
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				data := fmt.Appendf(nil, "caller %d message %d", w, i)
				ctx := fmt.Appendf(nil, "w=%d", w)
				enc, err := c.Encrypt(ctxT(t), &kv1.EncryptRequest{Data: data, Context: ctx})
				if err == nil {
					var dec *kv1.DecryptResponse
					dec, err = c.Decrypt(ctxT(t), &kv1.DecryptRequest{Ciphertext: enc.GetCiphertext(), Context: ctx})
					if err == nil && !bytes.Equal(dec.GetData(), data) {
						err = fmt.Errorf("caller %d got %q back, want %q", w, dec.GetData(), data)
					}
				}
				if err != nil {
					failMu.Lock()
					fails = append(fails, err)
					failMu.Unlock()
					return
				}
				ok.Add(1)
			}
		}()
	}
	// Let traffic flow, kill the leader mid-run, and let traffic flow again on the survivors.
	clustertest.Eventually(t, 20*time.Second, "traffic before the kill", func() bool { return ok.Load() >= 20 })
	ld := r.Leader()
	if ld < 0 {
		ld = r.WaitLeader()
	}
	t.Logf("killing the leader %s after %d round trips", r.Cfgs[ld].NodeID, ok.Load())
	r.Kill(ld)
	before := ok.Load()
	clustertest.Eventually(t, 30*time.Second, "traffic after the kill", func() bool {
		failMu.Lock()
		defer failMu.Unlock()
		return ok.Load() >= before+40 || len(fails) > 0
	})
	stop.Store(true)
	wg.Wait()
	for _, err := range fails {
		t.Errorf("a request failed across the failover: %v", err)
	}
	t.Logf("%d round trips, %d after the kill", ok.Load(), ok.Load()-before)
}

// TestCoalescing has 64 callers generate and open data keys at once: the gateway sends far fewer
// RPCs than it serves requests, and every caller gets its own key back.
func TestCoalescing(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) {
		c.BatchSize = 64
		c.BatchWait = 20 * time.Millisecond // generous: the callers start at once on a busy machine
	})
	// Warm up: the tenant's keys unsealed on the nodes, the gateway's connections up.
	if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
		t.Fatal(err)
	}
	rpcsBefore := counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", nil) -
		counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": "ListEndpoints"})

	const callers, rounds = 64, 4
	type result struct{ plain, blob, ctx []byte }
	results := make([][]result, callers)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for j := range rounds {
				ctx := fmt.Appendf(nil, "caller=%d round=%d", i, j)
				pt, blob, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, ctx)
				if err != nil {
					t.Errorf("caller %d: GenerateDataKey: %v", i, err)
					return
				}
				results[i] = append(results[i], result{pt, blob, ctx})
			}
			for _, res := range results[i] {
				pt, _, err := g.Unwrap(ctxT(t), res.blob, res.ctx)
				if err != nil {
					t.Errorf("caller %d: Unwrap: %v", i, err)
					return
				}
				if !bytes.Equal(pt, res.plain) {
					t.Errorf("caller %d got another caller's key back", i)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	rpcs := counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", nil) -
		counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": "ListEndpoints"}) - rpcsBefore
	requests := float64(2 * callers * rounds)
	t.Logf("%v requests, %v RPCs to the region: %.1f requests per RPC", requests, rpcs, requests/rpcs)
	if rpcs*4 > requests {
		t.Errorf("%v RPCs for %v requests: batching should send far fewer RPCs than requests", rpcs, requests)
	}
	// The batches go packed: the region's nodes all serve the packed forms.
	for method, packed := range map[string]bool{"PackedWrap": true, "PackedUnwrap": true, "BatchWrap": false, "BatchUnwrap": false} {
		if n := counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": method}); (n > 0) != packed {
			t.Errorf("%v %s calls", n, method)
		}
	}
	// Every blob opens, directly on the region, to the key its caller was given.
	wc := r.ServingWrapClient(0, "acme", "payments")
	for i := range results {
		for _, res := range results[i] {
			resp, err := wc.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: res.blob, Context: res.ctx})
			if err != nil {
				t.Fatalf("region Unwrap: %v", err)
			}
			if !bytes.Equal(resp.GetPlaintext(), res.plain) {
				t.Fatalf("caller %d: the region opens its blob to another key", i)
			}
		}
	}
}

// TestRevocation: once RevokeKey returns, the gateway refuses the key at once, with the cache off
// (the region refuses) and on (the key-event stream has wiped the cache before the fence ended).
func TestRevocation(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments", "ledger")
	setupTenant(t, r, "locked", "app")
	off := startGateway(t, r, "acme", "payments", nil)
	on := startGateway(t, r, "acme", "ledger", func(c *gateway.Config) { c.CacheEntries = 100 })
	lockedOn := startGateway(t, r, "locked", "app", func(c *gateway.Config) { c.CacheEntries = 100 })
	admin := r.AdminClient(r.WaitLeader())

	for _, tc := range []struct {
		name    string
		g       *gateway.Gateway
		service string
		cached  bool
		lock    bool // lock the tenant out instead of revoking the version
	}{
		{"cache off", off, "payments", false, false},
		{"cache on", on, "ledger", true, false},
		{"cache on, tenant locked", lockedOn, "app", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, _, err := tc.g.Encrypt(ctxT(t), wrap.KeyID{}, []byte("secret"), []byte("ctx"))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := tc.g.Decrypt(ctxT(t), ct, []byte("ctx")); err != nil {
				t.Fatal(err)
			}
			if tc.cached {
				// Served from the cache once the gateway holds a cache lease.
				clustertest.Eventually(t, 20*time.Second, "a cache hit", func() bool {
					if _, _, err := tc.g.Decrypt(ctxT(t), ct, []byte("ctx")); err != nil {
						t.Fatal(err)
					}
					return counter(t, tc.g.Registry(), "krypton_gateway_cache_hits_total", nil) > 0
				})
			}
			if tc.lock {
				if _, err := admin.LockTenant(ctxT(t), &kv1.LockTenantRequest{RequestId: "lock", Tenant: "locked", Reason: "test"}); err != nil {
					t.Fatalf("LockTenant: %v", err)
				}
			} else if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{
				RequestId: "revoke-" + tc.service, Reason: "test",
				Scope: &kv1.KeyScope{Tenant: "acme", Service: tc.service, Version: 1},
			}); err != nil {
				t.Fatalf("RevokeKey: %v", err)
			}
			// At once: no waiting, no retry.
			if _, _, err := tc.g.Decrypt(ctxT(t), ct, []byte("ctx")); status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("Decrypt after Revoke returned: %v, want FailedPrecondition", err)
			}
			if tc.cached {
				if n := counter(t, tc.g.Registry(), "krypton_gateway_cache_entries", nil); n != 0 {
					t.Errorf("%v entries still cached after the revocation", n)
				}
			}
			if tc.lock {
				// Unlocked, the tenant's keys open again, and the gateway caches them again.
				if _, err := admin.UnlockTenant(ctxT(t), &kv1.UnlockTenantRequest{RequestId: "unlock", Tenant: "locked"}); err != nil {
					t.Fatalf("UnlockTenant: %v", err)
				}
				hits := counter(t, tc.g.Registry(), "krypton_gateway_cache_hits_total", nil)
				clustertest.Eventually(t, 20*time.Second, "cache hits after the unlock", func() bool {
					// An unlock is not fenced: a node may still be applying it.
					if _, _, err := tc.g.Decrypt(ctxT(t), ct, []byte("ctx")); status.Code(err) == codes.FailedPrecondition {
						return false
					} else if err != nil {
						t.Fatalf("Decrypt after the unlock: %v", err)
					}
					return counter(t, tc.g.Registry(), "krypton_gateway_cache_hits_total", nil) > hits
				})
			}
		})
	}
}

// TestTenantIsolation: a gateway of tenant A cannot use tenant B's keys, over TCP or the Unix
// socket, and an application of tenant B cannot use gateway A at all.
func TestTenantIsolation(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "tenant-a", "app")
	setupTenant(t, r, "tenant-b", "app")
	ga := startGateway(t, r, "tenant-a", "app", func(c *gateway.Config) { c.CacheEntries = 10 })
	gb := startGateway(t, r, "tenant-b", "app", nil)

	ctB, _, err := gb.Encrypt(ctxT(t), wrap.KeyID{}, []byte("b's data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, blobB, _, err := gb.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]kv1.GatewayServiceClient{
		"tcp":  tcpClient(t, r, ga, "tenant-a", "app"),
		"unix": unixClient(t, ga),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.Decrypt(ctxT(t), &kv1.DecryptRequest{Ciphertext: ctB}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("Decrypt of tenant B's ciphertext: %v, want PermissionDenied", err)
			}
			if _, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: blobB}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("Unwrap of tenant B's blob: %v, want PermissionDenied", err)
			}
			if _, err := c.Encrypt(ctxT(t), &kv1.EncryptRequest{Key: &kv1.KeyRef{Tenant: "tenant-b", Service: "app"}, Data: []byte("x")}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("Encrypt under tenant B's key: %v, want PermissionDenied", err)
			}
			if _, err := c.GenerateDataKey(ctxT(t), &kv1.GenerateDataKeyRequest{Key: &kv1.KeyRef{Tenant: "tenant-b", Service: "app"}}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("GenerateDataKey under tenant B's key: %v, want PermissionDenied", err)
			}
			// Another service of tenant A is the region's to refuse: the gateway's certificate
			// names tenant-a/app only.
			if _, err := c.Encrypt(ctxT(t), &kv1.EncryptRequest{Key: &kv1.KeyRef{Service: "other"}, Data: []byte("x")}); status.Code(err) != codes.PermissionDenied {
				t.Errorf("Encrypt under another service's key: %v, want PermissionDenied", err)
			}
			// Its own key works.
			enc, err := c.Encrypt(ctxT(t), &kv1.EncryptRequest{Data: []byte("a's data")})
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if dec, err := c.Decrypt(ctxT(t), &kv1.DecryptRequest{Ciphertext: enc.GetCiphertext()}); err != nil || string(dec.GetData()) != "a's data" {
				t.Fatalf("Decrypt: %q, %v", dec.GetData(), err)
			}
		})
	}
	// The socket admits its owner only, unless configured otherwise.
	if fi, err := os.Stat(ga.UnixSocket()); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("Unix socket: %v, %v; want a socket with mode 0600", fi.Mode(), err)
	}
	// An application of tenant B, with a valid certificate of the same CA, at gateway A's door:
	// expecting its own tenant's gateway, it refuses gateway A's certificate before sending anything.
	cb := tcpClient(t, r, ga, "tenant-b", "app")
	if _, err := cb.Decrypt(ctxT(t), &kv1.DecryptRequest{Ciphertext: ctB}); status.Code(err) != codes.Unavailable {
		t.Errorf("tenant B's application dialling gateway A as its own: %v, want Unavailable (the handshake refused)", err)
	}
	// Knowingly calling gateway A, it is refused by the gateway.
	cb = tcpClientTo(t, r, ga, "tenant-b", "app", "tenant-a")
	if _, err := cb.Decrypt(ctxT(t), &kv1.DecryptRequest{Ciphertext: ctB}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("tenant B's application calling gateway A: %v, want PermissionDenied", err)
	}
}

// TestClose: Close wipes the cache and stops serving; a second Close returns ErrShutdown.
func TestClose(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) { c.CacheEntries = 10 })
	_, blob, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// An entry cached before the gateway's key-event stream has its snapshot is dropped with the
	// snapshot: unwrap until one stays.
	clustertest.Eventually(t, 20*time.Second, "a cached key", func() bool {
		if _, _, err := g.Unwrap(ctxT(t), blob, nil); err != nil {
			t.Fatal(err)
		}
		return counter(t, g.Registry(), "krypton_gateway_cache_hits_total", nil) > 0
	})
	if n := counter(t, g.Registry(), "krypton_gateway_cache_entries", nil); n != 1 {
		t.Fatalf("%v cache entries, want 1", n)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := counter(t, g.Registry(), "krypton_gateway_cache_entries", nil); n != 0 {
		t.Errorf("%v cache entries after Close", n)
	}
	if n := counter(t, g.Registry(), "krypton_gateway_cache_evictions_total", map[string]string{"reason": "shutdown"}); n != 1 {
		t.Errorf("%v entries wiped on shutdown, want 1", n)
	}
	if _, _, err := g.Unwrap(ctxT(t), blob, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("Unwrap after Close: %v, want Unavailable", err)
	}
	if err := g.Close(); err != gateway.ErrShutdown {
		t.Errorf("second Close: %v, want ErrShutdown", err)
	}
}

// TestRefusesNodeOfAnotherRegion: a gateway configured for region "other" refuses the nodes of
// region "test" (same CA, valid node certificates) at the handshake: nothing is sent to them, and
// every request is Unavailable.
func TestRefusesNodeOfAnotherRegion(t *testing.T) {
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) {
		c.Region = "other"
		c.MaxAttempts = 2
		c.RetryBudget = 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, _, err := g.GenerateDataKey(ctx, wrap.KeyID{}, nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("GenerateDataKey through a gateway of another region: %v, want Unavailable", err)
	}
	if n := counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"code": "OK"}); n != 0 {
		t.Errorf("%v region calls succeeded", n)
	}
	// Configured for the region, it serves.
	g = startGateway(t, r, "acme", "payments", nil)
	if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
		t.Fatalf("GenerateDataKey through a gateway of the region: %v", err)
	}
}
