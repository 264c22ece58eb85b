package cluster_test

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
)

// metricValue is the value of the counter or gauge name{listener} summed over its other labels.
func metricValue(t *testing.T, reg prometheus.Gatherer, name, listener string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "listener" && lp.GetValue() == listener {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// alive reports whether nd's gossip sees id alive.
func alive(nd *clustertest.Node, id string) bool {
	members, err := nd.Cluster.Members()
	if err != nil {
		return false
	}
	for _, m := range members {
		if m.ID == id && m.Status == cluster.StatusAlive {
			return true
		}
	}
	return false
}

// TestGossipStreamFlood: TCP connections to a node's gossip port that never send a byte hold
// neither the node's descriptors nor its gossip. Before, memberlist's NetTransport served every
// one of them in a goroutine of its own, with a descriptor, until its TCPTimeout. Now one source
// holds at most GossipMaxStreamsPerSource of them; the rest are closed at once and counted in
// krypton_handshakes_refused_total{listener="gossip"}, and a new member from another address
// still joins (a TCP push/pull with the flooded node) while the flood lasts.
func TestGossipStreamFlood(t *testing.T) {
	const flood = 400
	reg := prometheus.NewRegistry()
	h := clustertest.Start(t, 1, clustertest.WithConfig(func(c *cluster.Config) {
		// memberlist keeps a silent stream until its TCPTimeout: longer than this test, so
		// what the node holds during the test is what the limits let through.
		c.GossipTCPTimeout = 2 * time.Minute
		if c.NodeID == "node-0" {
			c.Registerer = reg
		}
	}))
	first := h.WaitForLeader()

	// The flood comes from 127.0.0.2 (every 127/8 address is local on Linux); members use
	// 127.0.0.1.
	fdsBefore := openFDs(t)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	for i := range flood {
		c, err := d.Dial("tcp", first.Config.GossipAddr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		// Registered after the harness's Close, so run before it: the node's stream handlers
		// see EOF and end before the node shuts down.
		t.Cleanup(func() { c.Close() })
	}

	// What exceeded the per-source budget was refused and counted, and the node holds at most
	// that budget: the process's descriptors grew by the flood's own client ends, not by as
	// many again on the server's side.
	per := cluster.DefaultGossipMaxStreamsPerSource
	var refused float64
	var grown int
	deadline := time.Now().Add(20 * time.Second)
	for {
		refused = metricValue(t, reg, "krypton_handshakes_refused_total", "gossip")
		grown = openFDs(t) - fdsBefore
		if refused >= float64(flood-per) && grown <= flood+per+100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a flood of %d silent connections from one source: %v refused (want >= %d), descriptors grew by %d (want <= %d): the node keeps them",
				flood, refused, flood-per, grown, flood+per+100)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pending := metricValue(t, reg, "krypton_handshakes_pending", "gossip"); pending > float64(per) {
		t.Fatalf("krypton_handshakes_pending{listener=gossip} = %v, want at most %d", pending, per)
	}

	// A new member joins through the flooded node (Join is a TCP push/pull) and both see each
	// other alive.
	second := h.StartNode()
	h.Eventually(20*time.Second, "the new member and the flooded node to see each other alive", func() bool {
		return alive(first, second.ID) && alive(second, first.ID)
	})
}
