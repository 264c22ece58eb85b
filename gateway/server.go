package gateway

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway/kmip"
	"github.com/kryptonkms/krypton/gateway/xks"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// GatewayServiceName is the full gRPC name of the application API.
const GatewayServiceName = "krypton.v1.GatewayService"

// maxMsgSize fits the largest Encrypt request and Decrypt response with room to spare.
const maxMsgSize = 5 << 20

// Serve serves the front ends (TCP with TLS, the Unix socket, /metrics) until Close, and returns
// nil after Close or the first error of a server.
func (g *Gateway) Serve() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrShutdown
	}
	svc := &grpcService{g: g}
	n := 0
	if g.tcpLn != nil {
		srv, err := transport.NewServer(transport.ServerConfig{
			Source:         g.cfg.ServerCertSource,
			Policy:         transport.Policy{GatewayServiceName: {pki.KindService}, transport.HealthService: {}},
			Logger:         g.log,
			MaxRecvMsgSize: maxMsgSize,
			MaxSendMsgSize: maxMsgSize,
			Listener:       "gateway",
			Registerer:     g.reg,
			// Applications' trace context is a link, never the parent: a caller cannot decide
			// what the gateway records.
			TracerProvider:      g.cfg.TracerProvider,
			PublicTraceEndpoint: true,
		})
		if err != nil {
			g.mu.Unlock()
			return err
		}
		kv1.RegisterGatewayServiceServer(srv, svc)
		g.tcpSrv = srv
		n++
		go func() { g.serveErr <- srv.Serve(g.tcpLn) }()
	}
	if g.unixLn != nil {
		// The socket's file mode is its access control: no TLS, and every call acts with the
		// gateway's identity (marked in the context so the handlers can tell).
		srv := grpc.NewServer(append(transport.ServerTracing(g.cfg.TracerProvider, true),
			grpc.MaxRecvMsgSize(maxMsgSize), grpc.MaxSendMsgSize(maxMsgSize),
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				return h(context.WithValue(ctx, unixKey{}, true), req)
			}),
		)...)
		hs := health.NewServer()
		healthpb.RegisterHealthServer(srv, hs)
		kv1.RegisterGatewayServiceServer(srv, svc)
		g.unixSrv = srv
		// The socket also speaks the framed protocol (framed.go), told apart by its first bytes.
		g.framed = &framedServer{g: g, conns: map[net.Conn]struct{}{}}
		g.sniff = newSniffListener(g.unixLn, g.framed.serve)
		n++
		go func() { g.serveErr <- srv.Serve(g.sniff) }()
	}
	if g.kmipLn != nil {
		n++
		go func() { g.serveErr <- g.kmipSrv.Serve(g.kmipLn) }()
	}
	if g.xksLn != nil {
		n++
		go func() { g.serveErr <- g.xksSrv.Serve(g.xksLn) }()
	}
	if g.httpLn != nil {
		h, err := transport.ServeAdminHTTP(g.httpLn, transport.AdminHTTPConfig{Gatherer: g.reg, Registerer: g.reg, Logger: g.log, Healthy: g.healthy, Ready: g.ready})
		if err != nil {
			g.mu.Unlock()
			return err
		}
		g.http = h
	}
	g.mu.Unlock()
	for range n {
		select {
		case err := <-g.serveErr:
			if err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, kmip.ErrShutdown) && !errors.Is(err, xks.ErrShutdown) && !g.isClosed() {
				return err
			}
		case <-g.done:
			return nil
		}
	}
	<-g.done
	return nil
}

type unixKey struct{}

// grpcService implements krypton.v1.GatewayService over the Gateway's methods.
type grpcService struct {
	kv1.UnimplementedGatewayServiceServer
	g *Gateway
}

// authorize admits Unix socket callers (the socket's mode decides who they are: they act as the
// gateway's own service) and TCP callers whose service certificate names the gateway's tenant;
// for those it marks the context with the caller, whom the Gateway's methods check against the
// tenant's policy for the key and operation (permit) before acting.
func (s *grpcService) authorize(ctx context.Context) (context.Context, error) {
	if v, _ := ctx.Value(unixKey{}).(bool); v {
		return ctx, nil
	}
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return ctx, status.Error(codes.Unauthenticated, "gateway: no verified client certificate")
	}
	if id.Kind != pki.KindService || id.Tenant != s.g.id.Tenant {
		return ctx, status.Error(codes.PermissionDenied, "gateway: the caller's certificate names another tenant")
	}
	return context.WithValue(ctx, callerKey{}, id), nil
}

// finish counts a request and turns its error into a status the caller can act on.
func (s *grpcService) finish(op string, err error) error {
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = transport.ToStatus(err)
		}
	}
	s.g.metrics.request(op, err)
	if err != nil && status.Code(err) != codes.OK {
		s.g.log.Debug("request refused", "op", op, "code", status.Code(err).String())
	}
	return err
}

func (s *grpcService) Encrypt(ctx context.Context, req *kv1.EncryptRequest) (*kv1.EncryptResponse, error) {
	ctx, err := s.authorize(ctx)
	if err != nil {
		return nil, s.finish("encrypt", err)
	}
	ct, used, err := s.g.Encrypt(ctx, keyID(req.GetKey()), req.GetData(), req.GetContext())
	if err != nil {
		return nil, s.finish("encrypt", err)
	}
	s.finish("encrypt", nil)
	return &kv1.EncryptResponse{Ciphertext: ct, Key: keyRef(used)}, nil
}

func (s *grpcService) Decrypt(ctx context.Context, req *kv1.DecryptRequest) (*kv1.DecryptResponse, error) {
	ctx, err := s.authorize(ctx)
	if err != nil {
		return nil, s.finish("decrypt", err)
	}
	data, used, err := s.g.Decrypt(ctx, req.GetCiphertext(), req.GetContext())
	if err != nil {
		return nil, s.finish("decrypt", err)
	}
	s.finish("decrypt", nil)
	return &kv1.DecryptResponse{Data: data, Key: keyRef(used)}, nil
}

func (s *grpcService) GenerateDataKey(ctx context.Context, req *kv1.GenerateDataKeyRequest) (*kv1.GenerateDataKeyResponse, error) {
	ctx, err := s.authorize(ctx)
	if err != nil {
		return nil, s.finish("generate-data-key", err)
	}
	pt, blob, used, err := s.g.GenerateDataKey(ctx, keyID(req.GetKey()), req.GetContext())
	if err != nil {
		return nil, s.finish("generate-data-key", err)
	}
	s.finish("generate-data-key", nil)
	return &kv1.GenerateDataKeyResponse{Plaintext: pt, Blob: blob, Key: keyRef(used)}, nil
}

func (s *grpcService) Unwrap(ctx context.Context, req *kv1.UnwrapRequest) (*kv1.UnwrapResponse, error) {
	ctx, err := s.authorize(ctx)
	if err != nil {
		return nil, s.finish("unwrap", err)
	}
	pt, used, err := s.g.Unwrap(ctx, req.GetBlob(), req.GetContext())
	if err != nil {
		return nil, s.finish("unwrap", err)
	}
	s.finish("unwrap", nil)
	return &kv1.UnwrapResponse{Plaintext: pt, Key: keyRef(used)}, nil
}
