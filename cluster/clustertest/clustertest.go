package clustertest

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/internal/logtest"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// Region is the region the harness's node certificates name.
const Region = "test"

// Harness is an in-process cluster on 127.0.0.1 with a throwaway CA.
type Harness struct {
	t   testing.TB
	CA  *pki.CA
	key []byte
	// Nodes are in start order; a killed node keeps its slot.
	Nodes []*Node

	configure func(*cluster.Config)

	links Links
}

// Node is one member of a Harness.
type Node struct {
	ID     string
	Config cluster.Config
	// FSM is the node's current state machine (a new one after Restart).
	FSM *FSM
	// Cluster is nil while the node is killed.
	Cluster *cluster.Cluster
}

// Option adjusts a Harness.
type Option func(*Harness)

// WithConfig lets a test adjust every node's Config before it starts.
func WithConfig(f func(*cluster.Config)) Option {
	return func(h *Harness) { h.configure = f }
}

// Start starts n nodes that bootstrap together (BootstrapExpect n, each
// joining all the others), as a real deployment would, and stops them at
// the end of the test. It does not wait for a leader.
func Start(t testing.TB, n int, opts ...Option) *Harness {
	t.Helper()
	ca, err := pki.NewCA("clustertest CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	h := &Harness{t: t, CA: ca, key: key}
	for _, o := range opts {
		o(h)
	}
	for i := 0; i < n; i++ {
		h.Nodes = append(h.Nodes, h.newNode(fmt.Sprintf("node-%d", i), n))
	}
	for i, nd := range h.Nodes {
		for j, other := range h.Nodes {
			if i != j {
				nd.Config.Join = append(nd.Config.Join, other.Config.GossipAddr)
			}
		}
	}
	t.Cleanup(h.Close)
	for i := range h.Nodes {
		h.start(i)
	}
	return h
}

// Config returns the test timings: tens of milliseconds on loopback, loose
// enough for -race on two shared cores.
func Config() cluster.Config {
	c := cluster.DefaultConfig()
	// Raft's election timings stay at the production defaults (1 s, lease
	// 500 ms): with -race on two cores shared with other builds, bbolt's
	// fsync and the scheduler stall a follower for hundreds of
	// milliseconds, and a shorter lease made leaders step down mid-test,
	// turning writes into ambiguous ErrLeadershipLost.
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotThreshold = 1024
	c.SnapshotInterval = time.Second
	c.TrailingLogs = 128
	c.GossipInterval = 30 * time.Millisecond
	c.GossipProbeInterval = 200 * time.Millisecond
	c.GossipProbeTimeout = 150 * time.Millisecond
	c.ReconcileInterval = 200 * time.Millisecond
	return c
}

func (h *Harness) newNode(id string, expect int) *Node {
	h.t.Helper()
	cert, err := h.CA.IssueNode(id, pki.NodeOptions{Region: Region})
	if err != nil {
		h.t.Fatal(err)
	}
	c := Config()
	c.NodeID = id
	c.DataDir = h.t.TempDir()
	c.RaftAddr = "127.0.0.1:" + strconv.Itoa(freePort(h.t, false))
	c.GossipAddr = "127.0.0.1:" + strconv.Itoa(freePort(h.t, true))
	c.GossipKey = h.key
	c.BootstrapExpect = expect
	c.TLS = pki.NodeTLSConfig(h.CA.Pool(), cert.TLSCertificate())
	c.Meta = map[string]string{"grpc": "127.0.0.1:0"}
	c.Logger = NewLogger(h.t)
	if h.configure != nil {
		h.configure(&c)
	}
	return &Node{ID: id, Config: c}
}

func (h *Harness) start(i int) {
	h.t.Helper()
	nd := h.Nodes[i]
	nd.FSM = &FSM{}
	cl, err := cluster.New(nd.Config, nd.FSM, cluster.WithConnFilter(h.links.Allowed))
	if err != nil {
		h.t.Fatalf("start %s: %v", nd.ID, err)
	}
	nd.Cluster = cl
}

// AddNode starts a new node that joins the running cluster's gossip
// (BootstrapExpect 0), as StartNode does, then has an operator's Join add
// it as a voter through a running node: gossip alone never makes a voter.
func (h *Harness) AddNode() *Node {
	h.t.Helper()
	nd := h.StartNode()
	h.Eventually(20*time.Second, "Join of "+nd.ID, func() bool {
		var via *Node
		for _, other := range h.Running() {
			if other != nd {
				via = other
				break
			}
		}
		if via == nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return via.Cluster.Join(ctx, nd.ID, nd.Config.RaftAddr) == nil
	})
	return nd
}

// StartNode starts a new node that joins the running cluster's gossip
// (BootstrapExpect 0) and nothing more: it stays out of the Raft
// configuration until someone calls Join.
func (h *Harness) StartNode() *Node {
	h.t.Helper()
	nd := h.newNode(fmt.Sprintf("node-%d", len(h.Nodes)), 0)
	for _, other := range h.Nodes {
		nd.Config.Join = append(nd.Config.Join, other.Config.GossipAddr)
	}
	h.Nodes = append(h.Nodes, nd)
	h.start(len(h.Nodes) - 1)
	return nd
}

// Kill stops node i without leaving: to the others it has failed.
func (h *Harness) Kill(i int) {
	h.t.Helper()
	nd := h.Nodes[i]
	if nd.Cluster == nil {
		return
	}
	if err := nd.Cluster.Shutdown(); err != nil {
		h.t.Errorf("kill %s: %v", nd.ID, err)
	}
	nd.Cluster = nil
}

// Restart starts a killed node again from its DataDir.
func (h *Harness) Restart(i int) {
	h.t.Helper()
	if h.Nodes[i].Cluster != nil {
		h.t.Fatalf("restart %s: still running", h.Nodes[i].ID)
	}
	h.start(i)
}

// Close stops every running node; Start registers it with t.Cleanup.
func (h *Harness) Close() {
	for _, nd := range h.Nodes {
		if nd.Cluster != nil {
			_ = nd.Cluster.Shutdown()
			nd.Cluster = nil
		}
	}
}

// Running returns the running nodes.
func (h *Harness) Running() []*Node {
	var out []*Node
	for _, nd := range h.Nodes {
		if nd.Cluster != nil {
			out = append(out, nd)
		}
	}
	return out
}

// Leader returns the running node that is leader, or nil.
func (h *Harness) Leader() *Node {
	for _, nd := range h.Running() {
		if nd.Cluster.IsLeader() {
			return nd
		}
	}
	return nil
}

// Followers returns the running nodes that are not leader.
func (h *Harness) Followers() []*Node {
	var out []*Node
	for _, nd := range h.Running() {
		if !nd.Cluster.IsLeader() {
			out = append(out, nd)
		}
	}
	return out
}

// Index returns the slot of node nd.
func (h *Harness) Index(nd *Node) int {
	for i, n := range h.Nodes {
		if n == nd {
			return i
		}
	}
	h.t.Fatalf("node %s not in harness", nd.ID)
	return -1
}

// WaitForLeader waits (up to 10 s) until exactly one running node leads and every running node
// in its configuration agrees on it, and returns that node. A node removed but still running is
// not asked: whether the entry removing it reached it before the leader stopped replicating to it
// is a race (a busy machine loses it), and one that never learnt of its removal campaigns on and
// names no leader.
func (h *Harness) WaitForLeader() *Node {
	h.t.Helper()
	var leader *Node
	h.Eventually(10*time.Second, "a single agreed leader", func() bool {
		leader = nil
		for _, nd := range h.Running() {
			if nd.Cluster.IsLeader() {
				if leader != nil {
					return false
				}
				leader = nd
			}
		}
		if leader == nil {
			return false
		}
		peers, err := leader.Cluster.Peers()
		if err != nil {
			return false
		}
		for _, nd := range h.Running() {
			if !slices.ContainsFunc(peers, func(p cluster.Peer) bool { return p.ID == nd.ID }) {
				continue
			}
			if id, _ := nd.Cluster.Leader(); id != leader.ID {
				return false
			}
		}
		return true
	})
	return leader
}

// Eventually polls cond every 10 ms until it holds, failing the test after
// timeout.
func (h *Harness) Eventually(timeout time.Duration, what string, cond func() bool) {
	h.t.Helper()
	Eventually(h.t, timeout, what, cond)
}

// Eventually polls cond every 10 ms until it holds, failing t after
// timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Context returns a context that ends after d or with the test.
func (h *Harness) Context(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	h.t.Cleanup(cancel)
	return ctx
}

// Partition cuts node-to-node connections (Raft and cluster RPC, not
// gossip) between the given groups of node slots; nodes in no group keep
// talking to everyone. Existing connections fail at their next read or
// write.
func (h *Harness) Partition(groups ...[]int) {
	ids := func(slots []int) []string {
		out := make([]string, len(slots))
		for i, s := range slots {
			out[i] = h.Nodes[s].ID
		}
		return out
	}
	for gi, g := range groups {
		for gj, o := range groups {
			if gi != gj {
				h.links.Cut(ids(g), ids(o))
			}
		}
	}
}

// Heal removes every partition.
func (h *Harness) Heal() { h.links.Heal() }

// freePort finds a port free on 127.0.0.1 (for TCP, and for UDP too when udp is set).
func freePort(t testing.TB, udp bool) int {
	t.Helper()
	port, err := netutil.FreePort(udp)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// NewLogger returns a logger writing to t.Log, at debug level when
// KRYPTON_TEST_LOG=debug and at warn level otherwise (Raft on loopback is
// chatty and a failing test's own messages matter more).
func NewLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	switch os.Getenv("KRYPTON_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	}
	return slog.New(quietDevAnchor{slog.NewTextHandler(logtest.New(t), &slog.HandlerOptions{Level: level})})
}

// quietDevAnchor drops the warning that the file:// anchor logs on every use (file.DevWarning) unless
// KRYPTON_TEST_LOG asks for info or debug. Tests run on that anchor on purpose, and at warn level
// the warning made up most of a failed test's log, hiding the lines that explain the failure.
type quietDevAnchor struct{ slog.Handler }

func (h quietDevAnchor) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn && r.Message == file.DevWarning && !h.Handler.Enabled(ctx, slog.LevelInfo) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietDevAnchor) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietDevAnchor{h.Handler.WithAttrs(attrs)}
}

func (h quietDevAnchor) WithGroup(name string) slog.Handler {
	return quietDevAnchor{h.Handler.WithGroup(name)}
}
