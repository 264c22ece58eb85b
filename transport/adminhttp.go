package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
//	/debug/pprof/*   Go's profiler
//
// It carries no TLS and no authentication, like Consul's and etcd's metrics
// ports: bind it to loopback or a management network. Nothing it serves
// holds key material (keys live in memguard; profiles show code, not data).
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
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)

	a := &AdminHTTP{
		srv: &http.Server{
			Handler:           mux,
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
	return a, nil
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
