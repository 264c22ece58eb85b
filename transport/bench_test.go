package transport

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// BenchmarkServeUnary is Krypton's own share of a unary call on the server, without gRPC and TLS:
// the interceptor steps (recovery, metrics, identity, audit, authorisation, error translation)
// around a handler that answers at once, on the context gRPC gives a call (the peer of a
// connection accepted through identifyingCreds, the incoming metadata), then the answer's
// marshalling by the codec. A unary Wrap through a region adds the handler's own work
// (BenchmarkOps in region/; docs/performance.md, "Unary wrap: region CPU per call").
//
//	go test -run '^$' -bench ServeUnary -benchmem ./transport/
func BenchmarkServeUnary(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ic := &interceptors{
		log:     orDiscard(nil),
		metrics: m,
		policy:  DefaultPolicy(),
		self:    pki.Identity{Kind: pki.KindNode, Region: "eu", NodeID: "srv"},
		audit:   func(context.Context, string, pki.Identity, codes.Code) {},
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: &identifiedTLSInfo{
		result: &identityResult{id: pki.Identity{Kind: pki.KindService, Tenant: "acme", Service: "payments"}},
	}})
	ctx = metadata.NewIncomingContext(ctx, metadata.MD{"user-agent": {"krypton"}})
	info := &grpc.UnaryServerInfo{FullMethod: kv1.WrapService_Wrap_FullMethodName}
	resp := &kv1.WrapResponse{Blob: make([]byte, 98), Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 1}}
	handler := func(ctx context.Context, req any) (any, error) {
		if _, ok := IdentityFromContext(ctx); !ok {
			b.Fatal("no identity in the handler's context")
		}
		return resp, nil
	}
	req := &kv1.WrapRequest{}
	b.ReportAllocs()
	for b.Loop() {
		out, err := ic.serveUnary(ctx, req, info, handler)
		if err != nil {
			b.Fatal(err)
		}
		bufs, err := codec{}.Marshal(out)
		if err != nil {
			b.Fatal(err)
		}
		bufs.Free()
	}
}
