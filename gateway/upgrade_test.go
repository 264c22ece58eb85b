package gateway_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// oldNode stands for a region node of an older version during a rolling upgrade: a WrapService on
// its own port, with mutual TLS, that forwards every call to a real node but, while old is set,
// answers the packed RPCs Unimplemented as a server built before they existed does. Its
// ListEndpoints names it in place of the node it forwards to, so that to a gateway it is that node.
type oldNode struct {
	kv1.UnimplementedWrapServiceServer
	to       kv1.WrapServiceClient
	addr     string // its own
	nodeAddr string // the real node's

	old      atomic.Bool
	downOnce atomic.Bool  // the next ListEndpoints fails, as a node restarting would
	refused  atomic.Int64 // packed calls answered Unimplemented
	packed   atomic.Int64 // packed calls forwarded
	batched  atomic.Int64 // BatchWrap and BatchUnwrap calls forwarded
}

func startOldNode(t *testing.T, r *regiontest.Region, i int, tenant, service string) *oldNode {
	t.Helper()
	cert, err := r.CA.IssueNode("old-node", pki.NodeOptions{Region: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.NewServer(transport.ServerConfig{Roots: r.CA.Pool(), Certificate: cert.TLSCertificate()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &oldNode{to: r.WrapClient(i, tenant, service), addr: ln.Addr().String(), nodeAddr: r.Cfgs[i].RPCAddr}
	n.old.Store(true)
	kv1.RegisterWrapServiceServer(srv.Server, n)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return n
}

func (n *oldNode) unimplemented(method string) error {
	n.refused.Add(1)
	return status.Errorf(codes.Unimplemented, "method %s not implemented", method)
}

func (n *oldNode) Wrap(ctx context.Context, in *kv1.WrapRequest) (*kv1.WrapResponse, error) {
	return n.to.Wrap(ctx, in)
}

func (n *oldNode) Unwrap(ctx context.Context, in *kv1.UnwrapRequest) (*kv1.UnwrapResponse, error) {
	return n.to.Unwrap(ctx, in)
}

func (n *oldNode) BatchWrap(ctx context.Context, in *kv1.BatchWrapRequest) (*kv1.BatchWrapResponse, error) {
	n.batched.Add(1)
	return n.to.BatchWrap(ctx, in)
}

func (n *oldNode) BatchUnwrap(ctx context.Context, in *kv1.BatchUnwrapRequest) (*kv1.BatchUnwrapResponse, error) {
	n.batched.Add(1)
	return n.to.BatchUnwrap(ctx, in)
}

func (n *oldNode) PackedWrap(ctx context.Context, in *kv1.PackedWrapRequest) (*kv1.PackedWrapResponse, error) {
	if n.old.Load() {
		return nil, n.unimplemented("PackedWrap")
	}
	n.packed.Add(1)
	return n.to.PackedWrap(ctx, in)
}

func (n *oldNode) PackedUnwrap(ctx context.Context, in *kv1.PackedUnwrapRequest) (*kv1.PackedUnwrapResponse, error) {
	if n.old.Load() {
		return nil, n.unimplemented("PackedUnwrap")
	}
	n.packed.Add(1)
	return n.to.PackedUnwrap(ctx, in)
}

func (n *oldNode) ListEndpoints(ctx context.Context, in *kv1.ListEndpointsRequest) (*kv1.ListEndpointsResponse, error) {
	if n.downOnce.Swap(false) {
		return nil, status.Error(codes.Unavailable, "old node: restarting")
	}
	resp, err := n.to.ListEndpoints(ctx, in)
	if err != nil {
		return nil, err
	}
	for _, ep := range resp.GetEndpoints() {
		if ep.GetAddress() == n.nodeAddr {
			ep.Address = n.addr
		}
	}
	return resp, nil
}

// TestRollingUpgrade runs a gateway against a region one of whose nodes is of an older version
// (no packed RPCs): every request succeeds, the old node is sent BatchWrap and BatchUnwrap after
// its first Unimplemented answers, the others the packed forms. Once the node is upgraded (it
// restarts: its ListEndpoints fails once, then it serves the packed forms) the gateway sends it
// the packed forms again.
func TestRollingUpgrade(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	old := startOldNode(t, r, 0, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) {
		c.RegionAddrs = []string{old.addr} // the rest is discovered through it
		c.BatchWait = 5 * time.Millisecond // batches, not lone unary calls, on a busy machine
		c.DelegateWraps = false            // the packed wraps' fallback is what is tested; see TestDelegatedWrapsFallBack
	})
	// The old node, the two others, and node 1 as the others name it.
	clustertest.Eventually(t, 20*time.Second, "the gateway sees four serving endpoints", func() bool {
		return counter(t, g.Registry(), "krypton_gateway_region_node_serving", nil) == 4
	})

	// burst sends 32 concurrent data keys, then unwraps them, and fails the test on any error.
	burst := func() {
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Go(func() {
				ctx := fmt.Appendf(nil, "w=%d", w)
				pt, blob, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, ctx)
				if err != nil {
					t.Errorf("GenerateDataKey: %v", err)
					return
				}
				got, _, err := g.Unwrap(ctxT(t), blob, ctx)
				if err != nil {
					t.Errorf("Unwrap: %v", err)
					return
				}
				if string(got) != string(pt) {
					t.Errorf("caller %d: Unwrap gave another key", w)
				}
			})
		}
		wg.Wait()
	}
	packedOK := func(method string) float64 {
		return counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": method, "code": "OK"})
	}
	clustertest.Eventually(t, 30*time.Second, "the old node served batches, the others packed ones", func() bool {
		burst()
		return old.batched.Load() >= 20 && packedOK("PackedWrap") > 0 && packedOK("PackedUnwrap") > 0
	})
	if t.Failed() {
		return
	}
	// The old node was asked the packed forms until it first said Unimplemented, and then not
	// again (a few batches in flight at once may each have learnt it; a refresh that times out on a
	// busy machine makes the gateway ask once more): were it not remembered, every batch it served
	// would have been refused first.
	refused, batched := old.refused.Load(), old.batched.Load()
	t.Logf("the old node refused %d packed calls and served %d batches", refused, batched)
	if refused == 0 || 2*refused > batched || old.packed.Load() != 0 {
		t.Errorf("the old node refused %d packed calls and forwarded %d, having served %d batches: want a few refusals, remembered",
			refused, old.packed.Load(), batched)
	}
	if n := counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"code": "Unimplemented"}); n == 0 || n > float64(refused) {
		t.Errorf("the gateway counts %v Unimplemented answers, the old node gave %d", n, refused)
	}

	// The upgrade: the node restarts (one failed ListEndpoints) and serves the packed forms.
	old.old.Store(false)
	old.downOnce.Store(true)
	clustertest.Eventually(t, 30*time.Second, "the upgraded node is sent packed calls", func() bool {
		burst()
		return old.packed.Load() > 0
	})
}
