package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"

	"github.com/kryptonkms/krypton/internal/pki"
)

// ClientConfig configures Dial.
type ClientConfig struct {
	// Roots are the CAs the server's certificate must chain to. Required.
	Roots *x509.CertPool
	// Certificate is the client's certificate and key: a service, operator
	// or node certificate, which decides what the client may call. It may
	// be empty when Token is set.
	Certificate tls.Certificate
	// Token, if set, sends an OIDC bearer token with every call; the
	// server then authenticates the caller by the token (operator RPCs
	// only; see ServerConfig.OIDC), with or without a certificate.
	Token TokenSource
	// ServerName is the name the server's certificate must carry; empty
	// means the host of the address dialled.
	ServerName string
	// Server is who the server must be: its Kind (required) and, where the
	// caller knows them, its Region, NodeID, or for a gateway its Tenant
	// (pki.Identity.Check). A chain of the right CA and a name that matches
	// are not enough: every node, gateway and governance certificate of a
	// development CA carries 127.0.0.1, so without this a gateway's
	// certificate could pose as a region node or governance. E.g.
	// {Kind: pki.KindNode, Region: "eu-1"} to call a region,
	// {Kind: pki.KindGovernance} to call governance, {Kind: pki.KindGateway,
	// Tenant: "acme"} to call acme's gateway.
	Server pki.Identity
	// Source, if set, replaces Roots and Certificate: each new connection
	// (a reconnect included) presents the certificate and trusts the CA
	// pool it holds then, so a reloaded certificate (pki.Reloader) is used
	// without a restart; connections already open keep theirs.
	Source *pki.Source

	// MaxMsgSize bounds one message sent or received, in bytes; 0 means
	// DefaultMaxMsgSize.
	MaxMsgSize int
	// KeepaliveTime is how long the connection may be idle before the
	// client pings the server; 0 means 30 s. Servers made by NewServer
	// disconnect a client that pings more often than every 10 s.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long the client waits for a ping's answer
	// before it considers the connection dead; 0 means 10 s.
	KeepaliveTimeout time.Duration
	// TracerProvider, if set, traces every call (an OpenTelemetry client span) and sends its W3C
	// trace context in the call's metadata. Nil, the default: no stats handler, no cost.
	TracerProvider trace.TracerProvider
	// WaitReady makes Dial wait, until ctx ends, for the connection to be
	// established, and fail if it cannot be (a refused handshake, say).
	// Without it Dial returns at once and connects on the first call, as
	// grpc.NewClient does.
	WaitReady bool
}

// LoadClientConfig reads a client configuration from PEM files: the CA
// certificate(s) to trust, and the client's certificate and private key
// (as `krypton certs` writes them). The CLI and nodes use it; the caller
// then sets Server to the server it dials.
func LoadClientConfig(caPath, certPath, keyPath string) (ClientConfig, error) {
	roots, err := pki.LoadCertPool(caPath)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("transport: loading CA: %w", err)
	}
	cert, err := pki.LoadCertificate(certPath, keyPath)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("transport: loading client certificate: %w", err)
	}
	return ClientConfig{Roots: roots, Certificate: cert.TLSCertificate()}, nil
}

// Validate reports the first unusable field of c, by name.
func (c ClientConfig) Validate() error {
	switch {
	case c.Roots == nil:
		return errors.New("transport: ClientConfig.Roots is required")
	case c.Server.Kind == 0:
		return errors.New("transport: ClientConfig.Server is required: the kind of server dialled " +
			"(pki.KindNode for a region, pki.KindGovernance, pki.KindGateway)")
	case c.Token == nil && (len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil):
		return errors.New("transport: ClientConfig.Certificate is required (or a Token)")
	case len(c.Certificate.Certificate) > 0 && c.Certificate.PrivateKey == nil:
		return errors.New("transport: ClientConfig.Certificate has no private key")
	case c.MaxMsgSize < 0:
		return errors.New("transport: ClientConfig.MaxMsgSize must not be negative")
	case c.KeepaliveTime < 0 || c.KeepaliveTimeout < 0:
		return errors.New("transport: ClientConfig.Keepalive* must not be negative")
	}
	return nil
}

// ReconnectParams is how every Krypton connection (node to node, gateway to
// region, region to governance, the client library) reconnects after it
// loses its server: gRPC's default backoff grows by 1.6 per failed attempt
// up to 120 s, so a client that saw a node down for half a minute waited
// another ten seconds or more after the node was back. Here the delay starts
// at 200 ms and stays under 3 s (±20% jitter), so a restarted node is
// reached again within about 3.6 s; an attempt that gets no answer (a
// black-holed address) is given 5 s before the next.
func ReconnectParams() grpc.ConnectParams {
	return grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  200 * time.Millisecond,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   3 * time.Second,
		},
		MinConnectTimeout: 5 * time.Second,
	}
}

// Dial returns a client connection to addr (host:port) with mutual TLS,
// keepalive, a bounded reconnect backoff (ReconnectParams), and message
// size limits matching the servers'. Calls fail
// fast (no wait-for-ready) so that a caller such as the gateway can try
// another node; a refused TLS handshake surfaces on a call as
// codes.Unavailable. ctx bounds only the wait of WaitReady.
//
// The caller closes the connection.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*grpc.ClientConn, error) {
	if cfg.Source != nil {
		m := cfg.Source.Current()
		cfg.Roots, cfg.Certificate = m.Roots, m.Certificate
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxMsgSize == 0 {
		cfg.MaxMsgSize = DefaultMaxMsgSize
	}
	if cfg.KeepaliveTime == 0 {
		cfg.KeepaliveTime = 30 * time.Second
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = 10 * time.Second
	}
	tlsCfg := pki.ClientTLSConfig(cfg.Roots, cfg.Certificate, cfg.ServerName)
	tlsCfg.VerifyConnection = pki.RequirePeer(cfg.Server)
	var extra []grpc.DialOption
	if cfg.Token != nil {
		extra = append(extra, grpc.WithPerRPCCredentials(tokenCredentials{cfg.Token}))
	}
	if cfg.TracerProvider != nil {
		extra = append(extra, clientTracing(cfg.TracerProvider))
	}
	if len(cfg.Certificate.Certificate) == 0 {
		tlsCfg.Certificates = nil // a token-only client presents no certificate
	}
	// Windows and buffers stay gRPC's defaults: see NewServer for what was
	// measured.
	creds := credentials.NewTLS(tlsCfg)
	if cfg.Source != nil {
		creds = &sourceCreds{TransportCredentials: creds, src: cfg.Source, base: tlsCfg}
	}
	conn, err := grpc.NewClient(addr, append(extra,
		grpc.WithTransportCredentials(creds),
		experimental.WithBufferPool(bufferPool), // see bufferPool
		grpc.WithConnectParams(ReconnectParams()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.KeepaliveTime,
			Timeout:             cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.MaxMsgSize),
			grpc.MaxCallSendMsgSize(cfg.MaxMsgSize),
			grpc.ForceCodecV2(codec{}), // see codec
		),
	)...)
	if err != nil {
		return nil, fmt.Errorf("transport: dialing %s: %w", addr, err)
	}
	if !cfg.WaitReady {
		return conn, nil
	}
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return conn, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			_ = conn.Close()
			return nil, fmt.Errorf("transport: connecting to %s: connection %s", addr, s)
		}
		if !conn.WaitForStateChange(ctx, s) {
			_ = conn.Close()
			return nil, fmt.Errorf("transport: connecting to %s: %w", addr, ctx.Err())
		}
	}
}

// sourceCreds are client TLS credentials that take a fresh configuration from a pki.Source for
// every handshake (pki.Source.Client), so that a reconnect presents the certificate, and trusts
// the CA pool, in use now. The TLS itself is grpc's (credentials.NewTLS).
type sourceCreds struct {
	credentials.TransportCredentials // Info, ServerHandshake
	src                              *pki.Source
	base                             *tls.Config
}

func (c *sourceCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(c.src.Client(c.base)).ClientHandshake(ctx, authority, raw)
}

func (c *sourceCreds) Clone() credentials.TransportCredentials {
	return &sourceCreds{TransportCredentials: c.TransportCredentials.Clone(), src: c.src, base: c.base.Clone()}
}

//nolint:staticcheck // part of the interface
func (c *sourceCreds) OverrideServerName(name string) error {
	c.base.ServerName = name
	return c.TransportCredentials.OverrideServerName(name) //nolint:staticcheck
}
