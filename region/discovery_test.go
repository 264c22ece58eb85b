package region_test

import (
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestListEndpoints: any node lists every node's API address; its word about itself is whether it
// holds a serving lease, about the others what gossip says; a killed node shows as not serving.
func TestListEndpoints(t *testing.T) {
	r := regiontest.Start(t, 3)
	c := r.WrapClient(0, "any", "caller")
	byID := func() map[string]*kv1.Endpoint {
		resp, err := c.ListEndpoints(ctxT(t), &kv1.ListEndpointsRequest{})
		if err != nil {
			t.Fatalf("ListEndpoints: %v", err)
		}
		if resp.GetNodeId() != "node-1" || resp.GetRegion() != "test" {
			t.Fatalf("answered by %q of region %q", resp.GetNodeId(), resp.GetRegion())
		}
		out := map[string]*kv1.Endpoint{}
		for _, e := range resp.GetEndpoints() {
			out[e.GetNodeId()] = e
		}
		return out
	}
	clustertest.Eventually(t, 20*time.Second, "three endpoints", func() bool { return len(byID()) == 3 })
	eps := byID()
	for i, cfg := range r.Cfgs {
		e := eps[cfg.NodeID]
		want := kv1.EndpointStatus_ENDPOINT_STATUS_ALIVE
		if i == 0 {
			want = kv1.EndpointStatus_ENDPOINT_STATUS_SERVING
		}
		if e.GetAddress() != cfg.RPCAddr || e.GetStatus() != want || !e.GetVoter() {
			t.Errorf("%s: %v, want address %s, %v, voter", cfg.NodeID, e, cfg.RPCAddr, want)
		}
	}
	r.Kill(2)
	clustertest.Eventually(t, 20*time.Second, "node-3 not serving", func() bool {
		return byID()["node-3"].GetStatus() == kv1.EndpointStatus_ENDPOINT_STATUS_NOT_SERVING
	})
}
