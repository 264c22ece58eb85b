package jepsen

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
)

// network is where the nodes run and what the partition nemeses can do to it. Two exist: netns
// (as root: a private network namespace per node, routed through a control namespace that holds
// the clients and the nftables rules) and loopback (unprivileged: every node on 127.0.0.1,
// partitions unavailable).
type network interface {
	// name is "netns" or "loopback", for the report.
	name() string
	// host is the address node i binds and is reached at.
	host(i int) string
	// wrap returns the command line that runs argv as node i (inside its namespace).
	wrap(i int, argv []string) []string
	// dial connects to addr from where the clients live.
	dial(ctx context.Context, addr string) (net.Conn, error)
	// port returns the port of node i's listener kind (0 api, 1 raft, 2 gossip, 3 plain HTTP for
	// /metrics).
	port(i, kind int) int
	// canPartition reports whether drop, slow and heal work.
	canPartition() bool
	// drop discards every packet from node a to node b. It is one-way for gossip's UDP; a TCP
	// connection between them fails whichever side opened it (its data or its replies are lost).
	drop(a, b int) error
	// slow makes node i's link lossy (lossPct % of packets dropped both ways) and, where the
	// kernel has netem, delayed.
	slow(i, lossPct int, delayMs int) error
	// heal removes every rule.
	heal() error
	// close tears everything down; safe to call twice.
	close() error
}

// freePort picks a free loopback port for the unprivileged network.
func freePort(udp bool) (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if udp {
		c, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return freePort(udp)
		}
		c.Close()
	}
	return port, nil
}

// loopbackNet runs every node on 127.0.0.1 with ports of its own: no namespace, no privileges, and
// no network faults (only process faults: kill, pause, membership, anchor, leadership).
type loopbackNet struct {
	ports [][4]int
}

func newLoopbackNet(n int) (*loopbackNet, error) {
	l := &loopbackNet{ports: make([][4]int, n)}
	for i := range n {
		for k := range 4 {
			p, err := freePort(k == 2)
			if err != nil {
				return nil, err
			}
			l.ports[i][k] = p
		}
	}
	return l, nil
}

func (l *loopbackNet) name() string                       { return "loopback" }
func (l *loopbackNet) host(int) string                    { return "127.0.0.1" }
func (l *loopbackNet) wrap(_ int, argv []string) []string { return argv }
func (l *loopbackNet) port(i, kind int) int               { return l.ports[i][kind] }
func (l *loopbackNet) canPartition() bool                 { return false }
func (l *loopbackNet) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}
func (l *loopbackNet) drop(int, int) error {
	return fmt.Errorf("jepsen: partitions need root (network namespaces)")
}
func (l *loopbackNet) slow(int, int, int) error {
	return fmt.Errorf("jepsen: slow links need root (network namespaces)")
}
func (l *loopbackNet) heal() error  { return nil }
func (l *loopbackNet) close() error { return nil }

// isRoot reports whether the harness may build network namespaces.
func isRoot() bool { return os.Geteuid() == 0 }
