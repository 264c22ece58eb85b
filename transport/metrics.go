package transport

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LatencyBuckets are the histogram buckets of handling time, in seconds:
// from 20 µs (a wrap served from the keyring) to 1 s (a fenced revocation
// or an anchor round trip), about 2.5 apart.
var LatencyBuckets = []float64{
	20e-6, 50e-6, 100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
	100e-3, 250e-3, 500e-3, 1,
}

// Metrics are the Prometheus collectors of gRPC servers:
//
//	krypton_grpc_server_handled_total{grpc_service, grpc_method, grpc_code}
//	krypton_grpc_server_handling_seconds{grpc_service, grpc_method}
//	krypton_grpc_server_in_flight{grpc_service, grpc_method}
//
// Labels are the registered service and method names and the status code,
// nothing from a request: gRPC answers calls to unknown methods before any
// interceptor runs, so the label sets are bounded by the registered
// methods. One Metrics may serve several servers of a process.
type Metrics struct {
	handled  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

// NewMetrics creates the collectors and registers them on reg (never the
// global registry unless that is what reg is).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "krypton",
			Name:      "grpc_server_handled_total",
			Help:      "gRPC calls completed by the server, by service, method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "krypton",
			Name:      "grpc_server_handling_seconds",
			Help:      "Time from the start of a gRPC call to its end, as the server sees it.",
			Buckets:   LatencyBuckets,
		}, []string{"grpc_service", "grpc_method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "krypton",
			Name:      "grpc_server_in_flight",
			Help:      "gRPC calls the server is handling now.",
		}, []string{"grpc_service", "grpc_method"}),
	}
	for _, c := range []prometheus.Collector{m.handled, m.latency, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe starts counting a call and returns the function that ends it.
// A call that panics ends with codes.Internal, as recovery will make it.
func (m *Metrics) observe(fullMethod string) func(err error, panicked bool) {
	service, method := splitMethod(fullMethod)
	g := m.inFlight.WithLabelValues(service, method)
	g.Inc()
	start := time.Now()
	return func(err error, panicked bool) {
		code := status.Code(err)
		if panicked {
			code = codes.Internal
		}
		g.Dec()
		m.handled.WithLabelValues(service, method, code.String()).Inc()
		m.latency.WithLabelValues(service, method).Observe(time.Since(start).Seconds())
	}
}

func (m *Metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	done := m.observe(info.FullMethod)
	panicked := true
	defer func() { done(err, panicked) }()
	resp, err = handler(ctx, req)
	panicked = false
	return resp, err
}

func (m *Metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	done := m.observe(info.FullMethod)
	panicked := true
	defer func() { done(err, panicked) }()
	err = handler(srv, ss)
	panicked = false
	return err
}
