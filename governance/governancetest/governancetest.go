// Package governancetest starts real governance nodes in one process for
// tests: Raft over mutual TLS on loopback TCP, real bbolt files in temporary
// directories, certificates from a given (or new) pki CA. Nothing is mocked;
// nodes can be killed, restarted and partitioned.
//
// API:
//
//	g := governancetest.Start(t, 3,                 // 1 or 3 nodes; waits for a leader
//	        governancetest.WithCA(region.CA),       // share a CA with regiontest (default: a new one)
//	        governancetest.WithHeartbeat(100*time.Millisecond), // WatchRevocations heartbeat (default 200 ms)
//	        governancetest.WithRegions("eu", "us"), // Config.Regions (default: any region name)
//	        governancetest.WithLogs(w),             // node logs to w instead of t.Log
//	        governancetest.WithClusterConfig(f))    // adjust Raft timings and snapshot thresholds
//	g.CA                       // *pki.CA
//	g.Nodes[i], g.Cfgs[i]      // *governance.Node (nil while killed), governance.Config
//	g.Addr(i) / g.Addrs()      // gRPC address of node i / of every node (stable across restarts)
//	g.Leader() / g.WaitLeader() // slot of the leader (-1 if none) / wait for one (20 s)
//	g.Kill(i) / g.Restart(i)   // crash and restart node i from its data directory
//	g.Partition(i) / g.Heal()  // cut node i off from the other governance nodes (Raft and RPC)
//	g.Client(i)                // kv1.GovernanceServiceClient of node i with an operator certificate
//	g.NodeClient(i, region, nodeID) // ... with a node certificate naming region (the feed's caller)
//	g.OperatorConfig() / g.NodeConfig(region, nodeID) // transport.ClientConfig to dial any node
//	g.Context(d)               // a context ending after d or with the test
//	g.CreateTenant(tenant, anchorURI, regions...) // a tenant, through the leader, owned by g.Owner
//	g.Owner                    // *ownertest.Key: the tenants' owner key (CreateTenant registers it)
//	g.SetAnchor(tenant, anchorURI) // SetAnchor with g.Owner's consent, through the leader
//	governancetest.RequestID() // a request id unique in the process
//
// Everything stops when the test ends (t.Cleanup). The file:// development
// anchor is allowed, so tenants may use a regiontest region's Anchor.
package governancetest

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

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Cluster is an in-process governance cluster.
type Cluster struct {
	t     testing.TB
	Dir   string
	CA    *pki.CA
	Owner *ownertest.Key     // the owner key CreateTenant registers
	Nodes []*governance.Node // nil while killed
	Cfgs  []governance.Config

	opts  options
	links clustertest.Links

	mu    sync.Mutex // guards conns
	conns []*grpc.ClientConn
}

// Option changes how Start builds a cluster.
type Option func(*options)

type options struct {
	ca        *pki.CA
	heartbeat time.Duration
	regions   []string
	logs      io.Writer
	tune      func(*cluster.Config)
	config    func(*governance.Config)
}

// WithConfig lets f change each node's configuration last (e.g. to set HTTPAddr).
func WithConfig(f func(*governance.Config)) Option { return func(o *options) { o.config = f } }

// WithCA issues the nodes' certificates from ca (e.g. a regiontest
// region's CA, so that its nodes can follow the feed).
func WithCA(ca *pki.CA) Option { return func(o *options) { o.ca = ca } }

// WithHeartbeat sets the WatchRevocations heartbeat interval.
func WithHeartbeat(d time.Duration) Option { return func(o *options) { o.heartbeat = d } }

// WithRegions restricts the regions tenants may name (Config.Regions).
func WithRegions(r ...string) Option { return func(o *options) { o.regions = r } }

// WithLogs sends every node's log, at debug level, to w (safe for
// concurrent writes) instead of the test log.
func WithLogs(w io.Writer) Option { return func(o *options) { o.logs = w } }

// WithClusterConfig lets a test adjust every node's cluster configuration
// after the test timings are set (snapshot thresholds, say).
func WithClusterConfig(f func(*cluster.Config)) Option { return func(o *options) { o.tune = f } }

// Start starts n governance nodes that bootstrap together, and waits until
// a leader is elected and every node has caught up with it.
func Start(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Dir: t.TempDir(), Owner: ownertest.New(t)}
	c.opts.heartbeat = 200 * time.Millisecond
	for _, o := range opts {
		o(&c.opts)
	}
	c.CA = c.opts.ca
	if c.CA == nil {
		ca, err := pki.NewCA("governancetest CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c.CA = ca
	}
	key := make([]byte, 32)
	rand.Read(key)
	for i := range n {
		c.Cfgs = append(c.Cfgs, c.config("gov-"+strconv.Itoa(i+1), n, key))
	}
	for i := range c.Cfgs {
		for j := range c.Cfgs {
			if i != j {
				c.Cfgs[i].Join = append(c.Cfgs[i].Join, c.Cfgs[j].GossipAddr)
			}
		}
	}
	c.Nodes = make([]*governance.Node, n)
	t.Cleanup(c.Close)
	for i := range c.Cfgs {
		c.Restart(i)
	}
	c.WaitLeader()
	ctx := c.Context(20 * time.Second)
	for _, nd := range c.Nodes {
		if err := nd.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *Cluster) config(id string, expect int, key []byte) governance.Config {
	cert, err := c.CA.IssueGovernance(id, pki.NodeOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	g := governance.DefaultConfig()
	g.NodeID = id
	g.DataDir = filepath.Join(c.Dir, id)
	g.RaftAddr = "127.0.0.1:" + strconv.Itoa(freePort(c.t, false))
	g.GossipAddr = "127.0.0.1:" + strconv.Itoa(freePort(c.t, true))
	g.RPCAddr = "127.0.0.1:" + strconv.Itoa(freePort(c.t, false))
	g.BootstrapExpect = expect
	g.GossipKey = key
	g.Roots = c.CA.Pool()
	g.Certificate = cert.TLSCertificate()
	g.AllowDevAnchor = true
	g.Regions = c.opts.regions
	g.HeartbeatInterval = c.opts.heartbeat
	g.Logger = c.logger()
	g.Tune = func(cc *cluster.Config) {
		base := clustertest.Config()
		cc.CommitTimeout = base.CommitTimeout
		cc.SnapshotThreshold = base.SnapshotThreshold
		cc.SnapshotInterval = base.SnapshotInterval
		cc.TrailingLogs = base.TrailingLogs
		cc.GossipInterval = base.GossipInterval
		cc.GossipProbeInterval = base.GossipProbeInterval
		cc.GossipProbeTimeout = base.GossipProbeTimeout
		cc.ReconcileInterval = base.ReconcileInterval
		if c.opts.tune != nil {
			c.opts.tune(cc)
		}
	}
	g.ClusterOptions = []cluster.Option{cluster.WithConnFilter(c.links.Allowed)}
	if c.opts.config != nil {
		c.opts.config(&g)
	}
	return g
}

func (c *Cluster) logger() *slog.Logger {
	if c.opts.logs != nil {
		return slog.New(slog.NewTextHandler(c.opts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return clustertest.NewLogger(c.t)
}

// Restart starts (or restarts, from its data directory) node i. It does
// not wait for a leader.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Nodes[i] != nil {
		c.t.Fatalf("restart %s: still running", c.Cfgs[i].NodeID)
	}
	n, err := governance.Start(context.Background(), c.Cfgs[i])
	if err != nil {
		c.t.Fatalf("starting %s: %v", c.Cfgs[i].NodeID, err)
	}
	c.Nodes[i] = n
}

// Kill stops node i without leaving, as a crash looks to the others.
func (c *Cluster) Kill(i int) {
	if c.Nodes[i] != nil {
		c.Nodes[i].Close()
		c.Nodes[i] = nil
	}
}

// Close stops every node and closes every client connection.
func (c *Cluster) Close() {
	c.mu.Lock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		if n != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.Close() }()
			c.Nodes[i] = nil
		}
	}
	wg.Wait()
}

// Addr returns node i's gRPC address (the same after a restart).
func (c *Cluster) Addr(i int) string { return c.Cfgs[i].RPCAddr }

// Addrs returns every node's gRPC address, in slot order.
func (c *Cluster) Addrs() []string {
	var out []string
	for i := range c.Cfgs {
		out = append(out, c.Addr(i))
	}
	return out
}

// Leader returns the slot of the running node that leads, or -1.
func (c *Cluster) Leader() int {
	for i, n := range c.Nodes {
		if n != nil && n.Cluster().IsLeader() {
			return i
		}
	}
	return -1
}

// WaitLeader waits until a running node leads and returns its slot.
func (c *Cluster) WaitLeader() int {
	c.t.Helper()
	leader := -1
	clustertest.Eventually(c.t, 20*time.Second, "a governance leader", func() bool {
		leader = c.Leader()
		return leader >= 0
	})
	return leader
}

// Partition cuts node i off from every other governance node (Raft and
// cluster RPC), both ways; its API still answers.
func (c *Cluster) Partition(i int) {
	var others []string
	for j := range c.Cfgs {
		if j != i {
			others = append(others, c.Cfgs[j].NodeID)
		}
	}
	me := []string{c.Cfgs[i].NodeID}
	c.links.Cut(me, others)
	c.links.Cut(others, me)
}

// Heal removes every partition.
func (c *Cluster) Heal() { c.links.Heal() }

// Context returns a context that ends after d or with the test.
func (c *Cluster) Context(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	c.t.Cleanup(cancel)
	return ctx
}

// OperatorConfig returns a client configuration with a new operator
// certificate.
func (c *Cluster) OperatorConfig() transport.ClientConfig {
	c.t.Helper()
	cert, err := c.CA.IssueOperator("test-operator", time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	return transport.ClientConfig{Roots: c.CA.Pool(), Certificate: cert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindGovernance}}
}

// NodeConfig returns a client configuration with a new node certificate
// naming nodeID in region, as a region node following the feed presents.
func (c *Cluster) NodeConfig(region, nodeID string) transport.ClientConfig {
	c.t.Helper()
	cert, err := c.CA.IssueNode(nodeID, pki.NodeOptions{Region: region})
	if err != nil {
		c.t.Fatal(err)
	}
	return transport.ClientConfig{Roots: c.CA.Pool(), Certificate: cert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindGovernance}}
}

func (c *Cluster) dial(i int, cfg transport.ClientConfig) *grpc.ClientConn {
	c.t.Helper()
	conn, err := transport.Dial(context.Background(), c.Addr(i), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.conns = append(c.conns, conn)
	c.mu.Unlock()
	return conn
}

// Client returns a client of node i with an operator certificate.
func (c *Cluster) Client(i int) kv1.GovernanceServiceClient {
	c.t.Helper()
	return kv1.NewGovernanceServiceClient(c.dial(i, c.OperatorConfig()))
}

// NodeClient returns a client of node i with a node certificate naming
// nodeID in region.
func (c *Cluster) NodeClient(i int, region, nodeID string) kv1.GovernanceServiceClient {
	c.t.Helper()
	return kv1.NewGovernanceServiceClient(c.dial(i, c.NodeConfig(region, nodeID)))
}

var reqSeq struct {
	mu sync.Mutex
	n  int
}

// RequestID returns a request id unique within the process.
func RequestID() string {
	reqSeq.mu.Lock()
	defer reqSeq.mu.Unlock()
	reqSeq.n++
	return "test-" + strconv.Itoa(reqSeq.n)
}

// CreateTenant creates a tenant on the leader (through any node) and fails
// the test on error.
func (c *Cluster) CreateTenant(tenant, anchorURI string, regions ...string) *kv1.GovernanceTenant {
	c.t.Helper()
	i := c.WaitLeader()
	t, err := c.Client(i).CreateTenant(c.Context(20*time.Second), &kv1.GovernanceCreateTenantRequest{
		RequestId: RequestID(), Tenant: tenant, AnchorUri: anchorURI, Regions: regions, OwnerPublicKey: c.Owner.Public,
	})
	if err != nil {
		c.t.Fatalf("creating tenant: %v", err)
	}
	return t
}

// SetAnchor points a tenant at anchorURI with g.Owner's consent, through the leader, and fails
// the test on error.
func (c *Cluster) SetAnchor(tenant, anchorURI string) *kv1.GovernanceTenant {
	c.t.Helper()
	id := RequestID()
	consent := c.Owner.Consent(c.t, owner.Statement{Tenant: tenant, Op: owner.OpSetAnchor, Anchor: anchorURI, RequestID: id})
	t, err := c.Client(c.WaitLeader()).SetAnchor(c.Context(20*time.Second), &kv1.SetAnchorRequest{
		RequestId: id, Tenant: tenant, AnchorUri: anchorURI, Consent: consent,
	})
	if err != nil {
		c.t.Fatalf("setting the anchor: %v", err)
	}
	return t
}

func freePort(t testing.TB, udp bool) int {
	t.Helper()
	port, err := netutil.FreePort(udp)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
