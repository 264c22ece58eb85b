package region_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestKeyringBoundServes: a node whose keyring holds two keys of each kind serves six services in
// turn, each several times: evicted keys are opened again on their next use, and the node never
// holds more than its bound.
func TestKeyringBoundServes(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) { c.KeyringSize = 2 }))
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		t.Fatal(err)
	}
	const services = 6
	clients := make([]kv1.WrapServiceClient, services)
	node := r.Followers()[0]
	for i := range services {
		svc := fmt.Sprintf("svc%d", i)
		if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k" + svc, Tenant: "acme", Service: svc}); err != nil {
			t.Fatal(err)
		}
		clients[i] = r.WrapClient(node, "acme", svc)
	}
	waitSameState(t, r)
	for round := range 3 {
		for i, c := range clients {
			ref := &kv1.KeyRef{Tenant: "acme", Service: fmt.Sprintf("svc%d", i)}
			plain := randKey(t)
			w, err := c.Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: bytes.Clone(plain)})
			if err != nil {
				t.Fatalf("round %d, service %d: wrap: %v", round, i, err)
			}
			u, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.GetBlob()})
			if err != nil || !bytes.Equal(u.GetPlaintext(), plain) {
				t.Fatalf("round %d, service %d: unwrap: %v", round, i, err)
			}
			st := r.Nodes[node].Status()
			if st.GetKeyringServiceKeys() > 2 || st.GetKeyringTenantKeys() > 2 {
				t.Fatalf("the node holds %d service and %d tenant keys, bound 2", st.GetKeyringServiceKeys(), st.GetKeyringTenantKeys())
			}
		}
	}
}

// TestKeyringThrashNoErrors: many concurrent callers over more keys than a tiny keyring holds get
// no error: a key in use is pinned, so eviction costs a cold open, never a failed call.
func TestKeyringThrashNoErrors(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) { c.KeyringSize = 2 }))
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		t.Fatal(err)
	}
	const services, callers, calls = 12, 32, 15
	node := r.Leader()
	clients := make([]kv1.WrapServiceClient, services)
	for i := range services {
		svc := fmt.Sprintf("svc%d", i)
		if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k" + svc, Tenant: "acme", Service: svc}); err != nil {
			t.Fatal(err)
		}
		clients[i] = r.WrapClient(node, "acme", svc)
	}
	waitSameState(t, r)
	errs := make(chan error, callers*calls)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for j := range calls {
				i := (c*7 + j*5) % services
				ref := &kv1.KeyRef{Tenant: "acme", Service: fmt.Sprintf("svc%d", i)}
				plain := randKey(t)
				w, err := clients[i].Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: bytes.Clone(plain)})
				if err != nil {
					errs <- fmt.Errorf("wrap %s: %w", ref.GetService(), err)
					continue
				}
				u, err := clients[i].Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.GetBlob()})
				if err != nil || !bytes.Equal(u.GetPlaintext(), plain) {
					errs <- fmt.Errorf("unwrap %s: %v", ref.GetService(), err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n < 5 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%d of %d calls failed with a keyring of 2 over %d keys", n, 2*callers*calls, services)
	}
}

// keyringOpens is krypton_keyring_opens_total{kind} of node n.
func keyringOpens(t *testing.T, n *region.Node, kind string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "krypton_keyring_opens_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal("no krypton_keyring_opens_total{kind=" + kind + "}")
	return 0
}

// TestKeyringColdKeyOpensOnce: many concurrent callers missing one cold L3 share one open.
func TestKeyringColdKeyOpensOnce(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) { c.KeyringSize = 2 }))
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		t.Fatal(err)
	}
	node := r.Followers()[0]
	for _, svc := range []string{"cold", "a", "b", "c"} {
		if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k" + svc, Tenant: "acme", Service: svc}); err != nil {
			t.Fatal(err)
		}
	}
	waitSameState(t, r)
	for _, svc := range []string{"a", "b", "c", "a", "b", "c"} { // pushes "cold" out if it was held
		if err := retryUnavailable(t, "wrap "+svc, func() error {
			_, err := r.WrapClient(node, "acme", svc).Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: svc}, Plaintext: randKey(t)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := keyringOpens(t, r.Nodes[node], "service")
	c := r.WrapClient(node, "acme", "cold")
	var wg sync.WaitGroup
	for range 24 {
		wg.Go(func() {
			if _, err := c.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "cold"}, Plaintext: randKey(t)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := keyringOpens(t, r.Nodes[node], "service") - before; got != 1 {
		t.Fatalf("24 concurrent callers on one cold key opened it %v times, want 1", got)
	}
}
