package kmip

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the KMIP front end's collectors. Labels are operation names,
// result reasons and rejection causes only: never identifiers, names or key
// material.
type metrics struct {
	ops      *prometheus.CounterVec   // operations by operation and result
	seconds  *prometheus.HistogramVec // operation latency by operation
	rejected *prometheus.CounterVec   // messages and connections refused before any operation
	conns    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_kmip_operations_total",
			Help: "KMIP operations by operation and result (success or the KMIP result reason).",
		}, []string{"operation", "result"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "krypton_kmip_operation_seconds",
			Help:    "Latency of KMIP operations, including calls to the region.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 2.5, 14), // 20 µs .. ~3 s
		}, []string{"operation"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_kmip_rejected_total",
			Help: "KMIP messages and connections refused before any operation ran, by cause.",
		}, []string{"cause"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krypton_kmip_connections",
			Help: "Open KMIP client connections.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.ops, m.seconds, m.rejected, m.conns)
	}
	return m
}

// opName is the metric label and log value of an Operation.
func opName(op uint32) string {
	if n, ok := opNames[op]; ok {
		return n
	}
	return "unknown"
}
