package gateway

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
)

// metrics are the gateway's Prometheus metrics. Labels never carry key material, contexts or
// blobs: only operation names, gRPC codes, node ids and eviction reasons.
type metrics struct {
	requests   *prometheus.CounterVec   // op, code
	batches    *prometheus.CounterVec   // op
	batchSize  *prometheus.HistogramVec // op
	rpcs       *prometheus.CounterVec   // method, code
	hits       prometheus.Counter
	delegated  prometheus.Counter
	misses     prometheus.Counter
	evictions  *prometheus.CounterVec // reason
	entries    prometheus.Gauge
	cacheBytes prometheus.Gauge
	nodes      *prometheus.GaugeVec   // node
	failovers  *prometheus.CounterVec // from, to: region names
	active     *prometheus.GaugeVec   // region, preference
	// okRequests caches requests' counters for code OK by op (op → prometheus.Counter): the
	// success of every request is counted without hashing its labels.
	okRequests sync.Map
}

func newMetrics(regs ...prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_gateway_requests_total", Help: "Application requests handled, by operation and gRPC code.",
		}, []string{"op", "code"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_gateway_batches_total", Help: "Batches sent to the region, by operation.",
		}, []string{"op"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "krypton_gateway_batch_size", Help: "Requests per batch sent to the region.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}, []string{"op"}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_gateway_region_rpcs_total", Help: "RPCs sent to region nodes, by method and gRPC code.",
		}, []string{"method", "code"}),
		delegated: prometheus.NewCounter(prometheus.CounterOpts{Name: "krypton_gateway_delegated_data_keys_total",
			Help: "Data keys made and wrapped here under a delegated wrapping key, with no region call (Config.DelegateWraps)."}),
		hits:   prometheus.NewCounter(prometheus.CounterOpts{Name: "krypton_gateway_cache_hits_total", Help: "Data keys served from the cache."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "krypton_gateway_cache_misses_total", Help: "Cache lookups that went to the region."}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_gateway_cache_evictions_total", Help: "Cache entries removed, by reason (capacity, expired, revoked, flushed, shutdown).",
		}, []string{"reason"}),
		entries:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "krypton_gateway_cache_entries", Help: "Data keys in the cache."}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "krypton_gateway_cache_bytes", Help: "Bytes the cache's entries count."}),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "krypton_gateway_region_node_serving", Help: "1 if the region node at addr serves (its own word, or a call that succeeded), else 0; node is empty until the node has answered once.",
		}, []string{"addr", "node"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_gateway_region_failovers_total", Help: "Moves of the gateway from one region to another (-failover-regions): failovers, and moves back to a preferred region.",
		}, []string{"from", "to"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "krypton_gateway_region_active", Help: "1 for the region the gateway sends its calls to, 0 for the other regions it may fail over to; preference is the region's place in the gateway's list (0: -region-name, the preferred).",
		}, []string{"region", "preference"}),
	}
	for _, r := range regs {
		if r == nil {
			continue
		}
		for _, c := range []prometheus.Collector{m.requests, m.batches, m.batchSize, m.rpcs, m.hits, m.delegated, m.misses, m.evictions, m.entries, m.cacheBytes, m.nodes, m.failovers, m.active} {
			if err := r.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) request(op string, err error) {
	if err == nil {
		c, ok := m.okRequests.Load(op)
		if !ok {
			c, _ = m.okRequests.LoadOrStore(op, m.requests.WithLabelValues(op, "OK"))
		}
		c.(prometheus.Counter).Inc()
		return
	}
	m.requests.WithLabelValues(op, status.Code(err).String()).Inc()
}

func (m *metrics) batch(op string, n int) {
	m.batches.WithLabelValues(op).Inc()
	m.batchSize.WithLabelValues(op).Observe(float64(n))
}

func (m *metrics) rpc(method string, err error) {
	m.rpcs.WithLabelValues(method, status.Code(err).String()).Inc()
}

func (m *metrics) cacheHit()                { m.hits.Inc() }
func (m *metrics) delegatedKey()            { m.delegated.Inc() }
func (m *metrics) cacheMiss()               { m.misses.Inc() }
func (m *metrics) cacheEvict(reason string) { m.evictions.WithLabelValues(reason).Inc() }
func (m *metrics) cacheSize(n, bytes int) {
	m.entries.Set(float64(n))
	m.cacheBytes.Set(float64(bytes))
}
func (m *metrics) forgetNode(addr string) {
	m.nodes.DeletePartialMatch(prometheus.Labels{"addr": addr})
}

// nodeHealthy reports a node's state; id is "" until the node has said who it is.
func (m *metrics) nodeHealthy(addr, id string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	if id != "" {
		m.nodes.DeleteLabelValues(addr, "")
	}
	m.nodes.WithLabelValues(addr, id).Set(v)
}

func (m *metrics) regionFailover(from, to string) { m.failovers.WithLabelValues(from, to).Inc() }

// regionActive sets the active-region gauge: 1 for active, 0 for the other names (in order of
// preference).
func (m *metrics) regionActive(names []string, active string) {
	for i, n := range names {
		v := 0.0
		if n == active {
			v = 1
		}
		m.active.WithLabelValues(n, strconv.Itoa(i)).Set(v)
	}
}
