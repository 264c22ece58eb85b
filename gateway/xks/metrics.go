package xks

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_xks_requests_total",
			Help: "XKS proxy API requests by operation and error name (empty: success).",
		}, []string{"operation", "error"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "krypton_xks_request_seconds",
			Help:    "XKS proxy API request latency by operation (AWS KMS gives up at 250 ms).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .2, .25, .5},
		}, []string{"operation"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.seconds} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, err
				}
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(op, errName string, d time.Duration) {
	m.requests.WithLabelValues(op, errName).Inc()
	m.seconds.WithLabelValues(op).Observe(d.Seconds())
}
