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
	// Logger receives the server's errors; nil discards.
	Logger *slog.Logger
}

// AdminHTTP is the plain-HTTP admin endpoint of a Krypton process:
//
//	/metrics         Prometheus exposition of the Gatherer
//	/healthz         liveness for load balancers and orchestrators
//
// It carries no TLS and no authentication, like Consul's and etcd's metrics
// ports: bind it to loopback or a management network. Nothing it serves
// holds a secret. The profiler is not here: /debug/pprof/cmdline showed the
// process's argv to anyone who could reach the port, and profiles are an
// operator's tool, so ServePprof serves them on a listener of their own,
// to operator certificates only.
type AdminHTTP struct {
	srv  *http.Server
	log  *slog.Logger
	done chan struct{}

	mu   sync.Mutex // guards shut
	shut bool
}

// ServeAdminHTTP starts serving the admin endpoint on ln, in the background,
// until Shutdown. It owns ln from then on.
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
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
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
	})
	return serveHTTP(ln, mux, nil, log), nil
}

// PprofConfig configures ServePprof.
type PprofConfig struct {
	// Roots are the CAs whose operator certificates are accepted, and
	// Certificate the server's own: the node's, as on its gRPC API.
	// Required.
	Roots       *x509.CertPool
	Certificate tls.Certificate
	// Logger receives the server's errors; nil discards.
	Logger *slog.Logger
}

// ServePprof serves Go's profiler (/debug/pprof/: index, heap, goroutine,
// profile, trace, symbol, ...) on ln, in the background, until Shutdown:
// over TLS 1.3 with the same mutual TLS as the AdminService, so only a
// client presenting an operator certificate of Roots completes the
// handshake (pki.RequireKind); the handler checks the identity again.
// /debug/pprof/cmdline is not served (the process's argv is nobody's
// business over the network). It is off unless a process is started with
// -pprof; docs/security.md explains the choice.
//
//	go tool pprof -tls_ca ca.pem -tls_cert operator-ops.pem -tls_key operator-ops-key.pem \
//		https://127.0.0.1:7431/debug/pprof/heap
func ServePprof(ln net.Listener, cfg PprofConfig) (*AdminHTTP, error) {
	if cfg.Roots == nil || len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("transport: PprofConfig.Roots and Certificate are required")
	}
	log := orDiscard(cfg.Logger)
	tc := pki.ServerTLSConfig(cfg.Roots, cfg.Certificate)
	tc.VerifyConnection = pki.RequireKind(pki.KindOperator)
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
	return serveHTTP(tls.NewListener(ln, tc), operatorOnly, tc, log), nil
}

// serveHTTP serves h on ln in the background. tc, if set, is ln's TLS
// configuration (ln is then a tls.Listener already).
func serveHTTP(ln net.Listener, h http.Handler, tc *tls.Config, log *slog.Logger) *AdminHTTP {
	a := &AdminHTTP{
		srv: &http.Server{
			Handler:           h,
			TLSConfig:         tc,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
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
