package governance

import (
	"github.com/kryptonkms/krypton/governance/govfsm"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exposes the governance log's metrics, read from the state machine at scrape time (so
// every node reports the same figures for the same applied state, and a restore needs no
// bookkeeping).
type collector struct {
	n       *Node
	head    *prometheus.Desc
	applied *prometheus.Desc
	pending *prometheus.Desc
	lag     *prometheus.Desc
	events  *prometheus.Desc
	tenants *prometheus.Desc
	streams *prometheus.Desc
	logLen  *prometheus.Desc
	floor   *prometheus.Desc
}

func newCollector(n *Node) *collector {
	return &collector{
		n:       n,
		head:    prometheus.NewDesc("krypton_governance_head_cursor", "Cursor of the newest event of the governance log.", nil, nil),
		applied: prometheus.NewDesc("krypton_governance_region_applied_cursor", "Cursor each region last reported applied.", []string{"region"}, nil),
		pending: prometheus.NewDesc("krypton_governance_region_pending_events", "Events of a region's tenants not yet reported applied by it.", []string{"region"}, nil),
		lag:     prometheus.NewDesc("krypton_governance_region_lag_seconds", "Age of the oldest event a region has not reported applied; 0 when none is pending.", []string{"region"}, nil),
		events:  prometheus.NewDesc("krypton_governance_events_total", "Events the governance log has had, by kind (compaction lowers none).", []string{"kind"}, nil),
		tenants: prometheus.NewDesc("krypton_governance_tenants", "Tenants governance holds.", nil, nil),
		streams: prometheus.NewDesc("krypton_governance_watch_streams", "WatchRevocations streams this node serves now, by region.", []string{"region"}, nil),
		logLen:  prometheus.NewDesc("krypton_governance_event_log_entries", "Events the governance log holds now (compaction drops those every pinning region applied that no longer define the state).", nil, nil),
		floor:   prometheus.NewDesc("krypton_governance_event_log_floor_cursor", "Cursor the governance log was last compacted to (0: never); a region below it catches up from the retained events.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.head, c.applied, c.pending, c.lag, c.events, c.tenants, c.streams, c.logLen, c.floor} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	f := c.n.fsm
	ch <- prometheus.MustNewConstMetric(c.head, prometheus.GaugeValue, float64(f.Head()))
	now := time.Now()
	for _, l := range f.Lags() {
		ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(l.Cursor), l.Region)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(l.Pending), l.Region)
		lag := 0.0
		if l.Pending > 0 {
			lag = max(0, now.Sub(time.Unix(0, l.OldestPending)).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, lag, l.Region)
	}
	counts := f.EventCounts()
	for _, k := range govfsm.AllKinds {
		ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(counts[k]), k.String())
	}
	ch <- prometheus.MustNewConstMetric(c.tenants, prometheus.GaugeValue, float64(f.TenantCount()))
	ch <- prometheus.MustNewConstMetric(c.logLen, prometheus.GaugeValue, float64(f.LogLen()))
	ch <- prometheus.MustNewConstMetric(c.floor, prometheus.GaugeValue, float64(f.Floor()))
	for region, n := range c.n.watchers.snapshot() {
		ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(n), region)
	}
}

// watchCount counts the streams a node serves, by region.
type watchCount struct {
	mu sync.Mutex // guards n
	n  map[string]int
}

func (w *watchCount) add(region string, d int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == nil {
		w.n = map[string]int{}
	}
	w.n[region] += d
}

func (w *watchCount) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.n)
}
