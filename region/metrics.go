package region

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/transport"
)

// nodeMetrics are the region's own collectors; Raft's come from cluster and the gRPC server's from
// transport. Labels are operation names and outcomes only — never key names or material.
type nodeMetrics struct {
	ops          *prometheus.HistogramVec // wrap path latency by operation
	opObservers  sync.Map                 // operation name -> its child of ops (a prometheus.Observer)
	anchorCalls  *prometheus.CounterVec   // L1 calls by operation and outcome
	fenceSeconds prometheus.Histogram     // how long a revocation took to become effective everywhere
	fenceExpired prometheus.Counter       // nodes fenced by lease expiry rather than confirmation
	lockouts     prometheus.Counter
	// anchorRoundsLate counts L1 check rounds that were due while the previous one was still
	// starting its checks.
	anchorRoundsLate prometheus.Counter
	// proposals counts the commands this node proposed to the Raft log, by command type. A request
	// refused by validation never reaches it.
	proposals *prometheus.CounterVec
	// watchersCut counts the key-event watchers this node cut off, by reason (keyevents.go).
	watchersCut *prometheus.CounterVec
	// quotaRefusals counts calls refused by a quota (quota.go), by kind (rate, concurrency, batch)
	// and scope (tenant, service). No tenant or service label: the series would grow with the
	// tenants and never go; the refusal's answer and the node's log name them.
	quotaRefusals *prometheus.CounterVec
	// quotaEarly counts the refusals of quotaRefusals made before the request was read (quota.go,
	// earlyAdmit).
	quotaEarly prometheus.Counter
}

func newNodeMetrics(reg prometheus.Registerer, n *Node) *nodeMetrics {
	m := &nodeMetrics{
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "krypton_wrap_seconds",
			Help:    "Latency of wrap-path operations on this node, by operation, excluding transport.",
			Buckets: prometheus.ExponentialBuckets(2e-6, 2.5, 14), // 2 µs .. ~300 ms
		}, []string{"op"}),
		anchorCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_anchor_calls_total",
			Help: "Calls to L1 anchors, by operation and outcome (ok, denied, transient).",
		}, []string{"op", "outcome"}),
		fenceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "krypton_revocation_fence_seconds",
			Help:    "Time from a revocation's commit until no node can use the key any longer.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		fenceExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krypton_revocation_fence_lease_expired_total",
			Help: "Nodes that a revocation fence waited out (lease expiry) instead of hearing from.",
		}),
		lockouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "krypton_tenant_lockouts_total",
			Help: "Tenants this node (as leader) locked out after an L1 denial or grace period.",
		}),
	}
	m.anchorRoundsLate = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "krypton_anchor_check_rounds_late_total",
		Help: "L1 check rounds that were due while the previous round was still starting its checks (raise the anchor check concurrency).",
	})
	m.proposals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krypton_raft_proposals_total",
		Help: "Commands this node proposed to the Raft log (after validation), by command type.",
	}, []string{"command"})
	m.watchersCut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krypton_key_event_watchers_cut_total",
		Help: "Key-event watchers (gateways) this node cut off: behind (too many events queued) or unacknowledged (an event not acknowledged within the bound); each holds fences back only until its cache lease runs out.",
	}, []string{"reason"})
	reg.MustRegister(m.watchersCut)
	m.quotaRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krypton_quota_refusals_total",
		Help: "Wrap-path calls this node refused with ResourceExhausted because a tenant's or service's quota was exhausted, by kind (rate, concurrency, batch: larger than the burst) and scope (tenant, service).",
	}, []string{"kind", "scope"})
	reg.MustRegister(m.quotaRefusals)
	m.quotaEarly = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "krypton_quota_early_refusals_total",
		Help: "Of krypton_quota_refusals_total, the calls refused as soon as their headers arrived, before their request was read: the caller's previous call was refused by a quota that is still exhausted.",
	})
	reg.MustRegister(m.quotaEarly)
	reg.MustRegister(transport.LockedMemoryCollectors()...)
	reg.MustRegister(m.ops, m.anchorCalls, m.fenceSeconds, m.fenceExpired, m.lockouts, m.anchorRoundsLate, m.proposals,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "krypton_keyring_pressure_evictions_total",
			Help: "Keys this node's keyring gave back because the process's locked memory (RLIMIT_MEMLOCK) was full.",
		}, func() float64 { return float64(n.keys.pressure.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "krypton_region_revocation_log_entries",
			Help: "Entries of the region's revocation log: the revocations in force and the history the leader's compaction keeps (Config.RevocationHistory).",
		}, func() float64 { return float64(n.state.RevocationLogLen()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "krypton_anchor_checks_in_flight",
			Help: "L1 checks this node (as leader) is running now.",
		}, func() float64 { return float64(n.anchorChecks.inFlightCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "krypton_keyring_keys",
			Help: "Unsealed keys (L2 and L3 versions) held in this node's memory.",
		}, func() float64 { return float64(n.keys.size()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "krypton_keyring_evictions_total",
			Help:        "Keys evicted from this node's keyring to keep it within its bound (Config.KeyringSize), by kind.",
			ConstLabels: prometheus.Labels{"kind": "tenant"},
		}, func() float64 { t, _ := n.keys.evictions(); return float64(t) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "krypton_keyring_evictions_total",
			Help:        "Keys evicted from this node's keyring to keep it within its bound (Config.KeyringSize), by kind.",
			ConstLabels: prometheus.Labels{"kind": "service"},
		}, func() float64 { _, s := n.keys.evictions(); return float64(s) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "krypton_keyring_opens_total",
			Help:        "Keys this node opened into its keyring (an L2 unsealed through its anchor or fetched from the leader; an L3 opened from its sealed blob), by kind: the cost of cold keys.",
			ConstLabels: prometheus.Labels{"kind": "tenant"},
		}, func() float64 { return float64(n.keys.tenantOpens.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "krypton_keyring_opens_total",
			Help:        "Keys this node opened into its keyring (an L2 unsealed through its anchor or fetched from the leader; an L3 opened from its sealed blob), by kind: the cost of cold keys.",
			ConstLabels: prometheus.Labels{"kind": "service"},
		}, func() float64 { return float64(n.keys.svcOpens.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "krypton_keyring_warmed_total",
			Help: "L3 versions this node opened ahead of calls by its key warm-up (after a restart or on becoming leader, from <data-dir>/recent-keys); they are counted in krypton_keyring_opens_total too.",
		}, func() float64 { return float64(n.keys.warmed.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "krypton_lease_serving",
			Help: "1 when this node holds a serving lease and has applied the log up to it.",
		}, func() float64 {
			if n.Serving() == nil {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "krypton_lease_remaining_seconds",
			Help: "Time left on this node's serving lease.",
		}, func() float64 { return max(0, n.lease.expiresIn().Seconds()) }),
	)
	return m
}
