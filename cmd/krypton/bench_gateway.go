package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cmd/krypton/internal/bench"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// gatewayBench holds bench's gateway flags: load a running gateway (-gateway), or one started in
// this process in front of the region (-spawn-gateway).
type gatewayBench struct {
	addr      string
	spawn     bool
	batch     int
	batchWait time.Duration
	payload   int  // -gateway-payload: bytes per Encrypt
	encrypt   bool // -op encrypt: run as datakey, each call an Encrypt of payload bytes
}

// op maps -op for the load generator: through a gateway, encrypt runs the datakey load with
// every GenerateDataKey turned into an Encrypt (the gateway makes a data key, has it wrapped,
// and seals the payload), and is reported as encrypt.
func (b *gatewayBench) op(op string) string {
	if b.enabled() && op == "encrypt" {
		b.encrypt = true
		return string(bench.OpDataKey)
	}
	return op
}

// relabel names an encrypt run's figures after what was measured.
func (b *gatewayBench) relabel(r *bench.Result) {
	if !b.encrypt {
		return
	}
	r.Config.Op, r.Total.Op = "encrypt", "encrypt"
	for i := range r.ByOp {
		r.ByOp[i].Op = "encrypt"
	}
}

func (b *gatewayBench) enabled() bool { return b.addr != "" || b.spawn }

// check validates the gateway flags against the rest of bench's.
func (b *gatewayBench) check(o *benchOptions) error {
	if !b.enabled() {
		return nil
	}
	switch {
	case b.addr != "" && b.spawn:
		return usagef("-gateway and -spawn-gateway exclude each other")
	case b.spawn && o.spawn == 0:
		return usagef("-spawn-gateway starts a gateway in front of -spawn's region; for a running region start krypton gateway and give -gateway")
	case o.op != "datakey" && o.op != "unwrap" && o.op != "encrypt":
		return usagef("-op %s: through a gateway, bench measures datakey (GenerateDataKey), encrypt and unwrap", o.op)
	case b.payload < 0 || b.payload > 4<<20:
		return usagef("-gateway-payload must be 0 to 4 MiB")
	case o.cfg.Batch != 0:
		return usagef("-batch is for the region's batch RPCs; the gateway batches by itself (-gateway-batch)")
	case b.batch < 1 || b.batch > transport.MaxBatchItems:
		return usagef("-gateway-batch must be 1 (batching off) to %d", transport.MaxBatchItems)
	}
	return nil
}

// start returns the bench target for the gateway: a running one at b.addr, or a new one in front
// of regionAddrs (with its stop function).
func (b *gatewayBench) start(ctx context.Context, cfg transport.ClientConfig, ca *pki.CA, regionAddrs []string, logw io.Writer) (kv1.WrapServiceClient, string, func(), error) {
	addr := b.addr
	stop := func() {}
	if b.spawn {
		if ca == nil {
			return nil, "", nil, errors.New("bench: -spawn-gateway needs -spawn")
		}
		srvCert, err := ca.IssueGateway(benchTenant, "gateway-bench", pki.NodeOptions{})
		if err != nil {
			return nil, "", nil, err
		}
		gc := gateway.DefaultConfig()
		gc.RegionAddrs, gc.Region = regionAddrs, devRegionName // -spawn starts a development region
		gc.Roots, gc.Certificate, gc.ServerCertificate = cfg.Roots, cfg.Certificate, srvCert.TLSCertificate()
		gc.ListenAddr = "127.0.0.1:0"
		gc.BatchSize, gc.BatchWait = b.batch, b.batchWait
		g, err := gateway.New(gc)
		if err != nil {
			return nil, "", nil, err
		}
		served := make(chan error, 1)
		go func() { served <- g.Serve() }()
		stop = func() { g.Close(); <-served }
		addr = g.Addr().String()
		fmt.Fprintf(logw, "krypton: gateway on %s in front of %d nodes (batch %d, wait %s)\n", addr, len(regionAddrs), b.batch, b.batchWait)
	}
	gcfg := cfg
	gcfg.Server = pki.Identity{Kind: pki.KindGateway}
	if id, err := pki.LeafIdentity(cfg.Certificate); err == nil {
		gcfg.Server.Tenant = id.Tenant // the gateway of the caller's tenant
	}
	conn, err := transport.Dial(ctx, addr, gcfg)
	if err != nil {
		stop()
		return nil, "", nil, err
	}
	client := gatewayWrapClient{gw: kv1.NewGatewayServiceClient(conn)}
	if b.encrypt {
		client.payload = make([]byte, b.payload)
	}
	return client, addr, func() { conn.Close(); stop() }, nil
}

// gatewayWrapClient lets bench's WrapService load generator drive a gateway: GenerateDataKey and
// Unwrap go to the gateway's methods of the same name (GenerateDataKey to Encrypt for -op
// encrypt). Wrap and BatchWrap, which bench uses only
// to check the target and to make blobs for unwrap, make data keys instead (the gateway wraps only
// keys it made). Everything else is Unimplemented, the packed RPCs included: bench refuses -batch
// with a gateway, which batches (packed) by itself.
type gatewayWrapClient struct {
	gw      kv1.GatewayServiceClient
	payload []byte // non-nil: GenerateDataKey is an Encrypt of payload
}

var errNotThroughGateway = status.Error(codes.Unimplemented, "bench: not measured through a gateway")

func (c gatewayWrapClient) GenerateDataKey(ctx context.Context, in *kv1.GenerateDataKeyRequest, opts ...grpc.CallOption) (*kv1.GenerateDataKeyResponse, error) {
	if c.payload != nil {
		if _, err := c.gw.Encrypt(ctx, &kv1.EncryptRequest{Key: in.GetKey(), Data: c.payload, Context: in.GetContext()}, opts...); err != nil {
			return nil, err
		}
		return &kv1.GenerateDataKeyResponse{}, nil
	}
	return c.gw.GenerateDataKey(ctx, in, opts...)
}

func (c gatewayWrapClient) Unwrap(ctx context.Context, in *kv1.UnwrapRequest, opts ...grpc.CallOption) (*kv1.UnwrapResponse, error) {
	return c.gw.Unwrap(ctx, in, opts...)
}

func (c gatewayWrapClient) Wrap(ctx context.Context, in *kv1.WrapRequest, opts ...grpc.CallOption) (*kv1.WrapResponse, error) {
	resp, err := c.gw.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: in.GetKey(), Context: in.GetContext()}, opts...)
	if err != nil {
		return nil, err
	}
	clear(resp.GetPlaintext())
	return &kv1.WrapResponse{Blob: resp.GetBlob(), Key: resp.GetKey()}, nil
}

func (c gatewayWrapClient) BatchWrap(ctx context.Context, in *kv1.BatchWrapRequest, opts ...grpc.CallOption) (*kv1.BatchWrapResponse, error) {
	out := &kv1.BatchWrapResponse{}
	for _, it := range in.GetItems() {
		resp, err := c.Wrap(ctx, it, opts...)
		if err != nil {
			return nil, err
		}
		out.Results = append(out.Results, &kv1.WrapResult{Result: &kv1.WrapResult_Value{Value: resp}})
	}
	return out, nil
}

func (gatewayWrapClient) Rewrap(context.Context, *kv1.RewrapRequest, ...grpc.CallOption) (*kv1.RewrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) BatchUnwrap(context.Context, *kv1.BatchUnwrapRequest, ...grpc.CallOption) (*kv1.BatchUnwrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) BatchGenerateDataKey(context.Context, *kv1.BatchGenerateDataKeyRequest, ...grpc.CallOption) (*kv1.BatchGenerateDataKeyResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) BatchRewrap(context.Context, *kv1.BatchRewrapRequest, ...grpc.CallOption) (*kv1.BatchRewrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) ListEndpoints(context.Context, *kv1.ListEndpointsRequest, ...grpc.CallOption) (*kv1.ListEndpointsResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) WatchKeyEvents(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[kv1.WatchKeyEventsRequest, kv1.KeyEvent], error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) PackedWrap(context.Context, *kv1.PackedWrapRequest, ...grpc.CallOption) (*kv1.PackedWrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) PackedUnwrap(context.Context, *kv1.PackedUnwrapRequest, ...grpc.CallOption) (*kv1.PackedUnwrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) PackedGenerateDataKey(context.Context, *kv1.PackedGenerateDataKeyRequest, ...grpc.CallOption) (*kv1.PackedGenerateDataKeyResponse, error) {
	return nil, errNotThroughGateway
}
