package transport

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/wrap"
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

	// methods caches each method's label children (*methodMetrics by full
	// method name), so that a call looks its collectors up once in a
	// sync.Map instead of hashing label values into three vectors.
	methods sync.Map
}

// methodMetrics are the collectors of one method, made on its first call.
type methodMetrics struct {
	inFlight prometheus.Gauge
	latency  prometheus.Observer
	handled  [maxCode + 1]atomic.Pointer[prometheus.Counter] // by code, made on first use
	service  string
	method   string
	m        *Metrics
}

// maxCode is the largest gRPC status code (Unauthenticated).
const maxCode = codes.Unauthenticated

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

// forMethod returns fullMethod's collectors.
func (m *Metrics) forMethod(fullMethod string) *methodMetrics {
	if mm, ok := m.methods.Load(fullMethod); ok {
		return mm.(*methodMetrics)
	}
	service, method := splitMethod(fullMethod)
	mm := &methodMetrics{
		inFlight: m.inFlight.WithLabelValues(service, method),
		latency:  m.latency.WithLabelValues(service, method),
		service:  service,
		method:   method,
		m:        m,
	}
	got, _ := m.methods.LoadOrStore(fullMethod, mm)
	return got.(*methodMetrics)
}

// done ends a call started at start. A call that panicked ends with
// codes.Internal, as recovery will make it.
func (mm *methodMetrics) done(start time.Time, err error, panicked bool) {
	code := status.Code(err)
	if panicked {
		code = codes.Internal
	}
	mm.inFlight.Dec()
	if code > maxCode {
		mm.m.handled.WithLabelValues(mm.service, mm.method, code.String()).Inc()
	} else {
		c := mm.handled[code].Load()
		if c == nil {
			n := mm.m.handled.WithLabelValues(mm.service, mm.method, code.String())
			mm.handled[code].CompareAndSwap(nil, &n)
			c = &n
		}
		(*c).Inc()
	}
	mm.latency.Observe(time.Since(start).Seconds())
}

func (m *Metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	mm := m.forMethod(info.FullMethod)
	mm.inFlight.Inc()
	start := time.Now()
	panicked := true
	defer func() { mm.done(start, err, panicked) }()
	err = handler(srv, ss)
	panicked = false
	return err
}

// LockedMemoryCollectors are the gauges of the process's locked-memory budget (wrap/locked.go):
//
//	krypton_locked_memory_bytes        locked memory held by keys and locked buffers now
//	krypton_locked_memory_limit_bytes  the soft RLIMIT_MEMLOCK; +Inf when the kernel does not
//	                                   enforce it (CAP_IPC_LOCK, or an infinite limit)
//
// The budget is the limit less wrap.LockedMargin. Both describe the whole process, so a process
// running several nodes reports the same values from each.
func LockedMemoryCollectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "krypton_locked_memory_bytes",
			Help: "Locked memory (mlock) this process holds for keys and locked buffers, in bytes.",
		}, func() float64 { used, _, _ := wrap.LockedMemory(); return float64(used) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "krypton_locked_memory_limit_bytes",
			Help: "The process's RLIMIT_MEMLOCK in bytes (+Inf when not enforced: CAP_IPC_LOCK or unlimited); keys are refused, after evicting what the keyrings give back, 256 KiB short of it.",
		}, func() float64 {
			_, limit, enforced := wrap.LockedMemory()
			if !enforced {
				return math.Inf(1)
			}
			return float64(limit)
		}),
	}
}
