// Package regiontest starts real region nodes in one process for tests: Raft over mutual TLS on
// loopback TCP, real bbolt files in temporary directories, a throwaway CA and the file://
// development anchor. Nothing is mocked; nodes can be killed, restarted and partitioned.
package regiontest

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// LeaseDuration is the serving lease the test regions run with: short, so that lease expiry is
// quick to observe, and long enough for -race on two shared cores.
const LeaseDuration = 1500 * time.Millisecond

// Region is an in-process region of real nodes.
type Region struct {
	t      testing.TB
	Dir    string
	CA     *pki.CA
	Anchor string // the file:// anchor URI tenants use
	Nodes  []*region.Node
	Cfgs   []region.Config

	opts      options
	gossipKey []byte

	mu    sync.Mutex // guards conns
	links clustertest.Links
	conns []*grpc.ClientConn
}

// Option changes how Start builds a region.
type Option func(*options)

type options struct {
	anchor        string    // an existing anchor URI to use instead of a new root key
	logs          io.Writer // where the nodes log (at debug level) instead of t.Log
	anchorOptions map[string]any
	ca            *pki.CA
	region        string
	governance    []string
	config        func(*region.Config)
}

// WithConfig lets f adjust every node's configuration last (GovernanceAnchorWait, say).
func WithConfig(f func(*region.Config)) Option { return func(o *options) { o.config = f } }

// WithCA issues the nodes' certificates from ca instead of a new CA (a governancetest cluster's,
// so that the region can follow its feed and the two planes trust each other).
func WithCA(ca *pki.CA) Option { return func(o *options) { o.ca = ca } }

// WithRegion names the region (region.Config.Region; "test" by default); the nodes' certificates
// then name it too (spiffe://krypton/region/<name>/node/<id>), as governance requires of the feed.
func WithRegion(name string) Option { return func(o *options) { o.region = name } }

// WithGovernance makes the region follow the governance feed at addrs (region.Config.Governance).
// Use WithCA and WithRegion with it.
func WithGovernance(addrs ...string) Option { return func(o *options) { o.governance = addrs } }

// WithAnchor makes the region's tenants use an existing anchor URI (another region's Anchor, say,
// so that a snapshot of that region opens here) instead of a new development root key.
func WithAnchor(uri string) Option { return func(o *options) { o.anchor = uri } }

// WithLogs sends every node's log, at debug level, to w (which must be safe for concurrent
// writes) instead of the test log.
func WithLogs(w io.Writer) Option { return func(o *options) { o.logs = w } }

// WithAnchorOptions gives every node these anchor provider options (region.Config.AnchorOptions,
// keyed by URI scheme): the endpoint and test credentials of an awskmstest server, say. The test
// process registers the providers by importing their packages.
func WithAnchorOptions(o map[string]any) Option {
	return func(opts *options) { opts.anchorOptions = o }
}

// StartNoWait starts n nodes that bootstrap together and returns without waiting for a leader.
func StartNoWait(t testing.TB, n int, opts ...Option) *Region { return start(t, n, false, opts) }

// Start starts n nodes that bootstrap together, waits for a leader, sets the test lease, and waits
// until every node serves. Everything stops when the test ends.
func Start(t testing.TB, n int, opts ...Option) *Region { return start(t, n, true, opts) }

func start(t testing.TB, n int, wait bool, opts []Option) *Region {
	t.Helper()
	r := &Region{t: t, Dir: t.TempDir()}
	for _, o := range opts {
		o(&r.opts)
	}
	if r.opts.region == "" {
		r.opts.region = "test"
	}
	r.CA = r.opts.ca
	if r.CA == nil {
		ca, err := pki.NewCA("regiontest CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		r.CA = ca
	}
	if r.opts.anchor != "" {
		r.Anchor = r.opts.anchor
	} else {
		keyPath := filepath.Join(r.Dir, "anchor", "root.key")
		r.Anchor = "file://" + keyPath
		// Create the development root key once; tenants name it without ?create.
		p, err := anchor.Open(context.Background(), r.Anchor, anchor.Options{Create: true, Logger: r.logger()})
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
	}

	r.gossipKey = make([]byte, 32)
	rand.Read(r.gossipKey)
	for i := range n {
		r.Cfgs = append(r.Cfgs, r.config("node-"+strconv.Itoa(i+1), n, r.gossipKey))
	}
	// Every node joins through every other, as an operator would configure them: a node restarted
	// on its own (node-1 included) must find the others in gossip again.
	for i := range r.Cfgs {
		for j := range r.Cfgs {
			if j != i {
				r.Cfgs[i].Join = append(r.Cfgs[i].Join, r.Cfgs[j].GossipAddr)
			}
		}
	}
	r.Nodes = make([]*region.Node, n)
	for i := range r.Cfgs {
		r.Start(i)
	}
	t.Cleanup(r.Close)
	if !wait {
		return r
	}
	s := fsm.DefaultSettings()
	s.LeaseDuration = LeaseDuration
	s.AnchorCheckPeriod = 200 * time.Millisecond
	s.AnchorGracePeriod = 2 * time.Second
	// Setting the same settings twice is harmless, so a write that may or may not have been
	// applied (the leader lost its lead on a busy machine) is sent again, to whichever node leads.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ld := r.WaitLeader()
		err := r.Nodes[ld].SetSettings(r.Context(10*time.Second), s)
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("setting the test lease: %v", err)
		}
		t.Logf("setting the test lease again: %v", err)
	}
	r.WaitServing()
	return r
}

func (r *Region) config(id string, expect int, gossipKey []byte) region.Config {
	cert, err := r.CA.IssueNode(id, pki.NodeOptions{Region: r.opts.region})
	if err != nil {
		r.t.Fatal(err)
	}
	c := region.DefaultConfig()
	c.NodeID = id
	c.Region = r.opts.region
	c.Governance = r.opts.governance
	c.DataDir = filepath.Join(r.Dir, id)
	c.RaftAddr = "127.0.0.1:" + strconv.Itoa(freePort(r.t, false))
	c.GossipAddr = "127.0.0.1:" + strconv.Itoa(freePort(r.t, true))
	c.RPCAddr = "127.0.0.1:" + strconv.Itoa(freePort(r.t, false))
	c.BootstrapExpect = expect
	c.GossipKey = gossipKey
	c.Roots = r.CA.Pool()
	c.Certificate = cert.TLSCertificate()
	c.AllowDevAnchor = true
	c.AnchorOptions = r.opts.anchorOptions
	c.Logger = r.logger()
	c.Tune = func(cc *cluster.Config) {
		base := clustertest.Config()
		cc.CommitTimeout = base.CommitTimeout
		cc.SnapshotThreshold = base.SnapshotThreshold
		cc.SnapshotInterval = base.SnapshotInterval
		cc.TrailingLogs = base.TrailingLogs
		cc.GossipInterval = base.GossipInterval
		cc.GossipProbeInterval = base.GossipProbeInterval
		cc.GossipProbeTimeout = base.GossipProbeTimeout
		cc.ReconcileInterval = base.ReconcileInterval
	}
	c.ClusterOptions = []cluster.Option{cluster.WithConnFilter(r.links.Allowed)}
	c.PeerFilter = func(remote string) bool { return r.links.Allowed(id, remote) }
	if r.opts.config != nil {
		r.opts.config(&c)
	}
	return c
}

func (r *Region) logger() *slog.Logger {
	if r.opts.logs != nil {
		return slog.New(slog.NewTextHandler(r.opts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return clustertest.NewLogger(r.t)
}

// AddNode starts a new node that joins the running region's gossip through the gossip address of
// node via (BootstrapExpect 0), then has an operator's Join (AdminService.Join at node via) add it
// as a voter: gossip alone never makes a voter. It returns the new slot.
func (r *Region) AddNode(via int) int {
	r.t.Helper()
	i := len(r.Cfgs)
	c := r.config("node-"+strconv.Itoa(i+1), 0, r.gossipKey)
	c.Join = []string{r.Cfgs[via].GossipAddr}
	r.Cfgs = append(r.Cfgs, c)
	r.Nodes = append(r.Nodes, nil)
	r.Start(i)
	admin := r.AdminClient(via)
	clustertest.Eventually(r.t, 30*time.Second, "Join of "+c.NodeID, func() bool {
		_, err := admin.Join(r.Context(10*time.Second), &kv1.JoinRequest{RequestId: "regiontest-join-" + c.NodeID, NodeId: c.NodeID, RaftAddress: c.RaftAddr})
		return err == nil
	})
	return i
}

// Start starts (or restarts, from its data directory) node i.
func (r *Region) Start(i int) {
	r.t.Helper()
	n, err := region.New(r.Cfgs[i])
	if err != nil {
		r.t.Fatalf("starting %s: %v", r.Cfgs[i].NodeID, err)
	}
	r.Nodes[i] = n
}

// Kill stops node i without leaving the region, as a crash would look to the others (its data
// directory stays for Start).
func (r *Region) Kill(i int) {
	r.t.Helper()
	if r.Nodes[i] != nil {
		r.Nodes[i].Shutdown()
		r.Nodes[i] = nil
	}
}

// Close stops every node and closes every client connection.
func (r *Region) Close() {
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	var wg sync.WaitGroup
	for i, n := range r.Nodes {
		if n != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.Shutdown() }()
			r.Nodes[i] = nil
		}
	}
	wg.Wait()
}

// Context returns a context that ends after d or with the test.
func (r *Region) Context(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	r.t.Cleanup(cancel)
	return ctx
}

// WaitLeader waits until the running nodes agree on a leader and returns its slot.
func (r *Region) WaitLeader() int {
	r.t.Helper()
	leader := -1
	clustertest.Eventually(r.t, 20*time.Second, "a leader", func() bool {
		leader = r.Leader()
		return leader >= 0
	})
	return leader
}

// Leader returns the slot of the node that leads, or -1.
func (r *Region) Leader() int {
	for i, n := range r.Nodes {
		if n != nil && n.Cluster().IsLeader() {
			return i
		}
	}
	return -1
}

// WaitCaughtUp waits until node i has applied everything the leader has applied.
func (r *Region) WaitCaughtUp(i int) {
	r.t.Helper()
	clustertest.Eventually(r.t, 20*time.Second, r.Cfgs[i].NodeID+" caught up with the leader", func() bool {
		ld := r.Leader()
		return ld >= 0 && r.Nodes[i] != nil && r.Nodes[i].State().AppliedIndex() >= r.Nodes[ld].State().AppliedIndex()
	})
}

// Followers returns the slots of running nodes that do not lead.
func (r *Region) Followers() []int {
	var out []int
	for i, n := range r.Nodes {
		if n != nil && !n.Cluster().IsLeader() {
			out = append(out, i)
		}
	}
	return out
}

// WaitServing waits until every running node holds a serving lease.
func (r *Region) WaitServing() {
	r.t.Helper()
	clustertest.Eventually(r.t, 20*time.Second, "every node serving", func() bool {
		for _, n := range r.Nodes {
			if n != nil && n.Serving() != nil {
				return false
			}
		}
		return true
	})
}

// Partition cuts node i off from every other node (Raft, cluster RPC and node service), in both
// directions; gossip and client calls still reach it.
func (r *Region) Partition(i int) {
	var others []string
	for j := range r.Cfgs {
		if j != i {
			others = append(others, r.Cfgs[j].NodeID)
		}
	}
	me := []string{r.Cfgs[i].NodeID}
	r.links.Cut(me, others)
	r.links.Cut(others, me)
}

// Heal removes every partition.
func (r *Region) Heal() { r.links.Heal() }

// dial connects to node i's API with cert.
func (r *Region) dial(i int, cert *pki.Certificate) *grpc.ClientConn {
	r.t.Helper()
	conn, err := transport.Dial(context.Background(), r.Cfgs[i].RPCAddr, transport.ClientConfig{Roots: r.CA.Pool(), Certificate: cert.TLSCertificate(),
		Server: pki.Identity{Kind: pki.KindNode, Region: r.opts.region, NodeID: r.Cfgs[i].NodeID}})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.conns = append(r.conns, conn)
	r.mu.Unlock()
	return conn
}

// WrapClient returns a wrap-service client of node i that calls as tenant/service.
func (r *Region) WrapClient(i int, tenant, service string) kv1.WrapServiceClient {
	r.t.Helper()
	cert, err := r.CA.IssueService(tenant, service, time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	return kv1.NewWrapServiceClient(r.dial(i, cert))
}

// ServingWrapClient is WrapClient for tests about what a node answers once it serves: a call
// that node i answers with Unavailable because it holds no serving lease (its lease lapsed on a busy
// machine, or a leader is being elected) is made again, every 50 ms for up to 20 s. Such an answer
// says nothing about the request, and wrap-service calls change no state. Tests about the
// Unavailable answer itself use WrapClient.
func (r *Region) ServingWrapClient(i int, tenant, service string) kv1.WrapServiceClient {
	r.t.Helper()
	cert, err := r.CA.IssueService(tenant, service, time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	return kv1.NewWrapServiceClient(leaseRetrying{r.dial(i, cert)})
}

// leaseRetrying makes a unary call again while the node answers that it holds no serving lease.
type leaseRetrying struct{ grpc.ClientConnInterface }

func (c leaseRetrying) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
		if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != region.ErrNoLease.Error() || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// AdminClient returns an admin-service client of node i with an operator certificate.
func (r *Region) AdminClient(i int) kv1.AdminServiceClient {
	r.t.Helper()
	cert, err := r.CA.IssueOperator("test-operator", time.Hour)
	if err != nil {
		r.t.Fatal(err)
	}
	return kv1.NewAdminServiceClient(r.dial(i, cert))
}

// freePort finds a port free on 127.0.0.1 (for TCP, and for UDP too when udp is set).
func freePort(t testing.TB, udp bool) int {
	t.Helper()
	port, err := netutil.FreePort(udp)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
