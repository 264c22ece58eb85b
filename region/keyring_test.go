package region_test

import (
	"bytes"
	"fmt"
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
