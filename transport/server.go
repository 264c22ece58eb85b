package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/rawio"
)

// DefaultMaxMsgSize is the largest gRPC message servers and clients accept
// and send by default: 8 MiB, so that a batch of 1024 maximal items fits
// (docs/api.md).
const DefaultMaxMsgSize = 8 << 20

// AuditFunc is told of every call the server refused: one that ended with
// PermissionDenied, Unauthenticated, InvalidArgument, FailedPrecondition or
// NotFound, whether the refusal came from the interceptors (no identity,
// wrong kind of certificate) or from the handler. id is the zero Identity
// when the caller had none. It runs on the call's goroutine after the call,
// so it should be quick (append to the audit log); it never sees a payload.
//
// A message over the size limit is refused by gRPC (ResourceExhausted)
// before any interceptor runs, so it reaches neither AuditFunc nor Metrics.
type AuditFunc func(ctx context.Context, method string, id pki.Identity, code codes.Code)

// ServerConfig configures NewServer. Zero fields take the defaults of
// DefaultServerConfig, except Roots and Certificate, which are required.
type ServerConfig struct {
	// Roots are the CAs whose client certificates the server accepts
	// (pki.LoadCertPool). A client without a certificate, or with one from
	// another CA, fails the TLS handshake.
	Roots *x509.CertPool
	// Certificate is the server's own certificate and key (a node
	// certificate for region and governance nodes).
	Certificate tls.Certificate
	// Source, if set, replaces Roots and Certificate: every handshake
	// presents the certificate and trusts the CA pool it holds then
	// (pki.Source.Server), so a reloaded certificate is used without a
	// restart and without dropping the connections open.
	Source *pki.Source

	// Policy says which kinds of certificate may call which service; nil
	// means DefaultPolicy().
	Policy Policy
	// Metrics, if set, counts calls and their latency. One Metrics may be
	// shared by several servers of a process.
	Metrics *Metrics
	// Audit, if set, is told of every refused call.
	Audit AuditFunc
	// OIDC, if set, lets operators call operator RPCs with an OIDC bearer
	// token instead of an operator certificate (see oidc.go). The server
	// then accepts TLS connections without a client certificate
	// (tls.VerifyClientCertIfGiven), but on such a connection only calls
	// with a valid token are admitted, and only to the methods of
	// TokenMethods: wrap and node services still need certificates. Nil
	// means every client must present a certificate, as before. The
	// caller owns the verifier and closes it after the server.
	OIDC *OIDCVerifier
	// Logger receives panics and errors the error table could not map; nil
	// discards.
	Logger *slog.Logger

	// MaxRecvMsgSize and MaxSendMsgSize bound one gRPC message, in bytes.
	// A larger request fails with ResourceExhausted before it is decoded.
	MaxRecvMsgSize int
	MaxSendMsgSize int
	// MaxConcurrentStreams bounds the calls in flight on one connection.
	MaxConcurrentStreams uint32
	// ConnectionTimeout bounds the TLS handshake of a new connection: the
	// listener closes a connection that has not completed it this long
	// after it was accepted (and gRPC's own deadline covers the HTTP/2
	// preface as well).
	ConnectionTimeout time.Duration

	// Pre-authentication limits (netutil.LimitHandshakes), applied by
	// Serve to its listener. MaxPendingHandshakes bounds the connections
	// still in their TLS handshake, in total, and MaxPendingPerSource per
	// source address; more are closed at once. MaxConns bounds the
	// connections that completed the handshake (zero: no limit), so a flood
	// of connections that never handshake cannot take their slots.
	// Refusals are counted in krypton_handshakes_refused_total{listener}
	// of Registerer (nil: not exported), with Listener as the label.
	MaxPendingHandshakes int
	MaxPendingPerSource  int
	MaxConns             int
	Listener             string
	Registerer           prometheus.Registerer

	// KeepaliveTime is how long a connection may be silent before the
	// server pings the client; KeepaliveTimeout how long it waits for the
	// answer before closing the connection.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// KeepaliveMinTime is the shortest ping interval the server tolerates
	// from a client (a client pinging more often is disconnected). Clients
	// made by Dial ping no more often than this default.
	KeepaliveMinTime time.Duration

	// TracerProvider, if set, traces every call (an OpenTelemetry server span, the caller's W3C
	// trace context as its parent; docs/operations.md, "Traces"). Nil, the default, installs no
	// stats handler at all: tracing off costs nothing.
	TracerProvider trace.TracerProvider
	// PublicTraceEndpoint makes callers' trace context a link of the server span, never its
	// parent, so that callers cannot decide what is recorded (the gateway's front end). Without
	// it, a caller with a verified certificate may be the parent (tracing.Sampler bounds how
	// many such calls are recorded); a token or no identity never is.
	PublicTraceEndpoint bool

	// EarlyAdmit, if set, is asked about every call whose connection's client certificate names
	// a Krypton identity, as soon as the call's headers arrive: before its request is read or
	// decoded, before any interceptor, on the connection's reader goroutine (so it must be
	// cheap and never block). A non-nil error, a *status.Status error, refuses the call with
	// that status at once (grpc.InTapHandle). The region refuses here a caller whose previous
	// call a quota refused while that quota stays exhausted (region/quota.go).
	EarlyAdmit func(method string, caller pki.Identity) error

	// Errors are rows the error translation (step 6 of NewServer) tests after its own table,
	// for the sentinels of a package transport does not link: governance passes the codes of its
	// state machine's errors (package govfsm) here.
	Errors []ErrorRow
}

// streamWorkersPerCore sizes a server's pool of stream workers (NewServer).
const streamWorkersPerCore = 64

// DefaultServerConfig returns a configuration with every default set and
// no certificates.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		MaxRecvMsgSize:       DefaultMaxMsgSize,
		MaxSendMsgSize:       DefaultMaxMsgSize,
		MaxConcurrentStreams: 1024,
		MaxPendingHandshakes: netutil.DefaultMaxPending,
		MaxPendingPerSource:  netutil.DefaultMaxPendingPerSource,
		ConnectionTimeout:    netutil.DefaultHandshakeTimeout,
		KeepaliveTime:        30 * time.Second,
		KeepaliveTimeout:     10 * time.Second,
		KeepaliveMinTime:     10 * time.Second,
	}
}

// withDefaults returns c with every zero field set from DefaultServerConfig.
func (c ServerConfig) withDefaults() ServerConfig {
	d := DefaultServerConfig()
	if c.Policy == nil {
		c.Policy = DefaultPolicy()
	}
	if c.MaxRecvMsgSize == 0 {
		c.MaxRecvMsgSize = d.MaxRecvMsgSize
	}
	if c.MaxSendMsgSize == 0 {
		c.MaxSendMsgSize = d.MaxSendMsgSize
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = d.MaxConcurrentStreams
	}
	if c.ConnectionTimeout == 0 {
		c.ConnectionTimeout = d.ConnectionTimeout
	}
	if c.MaxPendingHandshakes == 0 {
		c.MaxPendingHandshakes = d.MaxPendingHandshakes
	}
	if c.MaxPendingPerSource == 0 {
		c.MaxPendingPerSource = d.MaxPendingPerSource
	}
	if c.Listener == "" {
		c.Listener = "grpc"
	}
	if c.KeepaliveTime == 0 {
		c.KeepaliveTime = d.KeepaliveTime
	}
	if c.KeepaliveTimeout == 0 {
		c.KeepaliveTimeout = d.KeepaliveTimeout
	}
	if c.KeepaliveMinTime == 0 {
		c.KeepaliveMinTime = d.KeepaliveMinTime
	}
	return c
}

// Validate reports the first field of c (after defaults) that is not
// usable, by name.
func (c ServerConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Roots == nil:
		return errors.New("transport: ServerConfig.Roots is required")
	case len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil:
		return errors.New("transport: ServerConfig.Certificate is required")
	case c.MaxRecvMsgSize < 0:
		return errors.New("transport: ServerConfig.MaxRecvMsgSize must not be negative")
	case c.MaxSendMsgSize < 0:
		return errors.New("transport: ServerConfig.MaxSendMsgSize must not be negative")
	case c.ConnectionTimeout < 0:
		return errors.New("transport: ServerConfig.ConnectionTimeout must not be negative")
	case c.MaxPendingHandshakes < 0 || c.MaxPendingPerSource < 0 || c.MaxConns < 0:
		return errors.New("transport: ServerConfig.MaxPendingHandshakes, MaxPendingPerSource and MaxConns must not be negative")
	case c.KeepaliveTime < 0 || c.KeepaliveTimeout < 0 || c.KeepaliveMinTime < 0:
		return errors.New("transport: ServerConfig.Keepalive* must not be negative")
	}
	return nil
}

// Server is a gRPC server made by NewServer, with its health service.
// Register services on it as on a *grpc.Server (it embeds one), then Serve.
type Server struct {
	*grpc.Server
	health *health.Server
	limits netutil.HandshakeLimits

	mu   sync.Mutex // guards shut
	shut bool
}

// NewServer returns a gRPC server with mutual TLS, message and stream
// limits, keepalive, the gRPC health service, and this interceptor chain,
// outermost first, for unary and streaming calls alike:
//
//  1. panic recovery: a panic anywhere below becomes codes.Internal, and is
//     logged with its stack (and the panic value only if it is a runtime
//     error; never a payload). The server keeps serving.
//  2. metrics (if cfg.Metrics): in-flight, handled by code, latency.
//  3. identity: the verified client certificate's pki.Identity, or that of
//     the call's OIDC bearer token (cfg.OIDC), goes into the context
//     (IdentityFromContext). This step refuses nothing.
//  4. audit (if cfg.Audit): after the call, a refused code is reported
//     with the caller's identity.
//  5. authorisation: cfg.Policy by certificate kind; Unauthenticated
//     without an identity, PermissionDenied for the wrong kind; for a
//     token, TokenMethods and its roles.
//  6. error translation: the handler's error goes through ToStatus, then
//     cfg.Errors; what neither maps is logged here and goes out as Internal.
//
// Services are registered by the caller. The health service reports
// SERVING for "" (the whole server) once NewServer returns; use SetServing
// for each service.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Source != nil {
		m := cfg.Source.Current()
		cfg.Roots, cfg.Certificate = m.Roots, m.Certificate
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// The server's own identity scopes NodeService to its region; a
	// certificate naming none serves NodeService to nobody.
	self, _ := pki.LeafIdentity(cfg.Certificate)
	ic := &interceptors{
		log:     orDiscard(cfg.Logger),
		metrics: cfg.Metrics,
		policy:  cfg.Policy,
		self:    self,
		audit:   cfg.Audit,
		tokens:  cfg.OIDC,
		errors:  cfg.Errors,
	}
	tlsCfg := pki.ServerTLSConfig(cfg.Roots, cfg.Certificate)
	if cfg.OIDC != nil {
		// A certificate, if given, is still verified against Roots; a
		// connection without one can only carry token-authenticated calls.
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	if cfg.Source != nil {
		cfg.Source.Server(tlsCfg)
	}
	// Flow-control windows, buffer sizes and the shared write buffer are
	// gRPC's defaults on purpose. Measured on unary and BatchWrap/BatchUnwrap
	// of 256 calls through a region (BenchmarkOps, 16 callers, 8 interleaved
	// runs, benchstat; docs/performance.md), on server and client alike:
	// static windows of 1 MiB per stream and 8 MiB per connection (which also
	// stop gRPC's BDP pings) and 128 KiB read and write buffers changed the
	// CPU per call by nothing measurable; static 64 KiB windows cost batches
	// 8-18 % more CPU. The shared write buffer is on by default in this gRPC.
	opts := []grpc.ServerOption{
		grpc.Creds(identifyingCreds{credentials.NewTLS(tlsCfg)}),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ConnectionTimeout(cfg.ConnectionTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.KeepaliveTime,
			Timeout: cfg.KeepaliveTimeout,
		}),
		// A pool of stream workers instead of a new goroutine per call: a
		// fresh goroutine grows its stack while serving a call, and that
		// copying was ~9 % of a loaded node's CPU (docs/performance.md);
		// with 2 workers per core it was still 5 %, with 8 under 1 % at 16
		// callers. Calls beyond the pool still get a goroutine of their own:
		// at 64 callers on 2 cores, 8 per core left two thirds of the calls
		// to fresh goroutines and runtime.copystack at 6 % of all CPU again
		// (docs/performance.md, "Unary wrap: region CPU per call"), so the
		// pool covers 64 calls in flight per core. An idle worker is a parked
		// goroutine: its stack, which the collector shrinks when unused.
		grpc.NumStreamWorkers(uint32(streamWorkersPerCore * runtime.GOMAXPROCS(0))),
		experimental.BufferPool(bufferPool),
		grpc.ForceServerCodecV2(codec{}),
		grpc.ChainUnaryInterceptor(ic.unary()...),
		grpc.ChainStreamInterceptor(ic.stream()...),
	}
	if admit := cfg.EarlyAdmit; admit != nil {
		opts = append(opts, grpc.InTapHandle(func(ctx context.Context, info *tap.Info) (context.Context, error) {
			r := peerIdentity(ctx)
			if r.err != nil {
				return ctx, nil // the interceptors refuse it, with their own answer
			}
			return ctx, admit(info.FullMethodName, r.id)
		}))
	}
	opts = append(opts, ServerTracing(cfg.TracerProvider, cfg.PublicTraceEndpoint)...)
	gs := grpc.NewServer(opts...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(gs, h)
	limits := netutil.HandshakeLimits{
		Listener:            cfg.Listener,
		MaxPending:          cfg.MaxPendingHandshakes,
		MaxPendingPerSource: cfg.MaxPendingPerSource,
		HandshakeTimeout:    cfg.ConnectionTimeout,
		MaxConns:            cfg.MaxConns,
		Registerer:          cfg.Registerer,
	}
	return &Server{Server: gs, health: h, limits: limits}, nil
}

// Serve serves gRPC on l, a listener of raw TCP connections, wrapped in the
// pre-authentication limits of the configuration (netutil.LimitHandshakes;
// the TLS handshake tells the listener when a connection authenticated).
// The connections read and write with raw system calls (internal/rawio:
// measured, 9–13 % less of a node's CPU per unary wrap). Use it rather than
// the embedded grpc.Server's Serve.
func (s *Server) Serve(l net.Listener) error {
	return s.Server.Serve(netutil.LimitHandshakes(rawio.Listener(l), s.limits))
}

// SetServing sets the health status of service (a fully qualified service
// name such as WrapService, or "" for the whole server) to SERVING or
// NOT_SERVING. A region node sets WrapService NOT_SERVING while it holds no
// serving lease, so that gateways steer away before calls fail.
func (s *Server) SetServing(service string, serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus(service, st)
}

// Shutdown reports NOT_SERVING for every service, then stops the server
// gracefully: it stops accepting connections and waits for calls in flight
// until ctx ends, when it closes what remains. It returns ctx's error if it
// had to cut calls short. Every call after the first returns ErrShutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		return ErrShutdown
	}
	s.shut = true
	s.mu.Unlock()

	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Stop()
		<-done
		return ctx.Err()
	}
}

// refused reports whether code is a refusal AuditFunc must hear of.
func refused(code codes.Code) bool {
	switch code {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument,
		codes.FailedPrecondition, codes.NotFound:
		return true
	}
	return false
}

// interceptors holds what the server's interceptors share.
type interceptors struct {
	log     *slog.Logger
	metrics *Metrics
	policy  Policy
	self    pki.Identity // the server certificate's identity (see Policy.authorize)
	audit   AuditFunc
	tokens  *OIDCVerifier // nil: bearer tokens are refused
	errors  []ErrorRow    // ServerConfig.Errors
}

// unary is the unary chain as one interceptor. grpc.ChainUnaryInterceptor
// allocates a closure per link on every call (5 for the 6 steps); doing the
// steps in one function saves them. With identifyingCreds this took a unary
// Wrap through a region from 164 to 157 allocations (BenchmarkOps in
// region/, 16 callers; docs/performance.md). The steps and their order are
// those of the stream chain and of NewServer's doc.
func (ic *interceptors) unary() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{ic.serveUnary}
}

// serveUnary runs the unary steps of NewServer's chain, outermost first:
// recovery, metrics, identity, audit, authorisation, error translation.
func (ic *interceptors) serveUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	var mm *methodMetrics
	var start time.Time
	if ic.metrics != nil {
		mm = ic.metrics.forMethod(info.FullMethod)
		mm.inFlight.Inc()
		start = time.Now()
	}
	finished := false
	defer func() {
		if finished {
			return
		}
		// The handler, the audit hook or a step panicked: metrics count
		// the call as Internal, which recovery makes it; audit does not
		// hear of it (Internal is not a refusal).
		p := recover()
		if mm != nil {
			mm.done(start, nil, true)
		}
		if p == nil { // runtime.Goexit: let it unwind
			return
		}
		resp, err = nil, ic.recovered(info.FullMethod, p)
	}()
	ctx, r := ic.identify(ctx)
	if err = ic.policy.authorize(info.FullMethod, r, ic.self); err == nil {
		resp, err = handler(ctx, req)
		if err != nil {
			resp, err = nil, ic.translate(info.FullMethod, err)
		}
	}
	if ic.audit != nil {
		ic.report(ctx, info.FullMethod, status.Code(err))
	}
	finished = true
	if mm != nil {
		mm.done(start, err, false)
	}
	return resp, err
}

func (ic *interceptors) stream() []grpc.StreamServerInterceptor {
	chain := []grpc.StreamServerInterceptor{ic.recoverStream}
	if ic.metrics != nil {
		chain = append(chain, ic.metrics.stream)
	}
	chain = append(chain, ic.identityStream)
	if ic.audit != nil {
		chain = append(chain, ic.auditStream)
	}
	return append(chain, ic.authzStream, ic.errorsStream)
}

// recovered logs a recovered panic and returns the error the call ends
// with. The panic value is logged only when it is a runtime error (an index
// out of range, a nil dereference): any other value could be a handler's
// string or struct holding request bytes. The stack says where.
func (ic *interceptors) recovered(method string, p any) error {
	attrs := []any{"method", method, "panic-type", fmt.Sprintf("%T", p), "stack", string(debug.Stack())}
	if re, ok := p.(runtime.Error); ok {
		attrs = append(attrs, "panic", re.Error())
	}
	ic.log.Error("transport: panic in call", attrs...)
	return status.Error(codes.Internal, internalMessage)
}

func (ic *interceptors) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = ic.recovered(info.FullMethod, p)
		}
	}()
	return handler(srv, ss)
}

func (ic *interceptors) identityStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, _ := ic.identify(ss.Context())
	return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
}

// report calls the audit hook if code is a refusal.
func (ic *interceptors) report(ctx context.Context, method string, code codes.Code) {
	if !refused(code) {
		return
	}
	var id pki.Identity
	if r, ok := ctx.Value(identityKey{}).(*identityResult); ok && r.err == nil {
		id = r.id
	}
	ic.audit(ctx, method, id, code)
}

func (ic *interceptors) auditStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	ic.report(ss.Context(), info.FullMethod, status.Code(err))
	return err
}

func (ic *interceptors) authzStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	r, _ := ss.Context().Value(identityKey{}).(*identityResult)
	if err := ic.policy.authorize(info.FullMethod, r, ic.self); err != nil {
		return err
	}
	return handler(srv, ss)
}

// translate maps a handler's error for the wire, logging what the table
// does not know.
func (ic *interceptors) translate(method string, err error) error {
	if err == nil {
		return nil
	}
	st, mapped := toStatus(err, ic.errors)
	if !mapped {
		ic.log.Error("transport: unmapped error", "method", method, "error", err)
	}
	return st.Err()
}

func (ic *interceptors) errorsStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return ic.translate(info.FullMethod, handler(srv, ss))
}

// orDiscard returns l, or a logger that discards everything if l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
