package region_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// wrapped is a data key and the blob it was wrapped into.
type wrapped struct {
	plain, ctx, blob []byte
}

func randKey(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// retryUnavailable calls f until it returns something other than Unavailable (a node between
// leases, a leader being elected) or the deadline passes, and returns the last error.
func retryUnavailable(t *testing.T, what string, f func() error) error {
	t.Helper()
	var err error
	clustertest.Eventually(t, 20*time.Second, what+" (without Unavailable)", func() bool {
		err = f()
		return status.Code(err) != codes.Unavailable
	})
	return err
}

// mustWrap wraps a fresh data key on node i as tenant/service, retrying while the node is
// Unavailable.
func mustWrap(t *testing.T, r *regiontest.Region, i int, tenant, service string) wrapped {
	t.Helper()
	w := wrapped{plain: randKey(t), ctx: []byte("ctx-" + tenant + "-" + service)}
	c := r.WrapClient(i, tenant, service)
	err := retryUnavailable(t, "wrap on "+r.Cfgs[i].NodeID, func() error {
		resp, err := c.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: tenant, Service: service}, Plaintext: bytes.Clone(w.plain), Context: w.ctx})
		w.blob = resp.GetBlob()
		return err
	})
	if err != nil {
		t.Fatalf("Wrap on %s: %v", r.Cfgs[i].NodeID, err)
	}
	return w
}

// mustUnwrap unwraps w on node i as tenant/service and checks the plaintext, retrying while the node
// is Unavailable.
func mustUnwrap(t *testing.T, r *regiontest.Region, i int, tenant, service string, w wrapped) {
	t.Helper()
	c := r.WrapClient(i, tenant, service)
	var got []byte
	err := retryUnavailable(t, "unwrap on "+r.Cfgs[i].NodeID, func() error {
		resp, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.blob, Context: w.ctx})
		got = resp.GetPlaintext()
		return err
	})
	if err != nil {
		t.Fatalf("Unwrap on %s: %v", r.Cfgs[i].NodeID, err)
	}
	if !bytes.Equal(got, w.plain) {
		t.Fatalf("Unwrap on %s returned other bytes", r.Cfgs[i].NodeID)
	}
}

// running returns the slots of the nodes that run.
func running(r *regiontest.Region) []int {
	var out []int
	for i, n := range r.Nodes {
		if n != nil {
			out = append(out, i)
		}
	}
	return out
}

// hashes returns the state hash of every running node, by node id.
func hashes(r *regiontest.Region) map[string][32]byte {
	out := map[string][32]byte{}
	for _, i := range running(r) {
		out[r.Cfgs[i].NodeID] = r.Nodes[i].State().Hash()
	}
	return out
}

// waitSameState waits until every running node has the leader's state hash.
func waitSameState(t *testing.T, r *regiontest.Region) {
	t.Helper()
	clustertest.Eventually(t, 20*time.Second, "every node with the leader's state", func() bool {
		ld := r.Leader()
		if ld < 0 {
			return false
		}
		want := r.Nodes[ld].State().Hash()
		for _, i := range running(r) {
			if r.Nodes[i].State().Hash() != want {
				return false
			}
		}
		return true
	})
}

func createTenant(t *testing.T, admin kv1.AdminServiceClient, anchorURI, tenant string, services ...string) {
	t.Helper()
	if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "create-" + tenant, Tenant: tenant, AnchorUri: anchorURI}); err != nil {
		t.Fatalf("CreateTenant %s: %v", tenant, err)
	}
	for _, s := range services {
		if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "create-" + tenant + "-" + s, Tenant: tenant, Service: s}); err != nil {
			t.Fatalf("CreateKey %s/%s: %v", tenant, s, err)
		}
	}
}

// ctxShort is a context for one call that should answer quickly.
func ctxShort(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// proposals is how many commands node n has proposed to the Raft log (krypton_raft_proposals_total,
// every command type).
func proposals(t *testing.T, n *region.Node) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "krypton_raft_proposals_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
