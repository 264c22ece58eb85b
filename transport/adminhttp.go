package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// AdminHTTPConfig configures ServeAdminHTTP.
type AdminHTTPConfig struct {
	// Gatherer is what /metrics exposes (the registry Metrics and the
	// other packages registered on). Required.
	Gatherer prometheus.Gatherer
	// Healthy, if set, decides /healthz: nil means 200 "ok", an error 503
	// "unhealthy" (the error goes to the log, not the response). Unset, the
	// process answering is healthy enough.
	Healthy func() error
	// Ready, if set, decides /readyz: nil means 200 "ready", an error 503.
	// The response names the reason only when the error is a NotReady (a
	// fixed phrase chosen by the caller, e.g. "no serving lease"); any other
	// error answers "not ready" and goes to the log, so that no error text
	// (addresses, node ids, key ids) reaches an unauthenticated client.
	// Unset, /readyz answers as /livez does.
	Ready func() error
	// Logger receives the server's errors; nil discards.
	Logger *slog.Logger

	// Pre-authentication limits: the port has no authentication, so every
	// connection is an anonymous one, and these bound what anyone who can
	// reach it holds. MaxConns bounds the connections open at once, and
	// MaxConnsPerSource those from one source address (an IPv4 address or
	// an IPv6 /64); more are closed as soon as they are accepted. Zero
	// takes DefaultAdminMaxConns and DefaultAdminMaxConnsPerSource.
	MaxConns          int
	MaxConnsPerSource int
	// IdleTimeout closes a keep-alive connection idle this long; zero
	// takes DefaultAdminIdleTimeout.
	IdleTimeout time.Duration
	// Registerer receives krypton_handshakes_refused_total{listener="http"}
	// (the connections the limits closed) and krypton_handshakes_pending
	// {listener="http"} (those open); nil does not export them.
	Registerer prometheus.Registerer
}

// Defaults of AdminHTTPConfig and the admin server's other bounds. A
// scraper holds one keep-alive connection per target, a health checker
// one at a time; a host running several of them behind one address stays
// far below the per-source cap.
const (
	DefaultAdminMaxConns          = 256
	DefaultAdminMaxConnsPerSource = 32
	DefaultAdminIdleTimeout       = 60 * time.Second
	// adminReadHeaderTimeout closes a connection that has not sent a
	// whole request header this long after it was accepted or after its
	// previous response (slowloris); adminReadTimeout and adminWriteTimeout
	// bound the rest of a request and its response (a client that never
	// reads the /metrics body).
	adminReadHeaderTimeout = 10 * time.Second
	adminReadTimeout       = 30 * time.Second
	adminWriteTimeout      = 30 * time.Second
	// adminMaxHeaderBytes is far above what a scraper sends.
	adminMaxHeaderBytes = 16 << 10
)

// NotReady is a reason /readyz gives for answering 503: a short fixed
// phrase, the only error text the unauthenticated admin port ever shows.
type NotReady string

func (r NotReady) Error() string { return string(r) }

// AdminHTTP is the plain-HTTP admin endpoint of a Krypton process:
//
//	/metrics         Prometheus exposition of the Gatherer
//	/livez           liveness: 200 "ok" while the process's loops run (Healthy)
//	/healthz         the same as /livez (kept for existing checks)
//	/readyz          readiness: 200 "ready" while the process can serve (Ready),
//	                 503 and a short reason (a NotReady) otherwise
//
// It carries no TLS and no authentication, like Consul's and etcd's metrics
// ports: bind it to loopback or a management network. Nothing it serves
// holds a secret. The profiler is not here: /debug/pprof/cmdline showed the
// process's argv to anyone who could reach the port, and profiles are an
// operator's tool, so ServePprof serves them on a listener of their own,
// to operator certificates only.
type AdminHTTP struct {
	addr  string
	srv   *http.Server
	conns *netutil.HandshakeListener // the listener's pre-authentication limits
	log   *slog.Logger
	done  chan struct{}

	mu   sync.Mutex // guards shut
	shut bool
}

// ServeAdminHTTP starts serving the admin endpoint on ln, in the background,
// until Shutdown. It owns ln from then on, and wraps it in the limits of
// cfg (netutil.LimitHandshakes, with no handshake timer: no connection
// ever authenticates here, so each one holds a slot of its source until it
// closes, and the server's timeouts bound how long that is: a silent or
// slow connection ReadHeaderTimeout, an idle keep-alive IdleTimeout).
func ServeAdminHTTP(ln net.Listener, cfg AdminHTTPConfig) (*AdminHTTP, error) {
	if cfg.Gatherer == nil {
		return nil, errors.New("transport: AdminHTTPConfig.Gatherer is required")
	}
	log := orDiscard(cfg.Logger)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	live := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Healthy != nil {
			if err := cfg.Healthy(); err != nil {
				log.Warn("transport: unhealthy", "error", err)
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("unhealthy\n"))
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /healthz", live)
	mux.HandleFunc("GET /livez", live)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ready := cfg.Ready
		if ready == nil {
			live(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			reason := "not ready"
			if nr, ok := err.(NotReady); ok {
				reason = string(nr)
			} else {
				log.Warn("transport: not ready", "error", err)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(reason + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultAdminIdleTimeout
	}
	maxConns, perSource := cfg.MaxConns, cfg.MaxConnsPerSource
	if maxConns <= 0 {
		maxConns = DefaultAdminMaxConns
	}
	if perSource <= 0 {
		perSource = DefaultAdminMaxConnsPerSource
	}
	hl := netutil.LimitHandshakes(ln, netutil.HandshakeLimits{
		Listener:            "http",
		MaxPending:          maxConns,
		MaxPendingPerSource: perSource,
		HandshakeTimeout:    -1,
		Registerer:          cfg.Registerer,
	})
	a := serveHTTP(hl, &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: adminReadHeaderTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    adminMaxHeaderBytes,
	}, log)
	a.conns = hl
	return a, nil
}

// PprofConfig configures ServePprof.
type PprofConfig struct {
	// Roots are the CAs whose operator certificates are accepted, and
	// Certificate the server's own: the node's, as on its gRPC API.
	// Required.
	Roots       *x509.CertPool
	Certificate tls.Certificate
	// Source, if set, replaces Roots and Certificate, read at every
	// handshake (pki.Source.Server).
	Source *pki.Source
	// Logger receives the server's errors; nil discards.
	Logger *slog.Logger
	// Registerer receives krypton_handshakes_refused_total and
	// krypton_handshakes_pending of listener "pprof"; nil does not export
	// them.
	Registerer prometheus.Registerer
}

// ServePprof serves Go's profiler (/debug/pprof/: index, heap, goroutine,
// profile, trace, symbol, ...) on ln, in the background, until Shutdown:
// over TLS 1.3 with the same mutual TLS as the AdminService, so only a
// client presenting an operator certificate of Roots completes the
// handshake (pki.RequireKind); the handler checks the identity again.
// /debug/pprof/cmdline is not served (the process's argv is nobody's
// business over the network). The listener has the pre-authentication
// limits of every TLS listener (netutil.LimitHandshakes, default limits):
// a connection is pending until its handshake completes. It is off unless a process is started with
// -pprof; docs/security.md explains the choice.
//
//	go tool pprof -tls_ca ca.pem -tls_cert operator-ops.pem -tls_key operator-ops-key.pem \
//		https://127.0.0.1:7431/debug/pprof/heap
func ServePprof(ln net.Listener, cfg PprofConfig) (*AdminHTTP, error) {
	if cfg.Source != nil {
		m := cfg.Source.Current()
		cfg.Roots, cfg.Certificate = m.Roots, m.Certificate
	}
	if cfg.Roots == nil || len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("transport: PprofConfig.Roots and Certificate are required")
	}
	log := orDiscard(cfg.Logger)
	tc := pki.ServerTLSConfig(cfg.Roots, cfg.Certificate)
	tc.VerifyConnection = pki.RequireKind(pki.KindOperator)
	if cfg.Source != nil {
		cfg.Source.Server(tc)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", http.NotFound)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	operatorOnly := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "operator certificate required", http.StatusUnauthorized)
			return
		}
		if id, err := pki.PeerIdentity(*r.TLS); err != nil || id.Kind != pki.KindOperator {
			http.Error(w, "operator certificate required", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
	// No Read or WriteTimeout: a CPU profile or trace runs for as long as
	// the operator asked (pprof refuses a duration beyond WriteTimeout).
	hl := netutil.LimitHandshakes(ln, netutil.HandshakeLimits{Listener: "pprof", Registerer: cfg.Registerer})
	a := serveHTTP(tls.NewListener(hl, tc), &http.Server{
		Handler:           operatorOnly,
		TLSConfig:         tc,
		ReadHeaderTimeout: adminReadHeaderTimeout,
		IdleTimeout:       DefaultAdminIdleTimeout,
		MaxHeaderBytes:    adminMaxHeaderBytes,
		// net/http completes the TLS handshake before it reads a request, so
		// a connection turns active only once its peer has authenticated:
		// it then leaves the pending budget.
		ConnState: func(c net.Conn, st http.ConnState) {
			if tc, ok := c.(*tls.Conn); ok && st == http.StateActive && !netutil.Authenticated(tc.NetConn()) {
				c.Close()
			}
		},
	}, log)
	a.conns = hl
	return a, nil
}

// serveHTTP serves srv on ln in the background. srv.TLSConfig, if set, is
// ln's TLS configuration (ln is then a tls.Listener already).
func serveHTTP(ln net.Listener, srv *http.Server, log *slog.Logger) *AdminHTTP {
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	a := &AdminHTTP{
		addr: ln.Addr().String(),
		srv:  srv,
		log:  log,
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("transport: admin HTTP server stopped", "error", err)
		}
	}()
	return a
}

// Addr is the address the endpoint listens on.
func (a *AdminHTTP) Addr() string { return a.addr }

// Shutdown stops the endpoint: it closes the listener, waits for requests
// in flight until ctx ends (a CPU profile runs for its full duration), then
// closes what remains and returns ctx's error. Every call after the first
// returns ErrShutdown.
func (a *AdminHTTP) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	if a.shut {
		a.mu.Unlock()
		return ErrShutdown
	}
	a.shut = true
	a.mu.Unlock()

	err := a.srv.Shutdown(ctx)
	if err != nil {
		_ = a.srv.Close()
	}
	<-a.done
	return err
}
