package cluster

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// collector reads Raft's state at scrape time: nothing to keep up to date,
// and a scrape always sees current values.
type collector struct {
	c *Cluster

	state, term, commit, applied, lastIndex, lastContact, leader *prometheus.Desc
}

func newCollector(c *Cluster) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("krypton_cluster_"+name, help, labels, nil)
	}
	return &collector{
		c:           c,
		state:       d("raft_state", "1 for this node's current Raft state, 0 for the others.", "state"),
		term:        d("raft_term", "Current Raft term."),
		commit:      d("raft_commit_index", "Highest log index known to be committed."),
		applied:     d("raft_applied_index", "Highest log index the FSM has applied."),
		lastIndex:   d("raft_last_index", "Highest log index stored locally."),
		lastContact: d("raft_last_contact_seconds", "Seconds since this node last heard from the leader (0 on the leader)."),
		leader:      d("raft_is_leader", "1 if this node is the leader."),
	}
}

func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.state, m.term, m.commit, m.applied, m.lastIndex, m.lastContact, m.leader} {
		ch <- d
	}
}

func (m *collector) Collect(ch chan<- prometheus.Metric) {
	r := m.c.raft
	st := r.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == st {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.state, prometheus.GaugeValue, v, s.String())
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(m.term, float64(r.CurrentTerm()))
	gauge(m.commit, float64(r.CommitIndex()))
	gauge(m.applied, float64(m.c.fsm.applied.Load()))
	gauge(m.lastIndex, float64(r.LastIndex()))
	lc := 0.0
	isLeader := 0.0
	if st == raft.Leader {
		isLeader = 1
	} else if t := r.LastContact(); !t.IsZero() {
		lc = time.Since(t).Seconds()
	}
	gauge(m.lastContact, lc)
	gauge(m.leader, isLeader)
}
