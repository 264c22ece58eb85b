package kmip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// DefaultAddr is KMIP's registered port (IANA 5696) on every interface.
const DefaultAddr = ":5696"

// Config configures a KMIP Server.
type Config struct {
	// ClientCAs are the roots that KMIP client certificates must chain to.
	// Required: every client presents a certificate naming a Krypton
	// service identity (spiffe://krypton/tenant/<t>/service/<s>).
	ClientCAs *x509.CertPool
	// Certificate is the server's own certificate and key. Required.
	Certificate tls.Certificate
	// Source, if set, is where every handshake takes the certificate and
	// the client CAs from (pki.Source.Server), so that a reloaded
	// certificate is used without a restart; it must hold ClientCAs and
	// Certificate at start.
	Source *pki.Source
	// AllowTLS12 lets clients that cannot speak TLS 1.3 connect with TLS
	// 1.2, restricted to ECDHE key exchange and AEAD cipher suites. Off by
	// default: Krypton's minimum is TLS 1.3 (internal/pki), but KMIP's own
	// profiles name TLS 1.2, and some database KMIP clients stop there.
	AllowTLS12 bool
	// RegistryPath is the bbolt file that keeps the objects (wrapped keys
	// and attributes). Empty: objects are kept in memory and lost when the
	// server stops.
	RegistryPath string
	// MaxMessageSize is the largest request accepted, in bytes. A larger
	// one is answered with Invalid Message and the connection closed.
	// Default 1 MiB.
	MaxMessageSize int
	// MaxConns bounds concurrent authenticated client connections: a
	// connection takes a slot only once its TLS handshake has completed
	// with a service certificate, and one beyond the limit is closed then.
	// Default 1024.
	MaxConns int
	// MaxPendingHandshakes bounds the connections still in their TLS
	// handshake, in total, and MaxPendingPerSource per source address;
	// more are closed at once (krypton_handshakes_refused_total). Defaults
	// netutil.DefaultMaxPending and DefaultMaxPendingPerSource.
	MaxPendingHandshakes int
	MaxPendingPerSource  int
	// HandshakeTimeout closes a connection whose TLS handshake has not
	// completed this long after it was accepted. Default 5 seconds.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing for this long.
	// Default 5 minutes.
	IdleTimeout time.Duration
	// OpTimeout bounds each operation's calls to Keys. Default 10 seconds.
	OpTimeout time.Duration
	// Logger receives structured logs; nil uses slog.Default(). No log
	// line carries key material or request bytes.
	Logger *slog.Logger
	// Registerer receives the server's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
}

// DefaultConfig returns a Config with the defaults filled in; the caller
// sets ClientCAs and Certificate.
func DefaultConfig() Config {
	return Config{
		MaxMessageSize:       1 << 20,
		MaxConns:             1024,
		MaxPendingHandshakes: netutil.DefaultMaxPending,
		MaxPendingPerSource:  netutil.DefaultMaxPendingPerSource,
		HandshakeTimeout:     netutil.DefaultHandshakeTimeout,
		IdleTimeout:          5 * time.Minute,
		OpTimeout:            10 * time.Second,
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.ClientCAs == nil:
		return errors.New("kmip: Config.ClientCAs is required")
	case len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil:
		return errors.New("kmip: Config.Certificate is required")
	case c.MaxMessageSize < 0:
		return errors.New("kmip: Config.MaxMessageSize is negative")
	case c.MaxMessageSize > 64<<20:
		return errors.New("kmip: Config.MaxMessageSize exceeds 64 MiB")
	case c.MaxConns < 0:
		return errors.New("kmip: Config.MaxConns is negative")
	case c.MaxPendingHandshakes < 0 || c.MaxPendingPerSource < 0:
		return errors.New("kmip: Config.MaxPendingHandshakes and MaxPendingPerSource must not be negative")
	case c.HandshakeTimeout < 0:
		return errors.New("kmip: Config.HandshakeTimeout is negative")
	case c.IdleTimeout < 0:
		return errors.New("kmip: Config.IdleTimeout is negative")
	case c.OpTimeout < 0:
		return errors.New("kmip: Config.OpTimeout is negative")
	}
	return nil
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = d.MaxMessageSize
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxPendingHandshakes == 0 {
		c.MaxPendingHandshakes = d.MaxPendingHandshakes
	}
	if c.MaxPendingPerSource == 0 {
		c.MaxPendingPerSource = d.MaxPendingPerSource
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = d.OpTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server is a KMIP server over mutually authenticated TLS. Each client
// connection carries the identity of the client certificate, and every
// object belongs to the identity that created it.
type Server struct {
	cfg     Config
	keys    Keys
	reg     registry
	tls     *tls.Config
	log     *slog.Logger
	metrics *metrics
	limits  ttlv.Limits
	now     func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex // guards the fields below
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
}

// New returns a server that keeps its objects as cfg says and has keys made
// and opened by keys. It opens the registry file, if any; call Close to
// release it.
func New(cfg Config, keys Keys) (*Server, error) {
	if keys == nil {
		return nil, errors.New("kmip: Keys is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	var reg registry = newMemRegistry()
	if cfg.RegistryPath != "" {
		b, err := openBoltRegistry(cfg.RegistryPath)
		if err != nil {
			return nil, err
		}
		reg = b
	}
	tc := pki.ServerTLSConfig(cfg.ClientCAs, cfg.Certificate)
	tc.VerifyConnection = pki.RequireKind(pki.KindService)
	if cfg.AllowTLS12 {
		tc.MinVersion = tls.VersionTLS12
		// Forward secrecy and AEAD only; the TLS 1.3 suites are not
		// configurable and all qualify.
		tc.CipherSuites = []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		}
	}
	if cfg.Source != nil {
		cfg.Source.Server(tc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	lim := ttlv.DefaultLimits()
	lim.MaxSize = cfg.MaxMessageSize
	s := &Server{
		cfg:       cfg,
		keys:      keys,
		reg:       reg,
		tls:       tc,
		log:       cfg.Logger.With("component", "kmip"),
		metrics:   newMetrics(cfg.Registerer),
		limits:    lim,
		now:       time.Now,
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
	}
	return s, nil
}

// ListenAndServe listens on addr (DefaultAddr if empty) and serves until
// Close.
func (s *Server) ListenAndServe(addr string) error {
	if addr == "" {
		addr = DefaultAddr
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("kmip: listen: %w", err)
	}
	return s.Serve(l)
}

// Serve accepts plain TCP connections on l, does the TLS handshake itself,
// and serves each connection until Close. It closes l when it returns, and
// returns ErrShutdown after Close. l is wrapped in the pre-authentication
// limits (netutil.LimitHandshakes): MaxPendingHandshakes,
// MaxPendingPerSource and HandshakeTimeout before the handshake, MaxConns
// after it, per call of Serve.
func (s *Server) Serve(l net.Listener) error {
	l = netutil.LimitHandshakes(l, netutil.HandshakeLimits{
		Listener:            "kmip",
		MaxPending:          s.cfg.MaxPendingHandshakes,
		MaxPendingPerSource: s.cfg.MaxPendingPerSource,
		HandshakeTimeout:    s.cfg.HandshakeTimeout,
		MaxConns:            s.cfg.MaxConns,
		Registerer:          s.cfg.Registerer,
	})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrShutdown
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	s.log.Info("kmip: serving", "addr", l.Addr().String())
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrShutdown
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
				case <-s.ctx.Done():
				}
				continue
			}
			return fmt.Errorf("kmip: accept: %w", err)
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

// track registers c so that Close ends it, or reports false when the
// server is closed. It counts nothing against MaxConns: an unauthenticated
// connection must not take a client's slot (the listener bounds those).
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.metrics.conns.Inc()
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.metrics.conns.Dec()
}

// Close stops accepting, closes every connection, waits for their
// goroutines and closes the registry. Calls after the first return
// ErrShutdown.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrShutdown
	}
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return s.reg.close()
}

// session is one client connection's state.
type session struct {
	id     pki.Identity
	owner  string
	remote string
}

func (s *Server) serveConn(raw net.Conn) {
	remote := raw.RemoteAddr().String()
	tc := tls.Server(raw, s.tls)
	defer func() {
		// close_notify when the handshake completed; never wait long for a
		// client that does not read.
		tc.SetWriteDeadline(time.Now().Add(time.Second))
		tc.Close()
	}()
	// The listener closes raw after HandshakeTimeout too; the context makes
	// the handshake's own error say so.
	hsCtx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hsCtx)
	cancel()
	if err != nil {
		s.metrics.rejected.WithLabelValues("handshake").Inc()
		s.log.Info("kmip: TLS handshake failed", "remote", remote, "err", err)
		return
	}
	id, err := pki.PeerIdentity(tc.ConnectionState())
	if err != nil || id.Kind != pki.KindService {
		// VerifyConnection already refused these; this is a second lock.
		s.metrics.rejected.WithLabelValues("identity").Inc()
		return
	}
	if !netutil.Authenticated(raw) {
		s.metrics.rejected.WithLabelValues("too_many_connections").Inc()
		s.log.Warn("kmip: connection refused, at the connection limit", "remote", remote)
		return
	}
	sess := &session{id: id, owner: ownerKey(id), remote: remote}
	log := s.log.With("tenant", id.Tenant, "service", id.Service, "remote", remote)
	log.Debug("kmip: client connected")
	for {
		if s.cfg.IdleTimeout > 0 {
			tc.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		}
		req, err := ttlv.ReadMessage(tc, s.cfg.MaxMessageSize)
		if err != nil {
			var de *ttlv.DecodeError
			if errors.As(err, &de) {
				// The framing itself is bad: answer, then close, since the
				// next message cannot be found.
				reason := "malformed"
				if errors.Is(err, ttlv.ErrTooLarge) {
					reason = "too_large"
				}
				s.metrics.rejected.WithLabelValues(reason).Inc()
				log.Info("kmip: message refused", "err", err)
				s.write(tc, s.errorResponse(defaultVersion, ttlv.ReasonInvalidMessage, err.Error()))
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Debug("kmip: connection ends", "err", err)
			}
			return
		}
		resp := s.handleMessage(s.ctx, sess, log, req)
		clear(req)
		if !s.write(tc, resp) {
			return
		}
	}
}

// write sends resp and wipes it: a Get or Decrypt response holds key
// material or plaintext.
func (s *Server) write(c net.Conn, resp []byte) bool {
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := c.Write(resp)
	clear(resp)
	return err == nil
}
