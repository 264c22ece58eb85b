// Starting the development region: nodes, governance, gateway, demo tenant, and waiting on them.

package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/internal/gcfloor"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// startGateway starts a gateway for the service demo/app beside the region: gRPC on base+50,
// KMIP on base+51, metrics on base+52, and a Unix socket in the directory.
func (d *devRegion) startGateway(log *slog.Logger) error {
	// The gateway's front end presents a gateway certificate of its tenant, never a node's: no
	// node listener accepts it.
	sc, err := d.ca.IssueGateway("demo", "gateway", pki.NodeOptions{})
	if err != nil {
		return err
	}
	c := gateway.DefaultConfig()
	for _, n := range d.cfgs {
		c.RegionAddrs = append(c.RegionAddrs, n.RPCAddr)
	}
	c.Region = devRegionName
	c.Roots = d.ca.Pool()
	c.Certificate = d.svcCert.TLSCertificate()
	c.ServerCertificate = sc.TLSCertificate()
	for _, a := range []struct {
		addr *string
		by   int
	}{{&c.ListenAddr, 50}, {&c.KMIPAddr, 51}, {&c.HTTPAddr, 52}} {
		if *a.addr, err = devAddr(offset(d.opts.portBase, a.by), 0, false); err != nil {
			return err
		}
	}
	c.UnixSocket = filepath.Join(d.dir, "gateway.sock")
	c.Logger = log.With("plane", "gateway")
	if d.gw, err = gateway.New(c); err != nil {
		return fmt.Errorf("dev: starting the gateway: %w", err)
	}
	d.gwDone = make(chan error, 1)
	go func() { d.gwDone <- d.gw.Serve() }()
	return nil
}

// startGovernance starts the single-node governance plane on base+40 (Raft +41, gossip +42,
// metrics +43); the region's leader follows its event feed.
func (d *devRegion) startGovernance(ctx context.Context, log *slog.Logger, gossipKey []byte) error {
	cert, err := d.ca.IssueGovernance("governance-1", pki.NodeOptions{})
	if err != nil {
		return err
	}
	c := governance.DefaultConfig()
	c.NodeID, c.DataDir = "governance-1", filepath.Join(d.dir, "governance-1")
	for _, a := range []struct {
		addr *string
		by   int
		udp  bool
	}{{&c.RPCAddr, 40, false}, {&c.RaftAddr, 41, false}, {&c.GossipAddr, 42, true}, {&c.HTTPAddr, 43, false}} {
		if *a.addr, err = devAddr(offset(d.opts.portBase, a.by), 0, a.udp); err != nil {
			return err
		}
	}
	c.BootstrapExpect = 1
	c.GossipKey = gossipKey
	c.Roots = d.ca.Pool()
	c.Certificate = cert.TLSCertificate()
	c.AllowDevAnchor = true
	c.HeartbeatInterval = time.Second
	c.Logger = log.With("plane", "governance")
	if d.gov, err = governance.Start(ctx, c); err != nil {
		return fmt.Errorf("dev: starting governance: %w", err)
	}
	return nil
}

func startDev(ctx context.Context, o *devOptions, logw io.Writer) (*devRegion, error) {
	// The nodes' collector keeps krypton server's default floor, so that the development region
	// (and krypton bench -spawn, which runs one) costs what a server does per call.
	d := &devRegion{opts: o, dir: o.dir, gcStop: gcfloor.Start(gcfloor.DefaultHeadroom)}
	if d.dir == "" {
		dir, err := os.MkdirTemp("", "krypton-dev-")
		if err != nil {
			return nil, err
		}
		d.dir, d.temp = dir, true
	}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	// The nodes log to a file in the directory, so that the terminal shows the walkthrough;
	// Raft is loud about the peers the demo kills on purpose.
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, usagef("-log-level %q: want debug, info, warn or error", o.logLevel)
	}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	d.logPath = filepath.Join(d.dir, "krypton.log")
	logFile, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	d.logFile = logFile
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: level}))
	fmt.Fprintf(logw, "krypton: development region in %s; node logs in %s\n", d.dir, d.logPath)

	certDir := filepath.Join(d.dir, "certs")
	if d.ca, err = loadCA(certDir); err != nil {
		if d.ca, err = createCA(certDir); err != nil {
			return nil, err
		}
	}
	opCert, err := d.ca.IssueOperator("dev-admin", 0)
	if err != nil {
		return nil, err
	}
	d.operator[0], d.operator[1] = operatorCertFiles(certDir, "dev-admin")
	if err := opCert.WriteFiles(d.operator[0], d.operator[1]); err != nil {
		return nil, err
	}
	if d.svcCert, err = d.ca.IssueService("demo", "app", 0); err != nil {
		return nil, err
	}
	d.service[0], d.service[1] = serviceCertFiles(certDir, "demo", "app")
	if err := d.svcCert.WriteFiles(d.service[0], d.service[1]); err != nil {
		return nil, err
	}

	// The development root key: a file, created once, that the file:// anchor warns about on every
	// use — unless -anchor names a real KMS or HSM key.
	if o.anchor != "" {
		d.anchorURI = o.anchor
	} else {
		d.anchorPath = filepath.Join(d.dir, "anchor", "root.key")
		d.anchorURI = "file://" + d.anchorPath
		p, err := anchor.Open(ctx, d.anchorURI, anchor.Options{Create: true, Logger: log})
		if err != nil {
			return nil, err
		}
		p.Close()
	}

	gossipKey := make([]byte, 32)
	rand.Read(gossipKey)
	govGossipKey := make([]byte, 32)
	rand.Read(govGossipKey)
	if err := d.startGovernance(ctx, log, govGossipKey); err != nil {
		return nil, err
	}
	for i := range devNodes {
		id := "node-" + strconv.Itoa(i+1)
		// The certificate names the region: peers and governance's feed admit only its nodes.
		cert, err := d.ca.IssueNode(id, pki.NodeOptions{Region: devRegionName})
		if err != nil {
			return nil, err
		}
		c := region.DefaultConfig()
		c.NodeID, c.Region, c.DataDir = id, devRegionName, filepath.Join(d.dir, id)
		c.Governance = []string{d.gov.Addr()}
		if c.RPCAddr, err = devAddr(o.portBase, i, false); err != nil {
			return nil, err
		}
		if c.RaftAddr, err = devAddr(offset(o.portBase, 10), i, false); err != nil {
			return nil, err
		}
		if c.GossipAddr, err = devAddr(offset(o.portBase, 20), i, true); err != nil {
			return nil, err
		}
		if c.HTTPAddr, err = devAddr(offset(o.portBase, 30), i, false); err != nil {
			return nil, err
		}
		c.BootstrapExpect = devNodes
		c.KeyringSize = o.keyringSize
		c.GossipKey = gossipKey
		c.Roots = d.ca.Pool()
		c.Certificate = cert.TLSCertificate()
		c.AllowDevAnchor = true
		c.Logger = log
		c.Tune = o.tune
		d.cfgs = append(d.cfgs, c)
	}
	// Every node joins through all the others, as production nodes are started: a node restarted
	// while the others run finds them again whichever of them it was.
	for i := range d.cfgs {
		for j := range d.cfgs {
			if j != i {
				d.cfgs[i].Join = append(d.cfgs[i].Join, d.cfgs[j].GossipAddr)
			}
		}
	}
	d.nodes = make([]*region.Node, devNodes)
	for i := range d.cfgs {
		if err := d.start(i); err != nil {
			return nil, err
		}
	}
	if _, err := d.waitLeader(ctx); err != nil {
		return nil, err
	}
	// Development settings: a short lease and a fast L1 check, so that revocation and the kill
	// switch are quick to watch.
	s := fsm.DefaultSettings()
	if !o.defaultSettings {
		s.LeaseDuration = 2 * time.Second
		s.AnchorCheckPeriod = time.Second
		s.AnchorGracePeriod = 10 * time.Second
	}
	// Settings replace the replicated ones whole, so a retry after an ambiguous failure (the
	// leader changed while the write was in flight, as happens on a loaded machine) is safe.
	var setErr error
	if err := poll(ctx, 30*time.Second, "the development settings", func() bool {
		l := d.leader()
		if l < 0 {
			return false
		}
		setErr = d.nodes[l].SetSettings(ctx, s)
		return setErr == nil
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", err, setErr)
	}
	if err := d.waitServing(ctx); err != nil {
		return nil, err
	}
	// The tenant and key the welcome text's commands use, made at governance: the region's leader
	// follows the feed, seals the tenant key with the anchor and creates the service key. The
	// demo tenants' owner key (the customer's, in a real deployment) is in the dev directory.
	ownerPub, err := d.ownerKey()
	if err != nil {
		return nil, err
	}
	govConn, err := d.dialAddr(d.gov.Addr(), pki.Identity{Kind: pki.KindGovernance}, d.operator[0], d.operator[1])
	if err != nil {
		return nil, err
	}
	gov := kv1.NewGovernanceServiceClient(govConn)
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceTenant, error) {
		return gov.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: "dev-demo-tenant", Tenant: "demo", AnchorUri: d.anchorURI, Regions: []string{devRegionName}, OwnerPublicKey: ownerPub})
	}); err != nil && status.Code(err) != codes.AlreadyExists {
		return nil, err
	}
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceServiceInfo, error) {
		return gov.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "dev-demo-key", Tenant: "demo", Service: "app"})
	}); err != nil && status.Code(err) != codes.AlreadyExists {
		return nil, err
	}
	if err := poll(ctx, 30*time.Second, "every node to know demo/app", func() bool {
		for _, n := range d.nodes {
			if _, err := n.State().Service("demo", "app"); err != nil {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, err
	}
	if err := d.startGateway(log); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// offset shifts a port base, keeping 0 (free ports) as it is.
func offset(base, by int) int {
	if base == 0 {
		return 0
	}
	return base + by
}

// devAddr is 127.0.0.1:base+i, or a free port when base is 0 (for tests and side-by-side runs).
func devAddr(base, i int, udp bool) (string, error) {
	if base != 0 {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)), nil
	}
	port, err := netutil.FreePort(udp)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

func (d *devRegion) start(i int) error {
	n, err := region.New(d.cfgs[i])
	if err != nil {
		return fmt.Errorf("dev: starting %s: %w", d.cfgs[i].NodeID, err)
	}
	d.nodes[i] = n
	return nil
}

func (d *devRegion) leader() int {
	for i, n := range d.nodes {
		if n != nil && n.Cluster().IsLeader() {
			return i
		}
	}
	return -1
}

// poll calls cond every 20 ms until it holds or ctx (bounded to limit) ends.
func poll(ctx context.Context, limit time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("dev: timed out waiting for %s", what)
		case <-t.C:
		}
	}
	return nil
}

func (d *devRegion) waitLeader(ctx context.Context) (int, error) {
	err := poll(ctx, 30*time.Second, "a leader", func() bool { return d.leader() >= 0 })
	return d.leader(), err
}

func (d *devRegion) waitServing(ctx context.Context) error {
	return poll(ctx, 30*time.Second, "every node to serve", func() bool {
		for _, n := range d.nodes {
			if n != nil && n.Serving() != nil {
				return false
			}
		}
		return true
	})
}

func (d *devRegion) dial(i int, certFile, keyFile string) (*grpc.ClientConn, error) {
	return d.dialAddr(d.cfgs[i].RPCAddr, pki.Identity{Kind: pki.KindNode, Region: devRegionName, NodeID: d.cfgs[i].NodeID}, certFile, keyFile)
}

func (d *devRegion) dialAddr(addr string, server pki.Identity, certFile, keyFile string) (*grpc.ClientConn, error) {
	cfg, err := transport.LoadClientConfig(filepath.Join(d.dir, "certs", caCertFile), certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg.Server = server
	conn, err := transport.Dial(context.Background(), addr, cfg)
	if err != nil {
		return nil, err
	}
	d.conns = append(d.conns, conn)
	return conn, nil
}

// retryWrite retries a write that carries a request id while it fails with UNAVAILABLE (no leader,
// leadership lost mid-write: the write may or may not have applied): a retry with the same id
// returns the first result, so it is safe, and the walkthrough rides out an election that a loaded
// machine can cause at any step.
func retryWrite[T any](ctx context.Context, call func() (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		res, err := call()
		if status.Code(err) != codes.Unavailable {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// devOwnerKey is the file, in the dev directory, of the demo tenants' owner key (its public key
// beside it, .pub): moving a tenant's anchor needs its consent (`krypton owner consent`).
const devOwnerKey = "owner.key"

// ownerKey returns the demo tenants' owner public key, made on the first run (kept with -keep).
func (d *devRegion) ownerKey() (string, error) {
	path := filepath.Join(d.dir, devOwnerKey)
	if pub, err := os.ReadFile(path + ".pub"); err == nil {
		return string(pub), nil
	}
	priv, pub, err := owner.GenerateKey()
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, priv, 0o600); err != nil {
		return "", err
	}
	return string(pub), os.WriteFile(path+".pub", pub, 0o644)
}
