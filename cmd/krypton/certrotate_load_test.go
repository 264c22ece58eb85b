package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// rotated is one certificate that the test replaces: its files, how to issue its successor, the
// Reloader that watches them, and the listeners that present it (each dialled as a client the
// listener accepts).
type rotated struct {
	name      string
	cert, key string
	issue     func() (*pki.Certificate, error)
	rl        *pki.Reloader
	pair      int
	listeners []listener
	next      *pki.Certificate // the successor, once written
}

type listener struct {
	addr string
	as   *pki.Certificate
}

// rotationKit issues certificates into files and keeps the Reloaders that watch them.
type rotationKit struct {
	t      *testing.T
	ca     *pki.CA
	dir    string
	caFile string
	mu     sync.Mutex
	certs  []*rotated
}

// pairs writes each certificate to files under name and returns a Reloader over them (in this
// order), recording each as a certificate to rotate.
func (k *rotationKit) pairs(name string, issue ...func() (*pki.Certificate, error)) (*pki.Reloader, []*rotated) {
	k.t.Helper()
	var rp []pki.ReloadPair
	var rs []*rotated
	for i, f := range issue {
		c, err := f()
		if err != nil {
			k.t.Fatal(err)
		}
		r := &rotated{name: fmt.Sprintf("%s/%d", name, i), cert: filepath.Join(k.dir, fmt.Sprintf("%s-%d.pem", name, i)),
			key: filepath.Join(k.dir, fmt.Sprintf("%s-%d-key.pem", name, i)), issue: f, pair: i}
		if err := c.WriteFiles(r.cert, r.key); err != nil {
			k.t.Fatal(err)
		}
		rp = append(rp, pki.ReloadPair{Name: strconv.Itoa(i), CertFile: r.cert, KeyFile: r.key})
		rs = append(rs, r)
	}
	rl, err := pki.NewReloader(pki.ReloaderConfig{CAFile: k.caFile, Pairs: rp})
	if err != nil {
		k.t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range rs {
		r.rl = rl
		k.certs = append(k.certs, r)
	}
	return rl, rs
}

// served completes a handshake with addr as cert and returns the serial the server presented.
func served(ca *pki.CA, addr string, as *pki.Certificate) (*big.Int, error) {
	d := &tls.Dialer{Config: pki.ClientTLSConfig(ca.Pool(), as.TLSCertificate(), "127.0.0.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// histogramCount sums the sample counts of a histogram family in g.
func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// counterSum sums a counter family in g.
func counterSum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestRotateEveryCertificateUnderLoad replaces every certificate of a running deployment — the
// three nodes of a region, the three nodes of the governance plane the region follows, and a
// gateway's server and service certificates — while two `krypton bench` runs load it, one on the
// region's nodes (-op mixed), one through the gateway (-op datakey), and an operator reads from
// governance. Every component reads its files through a pki.Reloader watching them, as the
// daemons do. New handshakes on every listener (region API and Raft, governance API and Raft, the
// gateway's gRPC front end) present the new serial, with no restart; the load runs on after the
// rotation; and no call of the benches or of the operator fails. Afterwards a service created
// through governance reaches every region node (the feed runs over the new certificates).
func TestRotateEveryCertificateUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a region, a governance plane and a gateway")
	}
	ca, err := pki.NewCA("rotation test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	k := &rotationKit{t: t, ca: ca, dir: t.TempDir()}
	k.caFile = filepath.Join(k.dir, "ca.pem")
	if err := ca.WriteFiles(k.caFile, filepath.Join(k.dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	operator, err := ca.IssueOperator("ops", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	// Governance: three nodes, each on a watched certificate.
	govNodes := map[string]*rotated{}
	g := governancetest.Start(t, 3, governancetest.WithCA(ca), governancetest.WithConfig(func(c *governance.Config) {
		id := c.NodeID
		rl, rs := k.pairs("gov-"+id, func() (*pki.Certificate, error) { return ca.IssueGovernance(id, pki.NodeOptions{}) })
		k.mu.Lock()
		govNodes[id] = rs[0]
		k.mu.Unlock()
		c.CertSource = rl.Source(0)
		m := c.CertSource.Current()
		c.Roots, c.Certificate = m.Roots, m.Certificate
	}))
	for i, c := range g.Cfgs {
		peer, err := ca.IssueGovernance(g.Cfgs[(i+1)%len(g.Cfgs)].NodeID, pki.NodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		govNodes[c.NodeID].listeners = []listener{{c.RPCAddr, operator}, {c.RaftAddr, peer}}
	}

	// The region, following governance's feed.
	nodes := map[string]*rotated{}
	r := regiontest.Start(t, 3, regiontest.WithCA(ca), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...),
		regiontest.WithConfig(func(c *region.Config) {
			id, reg := c.NodeID, c.Region
			rl, rs := k.pairs("node-"+id, func() (*pki.Certificate, error) { return ca.IssueNode(id, pki.NodeOptions{Region: reg}) })
			k.mu.Lock()
			nodes[id] = rs[0]
			k.mu.Unlock()
			c.CertSource = rl.Source(0)
			m := c.CertSource.Current()
			c.Roots, c.Certificate = m.Roots, m.Certificate
		}))
	for i, c := range r.Cfgs {
		peer, err := ca.IssueNode(r.Cfgs[(i+1)%len(r.Cfgs)].NodeID, pki.NodeOptions{Region: c.Region})
		if err != nil {
			t.Fatal(err)
		}
		nodes[c.NodeID].listeners = []listener{{c.RPCAddr, operator}, {c.RaftAddr, peer}}
	}

	// The tenant and its services, through governance.
	gov := func(what string, call func(ctx context.Context, c kv1.GovernanceServiceClient) error) {
		t.Helper()
		clustertest.Eventually(t, time.Minute, what, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := call(ctx, g.Client(max(g.Leader(), 0)))
			return err == nil
		})
	}
	tenantID := governancetest.RequestID()
	gov("create tenant acme", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: tenantID, Tenant: "acme", AnchorUri: r.Anchor, Regions: []string{"eu"}, OwnerPublicKey: g.Owner.Public})
		return err
	})
	createService := func(service string) {
		t.Helper()
		id := governancetest.RequestID()
		gov("create service "+service, func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			_, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "acme", Service: service})
			return err
		})
		clustertest.Eventually(t, time.Minute, "service "+service+" usable on every region node", func() bool {
			for _, n := range r.Nodes {
				if _, err := n.State().Usable("acme", service, 0, fsm.OpWrap); err != nil {
					return false
				}
			}
			return true
		})
	}
	createService("payments")

	// The gateway of acme/payments: its service certificate (to the region) and its server
	// certificate, in one Reloader as `krypton gateway` has them.
	grl, grs := k.pairs("gateway",
		func() (*pki.Certificate, error) { return ca.IssueService("acme", "payments", time.Hour) },
		func() (*pki.Certificate, error) { return ca.IssueGateway("acme", "gateway-acme", pki.NodeOptions{}) })
	port, err := netutil.FreePort(false)
	if err != nil {
		t.Fatal(err)
	}
	gcfg := gateway.DefaultConfig()
	for _, c := range r.Cfgs {
		gcfg.RegionAddrs = append(gcfg.RegionAddrs, c.RPCAddr)
	}
	gcfg.Region = "eu"
	gcfg.ListenAddr = "127.0.0.1:" + strconv.Itoa(port)
	gcfg.CertSource, gcfg.ServerCertSource = grl.Source(0), grl.Source(1)
	gcfg.Roots = grl.Source(0).Current().Roots
	gcfg.Certificate, gcfg.ServerCertificate = grl.Source(0).Current().Certificate, grl.Source(1).Current().Certificate
	gcfg.MaxAttempts = 16
	gcfg.Logger = clustertest.NewLogger(t)
	gw, err := gateway.New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	gwServed := make(chan error, 1)
	go func() { gwServed <- gw.Serve() }()
	t.Cleanup(func() { gw.Close(); <-gwServed })

	// The load's client: a service certificate of acme/payments, not rotated (it is the
	// application's, not the deployment's).
	client, err := ca.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := filepath.Join(k.dir, "client.pem"), filepath.Join(k.dir, "client-key.pem")
	if err := client.WriteFiles(clientCert, clientKey); err != nil {
		t.Fatal(err)
	}
	grs[1].listeners = []listener{{gw.Addr().String(), client}}

	// Every Reloader watches its files, as the daemons' do.
	watchCtx, stopWatching := context.WithCancel(context.Background())
	var watchers sync.WaitGroup
	seen := map[*pki.Reloader]bool{}
	for _, c := range k.certs {
		if !seen[c.rl] {
			seen[c.rl] = true
			rl := c.rl
			watchers.Go(func() { rl.Watch(watchCtx, 20*time.Millisecond) })
		}
	}
	defer func() { stopWatching(); watchers.Wait() }()

	var addrs []string
	for _, c := range r.Cfgs {
		addrs = append(addrs, c.RPCAddr)
	}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	type benchRun struct {
		name           string
		out            string
		stdout, stderr bytes.Buffer
		err            error
		done           chan struct{}
	}
	runBench := func(name string, args ...string) *benchRun {
		b := &benchRun{name: name, out: filepath.Join(k.dir, name+".json"), done: make(chan struct{})}
		args = append([]string{"bench", "-key", "acme/payments", "-ca-cert", k.caFile, "-client-cert", clientCert, "-client-key", clientKey,
			"-callers", "4", "-duration", "10m", "-warmup", "0s", "-call-timeout", "30s", "-quiet", "-out", b.out}, args...)
		go func() {
			defer close(b.done)
			b.err = dispatch(loadCtx, rootCommand(), args, &streams{out: &b.stdout, err: &b.stderr})
		}()
		return b
	}
	benches := []*benchRun{
		runBench("region", "-addr", strings.Join(addrs, ","), "-op", "mixed"),
		runBench("gateway", "-gateway", gw.Addr().String(), "-op", "datakey"),
	}
	stopBenches := func() {
		stopLoad()
		for _, b := range benches {
			<-b.done
		}
	}
	defer stopBenches()

	// A client that keeps the region's contract: each call on the next node, over a connection
	// of its own renewed every few calls (new handshakes before, during and after the rotation);
	// the answer that the node holds no serving lease ("try another node", which nodes of a region
	// on a busy machine give whenever a lease lapses) is retried on the next node; any other
	// error is a failure.
	var regionCalls, regionFailures atomic.Int64
	var regionErr atomic.Value
	regionDone := make(chan struct{})
	go func() {
		defer close(regionDone)
		svc := transport.ClientConfig{Roots: ca.Pool(), Certificate: client.TLSCertificate(), Server: pki.Identity{Kind: pki.KindNode}}
		var conn *grpc.ClientConn
		defer func() {
			if conn != nil {
				conn.Close()
			}
		}()
		req := &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: bytes.Repeat([]byte{0x5a}, 32)}
		for i := 0; loadCtx.Err() == nil; i++ {
			ctx, cancel := context.WithTimeout(loadCtx, 30*time.Second)
			var err error
			for attempt := 0; ; attempt++ {
				if conn == nil || (i+attempt)%8 == 0 {
					if conn != nil {
						conn.Close()
					}
					if conn, err = transport.Dial(ctx, addrs[(i+attempt)%len(addrs)], svc); err != nil {
						conn = nil
						break
					}
				}
				_, err = kv1.NewWrapServiceClient(conn).Wrap(ctx, req)
				if err == nil || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "holds no serving lease") || ctx.Err() != nil {
					break
				}
				conn.Close()
				conn = nil // try another node
			}
			cancel()
			if loadCtx.Err() != nil {
				return
			}
			regionCalls.Add(1)
			if err != nil {
				regionFailures.Add(1)
				regionErr.Store(err.Error())
			}
		}
	}()

	// An operator reads from governance throughout, on a connection made before the rotation.
	var govCalls, govFailures atomic.Int64
	var govErr atomic.Value
	govDone := make(chan struct{})
	go func() {
		defer close(govDone)
		gc := g.Client(0)
		for loadCtx.Err() == nil {
			ctx, cancel := context.WithTimeout(loadCtx, 20*time.Second)
			_, err := gc.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
			cancel()
			if loadCtx.Err() != nil {
				return
			}
			govCalls.Add(1)
			if err != nil {
				govFailures.Add(1)
				govErr.Store(err.Error())
			}
		}
	}()

	regionOps := func() uint64 {
		var n uint64
		for _, nd := range r.Nodes {
			n += histogramCount(t, nd.Registry(), "krypton_wrap_seconds")
		}
		return n
	}
	gatewayRequests := func() float64 { return counterSum(t, gw.Registry(), "krypton_gateway_requests_total") }
	clustertest.Eventually(t, time.Minute, "both benches and the operator under way", func() bool {
		for _, b := range benches {
			select {
			case <-b.done:
				t.Fatalf("krypton bench (%s) ended before the rotation: %v\n%s%s", b.name, b.err, b.stdout.String(), b.stderr.String())
			default:
			}
		}
		return regionOps() > 200 && gatewayRequests() > 100 && govCalls.Load() > 10 && regionCalls.Load() > 10
	})

	// Rotate: every certificate's files replaced by a successor with a new serial.
	for _, c := range k.certs {
		next, err := c.issue()
		if err != nil {
			t.Fatal(err)
		}
		if err := next.WriteFiles(c.cert, c.key); err != nil {
			t.Fatal(err)
		}
		c.next = next
	}
	for _, c := range k.certs {
		c := c
		clustertest.Eventually(t, time.Minute, c.name+" reloaded", func() bool {
			return c.rl.Source(c.pair).Current().Certificate.Leaf.SerialNumber.Cmp(c.next.Leaf().SerialNumber) == 0
		})
		for _, l := range c.listeners {
			clustertest.Eventually(t, time.Minute, "new handshakes with "+c.name+" on "+l.addr+" present the new serial", func() bool {
				s, err := served(ca, l.addr, l.as)
				return err == nil && s.Cmp(c.next.Leaf().SerialNumber) == 0
			})
		}
	}
	t.Logf("rotated %d certificates", len(k.certs))

	// The load runs on after the rotation.
	ops, reqs, calls, direct := regionOps(), gatewayRequests(), govCalls.Load(), regionCalls.Load()
	var nowOps uint64
	var nowReqs float64
	var nowCalls, nowDirect int64
	for deadline := time.Now().Add(2 * time.Minute); ; {
		nowOps, nowReqs, nowCalls, nowDirect = regionOps(), gatewayRequests(), govCalls.Load(), regionCalls.Load()
		if nowOps >= ops+50 && nowReqs >= reqs+20 && nowCalls >= calls+5 && nowDirect >= direct+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the load stalled after the rotation: in 2m, %d more region operations (want 50), %v more gateway requests (want 20), %d more governance reads (want 5; %d failed: %v), %d more direct wraps (want 20; %d failed: %v)",
				nowOps-ops, nowReqs-reqs, nowCalls-calls, govFailures.Load(), govErr.Load(), nowDirect-direct, regionFailures.Load(), regionErr.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("after the rotation: %d more region operations, %v more gateway requests, %d more governance reads, %d more direct wraps",
		nowOps-ops, nowReqs-reqs, nowCalls-calls, nowDirect-direct)
	stopBenches()
	<-govDone
	<-regionDone

	for _, b := range benches {
		if b.err != nil {
			t.Errorf("krypton bench (%s): %v\n%s%s", b.name, b.err, b.stdout.String(), b.stderr.String())
			continue
		}
		raw, err := os.ReadFile(b.out)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Total struct {
				Calls  int64            `json:"calls"`
				OK     int64            `json:"ok"`
				Errors map[string]int64 `json:"errors"`
			} `json:"total"`
		}
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("%s: %v", b.out, err)
		}
		t.Logf("krypton bench (%s): %d calls, %d operations succeeded, errors %v", b.name, res.Total.Calls, res.Total.OK, res.Total.Errors)
		if res.Total.OK == 0 {
			t.Errorf("krypton bench (%s): no operation succeeded", b.name)
		}
		for code, n := range res.Total.Errors {
			// krypton bench on the nodes does not try another node when one answers that it holds
			// no serving lease (Unavailable), as a lapsed lease on a busy machine makes it do, with or
			// without a rotation; the direct client above checks that those are the only
			// Unavailable answers. Through the gateway, which tries another node, nothing may fail.
			if b.name == "gateway" || code != codes.Unavailable.String() {
				t.Errorf("krypton bench (%s): %d calls failed with %s: want none failed", b.name, n, code)
			}
		}
	}
	if n := govFailures.Load(); n != 0 {
		t.Errorf("%d of %d governance reads failed during the rotation; last: %v", n, govCalls.Load(), govErr.Load())
	}
	if n := regionFailures.Load(); n != 0 {
		t.Errorf("%d of %d direct wraps failed during the rotation; last: %v", n, regionCalls.Load(), regionErr.Load())
	}
	t.Logf("%d governance reads (%d failed) and %d direct wraps, a new connection every 8 (%d failed)", govCalls.Load(), govFailures.Load(), regionCalls.Load(), regionFailures.Load())

	// The feed from governance to the region runs over the new certificates.
	createService("ledger")
}
