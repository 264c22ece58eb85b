package region_test

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/netutil"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// refusedHandshakes is krypton_handshakes_refused_total{listener} summed over reasons.
func refusedHandshakes(t *testing.T, reg prometheus.Gatherer, listener string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "krypton_handshakes_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "listener" && lp.GetValue() == listener {
					sum += m.GetCounter().GetValue()
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

// TestPreAuthFloodRegion: connections that never start their TLS handshake, to a node's API port
// and to its Raft port, hold neither the node's descriptors nor its clients' service. Before,
// the API's gRPC server kept every such connection for its 10 s handshake timeout (21,000 of
// them exhausted a node's descriptors). Now each source holds at most MaxPendingPerSource of
// them per listener; the rest are closed at once and counted in
// krypton_handshakes_refused_total, while new clients from another address wrap throughout and
// an operator's write still replicates.
func TestPreAuthFloodRegion(t *testing.T) {
	const apiFlood, raftFlood = 1100, 300
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if need := uint64(4 * (apiFlood + raftFlood)); lim.Cur < need {
		if lim.Max < need {
			t.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test needs: raise it (ulimit -Hn)", lim.Max, need)
		}
		old := lim.Cur
		lim.Cur = need
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		defer func() { lim.Cur = old; syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) }()
	}
	r := setup(t)
	const node = 0
	reg := r.Nodes[node].Registry()
	wrapFresh := func(what string) {
		t.Helper()
		// A new client: a new TLS connection from 127.0.0.1. The node may answer Unavailable
		// between leases on a busy machine; a connection it refused is a failure.
		c := r.WrapClient(node, "acme", "payments")
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := c.Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: randKey(t), Context: []byte("x")})
			if err == nil {
				return
			}
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.Unavailable || strings.Contains(msg, "connection") ||
				strings.Contains(msg, "transport") || time.Now().After(deadline) {
				t.Fatalf("Wrap %s: %v", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wrapFresh("before the flood")

	// The flood comes from 127.0.0.2 (API) and 127.0.0.3 (Raft): every 127/8 address is local
	// on Linux. Clients and peers use 127.0.0.1.
	fdsBefore := openFDs(t)
	var raw []net.Conn
	t.Cleanup(func() {
		for _, c := range raw {
			c.Close()
		}
	})
	flood := func(src net.IP, addr string, n int) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
		for i := range n {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("flood connection %d to %s: %v", i, addr, err)
			}
			raw = append(raw, c)
			if i%250 == 249 {
				wrapFresh(fmt.Sprintf("after %d flood connections to %s", i+1, addr))
			}
		}
	}
	flood(net.IPv4(127, 0, 0, 2), r.Cfgs[node].RPCAddr, apiFlood)
	flood(net.IPv4(127, 0, 0, 3), r.Cfgs[node].RaftAddr, raftFlood)

	// What exceeded the per-source budget was refused and counted, on both listeners.
	per := netutil.DefaultMaxPendingPerSource
	clustertest.Eventually(t, 20*time.Second, "flood refusals counted", func() bool {
		return refusedHandshakes(t, reg, "api") >= float64(apiFlood-per) &&
			refusedHandshakes(t, reg, "raft") >= float64(raftFlood-per)
	})
	// The node holds at most the pending budget of each source: the process's descriptors grew
	// by the flood's own client ends, not by as many again on the server's side.
	if grown, limit := openFDs(t)-fdsBefore, apiFlood+raftFlood+2*per+200; grown > limit {
		t.Fatalf("descriptors grew by %d during a flood of %d connections (limit %d): the server keeps the refused ones",
			grown, apiFlood+raftFlood, limit)
	}
	wrapFresh("during the flood")
	// A write goes through Raft while node 0's Raft port is flooded.
	if _, err := r.AdminClient(r.Leader()).CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "preauth-k2", Tenant: "acme", Service: "other"}); err != nil {
		t.Fatalf("CreateKey during the flood: %v", err)
	}
	r.WaitCaughtUp(node)
	mustWrap(t, r, node, "acme", "other")
}
