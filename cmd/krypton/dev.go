package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/awnumar/memguard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	anchorfile "github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/client"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// devOptions are the flags of `krypton dev`.
type devOptions struct {
	dir      string
	keep     bool
	portBase int
	demo     bool
	logLevel string
	anchor   string
	// newAnchor, if set, is where to write a new development root key, and all there is to do.
	newAnchor string
}

func devCommand() *command {
	o := &devOptions{}
	return &command{
		name:     "dev",
		synopsis: "run a local three-node development region (not for production)",
		help: "Starts a three-node region in this process on 127.0.0.1, with a throwaway CA and the file:// development\n" +
			"anchor, and stays up until Ctrl-C, like `vault server -dev`: SIGINT, SIGTERM or SIGHUP stop it and remove\n" +
			"the temporary directory (unless -keep), also when stdout is a pipe whose reader is gone. With -demo it walks\n" +
			"through bootstrap, wrap and unwrap on different nodes, rotation, losing the leader, revocation and the L1 kill\n" +
			"switch, then exits.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.dir, "dir", "", "directory for data, certificates and the development root key (default: a new temporary directory)")
			fs.BoolVar(&o.keep, "keep", false, "keep -dir when the region stops (a temporary one is removed otherwise)")
			fs.IntVar(&o.portBase, "port-base", 7400, "API ports are base, base+1, base+2; Raft +10, gossip +20, metrics +30; 0 picks free ports")
			fs.BoolVar(&o.demo, "demo", false, "run the walkthrough and exit")
			fs.StringVar(&o.anchor, "anchor", "", "the L1 anchor URI for the demo tenants (awskms://, gcpkms://, azurekv://, pkcs11:); default: a file:// development root key in -dir")
			fs.StringVar(&o.logLevel, "log-level", "info", "level of the node logs written to krypton.log in -dir: debug, info, warn or error")
			fs.StringVar(&o.newAnchor, "new-anchor", "", "only write a new development root key to this file (mode 0600), print its file:// URI and exit: for hand-started nodes with -dev-anchor, which never create one")
		},
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != 0 {
				return usagef("dev takes no arguments")
			}
			defer memguard.Purge()
			if o.newAnchor != "" {
				return newDevAnchor(ctx, s, o.newAnchor)
			}
			d, err := startDev(ctx, o, s.err)
			if err != nil {
				return err
			}
			defer d.close()
			if o.demo {
				return d.runDemo(ctx, s.out)
			}
			d.printWelcome(s.out)
			<-ctx.Done()
			fmt.Fprintln(s.out, "\n==> stopping the development region; wiping every key from memory")
			return nil
		},
	}
}

// newDevAnchor writes a new development root key to path for the file:// anchor, and prints its URI.
// A node never creates one (a tenant's "?create=1" is ignored), so this is how a hand-started region
// on -dev-anchor, or the chaos suite, which knows the binary only, gets its key files.
func newDevAnchor(ctx context.Context, s *streams, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err == nil {
		return usagef("dev -new-anchor: %s exists; choose another file (a root key is never overwritten)", abs)
	}
	uri := "file://" + abs
	p, err := anchor.Open(ctx, uri, anchor.Options{Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	p.Close()
	fmt.Fprintln(s.out, uri)
	return nil
}

// devRegion is a development region running in this process.
type devRegion struct {
	opts       *devOptions
	dir        string
	temp       bool
	ca         *pki.CA
	anchorPath string
	anchorURI  string
	cfgs       []region.Config
	nodes      []*region.Node
	gov        *governance.Node // the single-node governance plane that feeds the region
	gw         *gateway.Gateway // a gateway for the service demo/app
	gwDone     chan error       // Serve's result
	svcCert    *pki.Certificate // demo/app
	conns      []*grpc.ClientConn
	operator   [2]string // certificate and key files
	logPath    string
	logFile    *os.File
	service    [2]string // of the demo/app service
}

const (
	devNodes      = 3
	devRegionName = "dev"
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
	d := &devRegion{opts: o, dir: o.dir}
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
		c.GossipKey = gossipKey
		c.Roots = d.ca.Pool()
		c.Certificate = cert.TLSCertificate()
		c.AllowDevAnchor = true
		c.Logger = log
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
	s.LeaseDuration = 2 * time.Second
	s.AnchorCheckPeriod = time.Second
	s.AnchorGracePeriod = 10 * time.Second
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

func (d *devRegion) kill(i int) {
	if d.nodes[i] != nil {
		d.nodes[i].Shutdown()
		d.nodes[i] = nil
	}
}

func (d *devRegion) close() {
	if d.gw != nil {
		d.gw.Close()
		<-d.gwDone
	}
	for _, c := range d.conns {
		c.Close()
	}
	for i := range d.nodes {
		d.kill(i)
	}
	if d.gov != nil {
		d.gov.Close()
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	if d.temp && !d.opts.keep {
		os.RemoveAll(d.dir)
	}
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

func (d *devRegion) printWelcome(w io.Writer) {
	leader := d.leader()
	fmt.Fprintln(w, "==> Krypton development region is running. NOT FOR PRODUCTION: a throwaway CA, and by default a root key in a file on this machine.")
	fmt.Fprintln(w)
	for i, c := range d.cfgs {
		role := "follower"
		if i == leader {
			role = "leader"
		}
		fmt.Fprintf(w, "    %-7s api %-16s raft %-16s metrics http://%s/metrics  (%s)\n", c.NodeID, c.RPCAddr, c.RaftAddr, c.HTTPAddr, role)
	}
	fmt.Fprintf(w, "    governance api %s: the region's leader follows its event feed\n", d.gov.Addr())
	fmt.Fprintf(w, "    gateway for demo/app: grpc %s, KMIP %s, unix %s\n", d.gw.Addr(), d.gw.KMIPAddr(), d.gw.UnixSocket())
	fmt.Fprintf(w, "\n    data, certificates and root key: %s\n", d.dir)
	fmt.Fprintf(w, "    tenant \"demo\" on %s, with service key \"demo/app\"\n\n", d.anchorURI)
	fmt.Fprintln(w, "Talk to it as an operator:")
	if dir := pathToSelf(); dir != "" {
		fmt.Fprintf(w, "    export PATH=\"%s:$PATH\"\n", dir)
	}
	fmt.Fprintf(w, "    export KRYPTON_ADDR=%s\n", d.cfgs[0].RPCAddr)
	fmt.Fprintf(w, "    export KRYPTON_CA_CERT=%s\n", filepath.Join(d.dir, "certs", caCertFile))
	fmt.Fprintf(w, "    export KRYPTON_CLIENT_CERT=%s\n", d.operator[0])
	fmt.Fprintf(w, "    export KRYPTON_CLIENT_KEY=%s\n\n", d.operator[1])
	fmt.Fprintln(w, "    krypton members")
	fmt.Fprintln(w, "    krypton operator raft list-peers")
	fmt.Fprintln(w, "    krypton key rotate demo app")
	fmt.Fprintln(w, "    krypton key describe demo app")
	fmt.Fprintf(w, "\nGovern it (tenants, policy, revocation, the kill switch):\n    export KRYPTON_GOVERNANCE_ADDR=%s\n", d.gov.Addr())
	ownerKey := filepath.Join(d.dir, devOwnerKey)
	fmt.Fprintln(w, "    krypton tenant create -anchor "+d.anchorURI+" -regions dev -owner-pub "+ownerKey+".pub acme")
	fmt.Fprintln(w, "    krypton service create acme payments")
	fmt.Fprintln(w, "    krypton revoke -tenant acme -service payments -version 1 -reason demo -dry-run")
	fmt.Fprintln(w, "    krypton tenant delete-anchor -reason \"trying the kill switch\" -wait acme   # every node refuses acme")
	consent := filepath.Join(d.dir, "consent.jws")
	fmt.Fprintln(w, "    krypton owner consent -key "+ownerKey+" -op set-anchor -anchor "+d.anchorURI+" -out "+consent+" acme   # the tenant's owner agrees")
	fmt.Fprintln(w, "    krypton tenant set-anchor -anchor "+d.anchorURI+" -consent "+consent+" acme   # lifts it; nothing was lost")
	fmt.Fprintln(w, "    krypton governance status")
	fmt.Fprintln(w, "\nWrap and unwrap as the service demo/app (wrapping takes a service certificate):")
	// The blob datakey prints goes straight to unwrap, which gives the data key back: one pipe,
	// each side with the service certificate (a NAME=value prefix reaches one command only).
	svc := fmt.Sprintf("KRYPTON_CLIENT_CERT=%s KRYPTON_CLIENT_KEY=%s", d.service[0], d.service[1])
	fmt.Fprintf(w, "    %s \\\n      krypton datakey -key demo/app | \\\n    %s \\\n      krypton unwrap -show-plaintext -\n\n", svc, svc)
	fmt.Fprintf(w, "Applications encrypt through the gateway (Go: client.DialGatewayUnix(%q)); KMIP clients such as\n", d.gw.UnixSocket())
	fmt.Fprintf(w, "PyKMIP connect to %s with a demo/app service certificate (docs/gateway.md, docs/kmip.md).\n\n", d.gw.KMIPAddr())
	if d.anchorPath != "" {
		fmt.Fprintf(w, "Pull the plug on the root key (the L1 kill switch) and watch calls fail:  touch %s.disabled\n", d.anchorPath)
	} else {
		fmt.Fprintf(w, "Pull the plug: disable %s in its console, and every node refuses the tenant within one check period.\n", d.anchorURI)
	}
	fmt.Fprintln(w, "Ctrl-C stops the region and wipes every key from memory.")
}

// pathToSelf is the directory of this executable when `krypton` on PATH is not this executable (as
// after `make dev`, which runs bin/krypton): the welcome's commands then need that directory on
// PATH, or they fail with "command not found". Empty when PATH already finds this executable.
func pathToSelf() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return ""
	}
	if found, err := exec.LookPath("krypton"); err == nil {
		if found, err = filepath.Abs(found); err == nil {
			if found, err = filepath.EvalSymlinks(found); err == nil && found == self {
				return ""
			}
		}
	}
	return filepath.Dir(self)
}

// runDemo is the walkthrough of `krypton dev -demo`. Every step goes through the public gRPC API
// with mutual TLS, as a real operator and a real service would.
func (d *devRegion) runDemo(ctx context.Context, w io.Writer) error {
	step := func(format string, a ...any) { fmt.Fprintf(w, "\n==> "+format+"\n", a...) }
	say := func(format string, a ...any) { fmt.Fprintf(w, "    "+format+"\n", a...) }

	leader := d.leader()
	follower := (leader + 1) % devNodes
	step("bootstrap: three nodes started identically with -bootstrap-expect 3 elected %s", d.cfgs[leader].NodeID)
	opConn, err := d.dial(follower, d.operator[0], d.operator[1])
	if err != nil {
		return err
	}
	admin := kv1.NewAdminServiceClient(opConn)
	peers, err := admin.ListPeers(ctx, &kv1.ListPeersRequest{})
	if err != nil {
		return err
	}
	for _, p := range peers.GetPeers() {
		role := "follower"
		if p.GetLeader() {
			role = "leader"
		}
		say("%-7s raft %-16s voter, %s", p.GetNodeId(), p.GetRaftAddress(), role)
	}

	step("governance creates tenant acme on %s in region dev, and its service acme/payments; the region's leader follows the feed", d.anchorURI)
	ownerPub, err := d.ownerKey()
	if err != nil {
		return err
	}
	govConn, err := d.dialAddr(d.gov.Addr(), pki.Identity{Kind: pki.KindGovernance}, d.operator[0], d.operator[1])
	if err != nil {
		return err
	}
	gov := kv1.NewGovernanceServiceClient(govConn)
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceTenant, error) {
		return gov.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: "demo-tenant", Tenant: "acme", AnchorUri: d.anchorURI, Regions: []string{devRegionName}, OwnerPublicKey: ownerPub})
	}); err != nil {
		return err
	}
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceServiceInfo, error) {
		return gov.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "demo-service", Tenant: "acme", Service: "payments"})
	}); err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, "acme/payments in the region", func() bool {
		_, err := admin.DescribeKey(ctx, &kv1.DescribeKeyRequest{Tenant: "acme", Service: "payments"})
		return err == nil
	}); err != nil {
		return err
	}
	say("follower %s knows acme/payments: the leader sealed its L2 with the anchor and its L3 under the L2", d.cfgs[follower].NodeID)
	svc, err := d.ca.IssueService("acme", "payments", time.Hour)
	if err != nil {
		return err
	}
	certDir := filepath.Join(d.dir, "certs")
	svcFiles := [2]string{}
	svcFiles[0], svcFiles[1] = serviceCertFiles(certDir, "acme", "payments")
	if err := svc.WriteFiles(svcFiles[0], svcFiles[1]); err != nil {
		return err
	}
	clients := make([]kv1.WrapServiceClient, devNodes)
	for i := range clients {
		conn, err := d.dial(i, svcFiles[0], svcFiles[1])
		if err != nil {
			return err
		}
		clients[i] = kv1.NewWrapServiceClient(conn)
	}
	ref := &kv1.KeyRef{Tenant: "acme", Service: "payments"}
	orderCtx := []byte("order=1001")

	step("generate a data key on node-1, unwrap it on node-2 and node-3")
	gen, err := clients[0].GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: ref, Context: orderCtx})
	if err != nil {
		return err
	}
	say("wrapped under %s/%s v%d: %d-byte blob", gen.GetKey().GetTenant(), gen.GetKey().GetService(), gen.GetKey().GetVersion(), len(gen.GetBlob()))
	for i := 1; i < devNodes; i++ {
		got, err := clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: orderCtx})
		if err != nil {
			return fmt.Errorf("dev: unwrap on %s: %w", d.cfgs[i].NodeID, err)
		}
		if !bytes.Equal(got.GetPlaintext(), gen.GetPlaintext()) {
			return fmt.Errorf("dev: %s unwrapped other bytes", d.cfgs[i].NodeID)
		}
		say("%s unwrapped the same 32 bytes", d.cfgs[i].NodeID)
	}
	if _, err := clients[1].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: []byte("order=1002")}); status.Code(err) != codes.InvalidArgument {
		return fmt.Errorf("dev: unwrap under another context: %v, want InvalidArgument", err)
	}
	say("under another context it does not open: %s", codes.InvalidArgument)

	if err := d.demoGateway(ctx, step, say); err != nil {
		return err
	}

	step("rotate acme/payments: new wraps use v2, the v1 blob still unwraps")
	key, err := retryWrite(ctx, func() (*kv1.Key, error) {
		return admin.RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "demo-rotate", Tenant: "acme", Service: "payments"})
	})
	if err != nil {
		return err
	}
	if err := poll(ctx, 10*time.Second, "the rotation on node-3", func() bool {
		r, err := clients[2].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{7}, 32)})
		return err == nil && r.GetKey().GetVersion() == key.GetCurrentVersion()
	}); err != nil {
		return err
	}
	say("current version %d; node-3 wraps under it", key.GetCurrentVersion())
	if _, err := clients[2].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: orderCtx}); err != nil {
		return fmt.Errorf("dev: v1 blob after rotation: %w", err)
	}
	say("the v1 blob still unwraps on node-3")

	leader = d.leader()
	step("kill the leader %s (no goodbye) and keep wrapping on the survivors", d.cfgs[leader].NodeID)
	d.kill(leader)
	start := time.Now()
	newLeader, err := d.waitLeader(ctx)
	if err != nil {
		return err
	}
	say("%s leads after %v", d.cfgs[newLeader].NodeID, time.Since(start).Round(time.Millisecond))
	for i := range devNodes {
		if i == leader {
			continue
		}
		if err := poll(ctx, 20*time.Second, d.cfgs[i].NodeID+" to wrap again", func() bool {
			_, err := clients[i].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{9}, 32)})
			return err == nil
		}); err != nil {
			return err
		}
		say("%s wraps again (%v after the kill)", d.cfgs[i].NodeID, time.Since(start).Round(time.Millisecond))
	}

	// The region follows governance, which alone revokes (a governed region refuses region-level
	// revocations): the surviving nodes' new leader applies the event and fences it.
	step("revoke acme/payments v1 at governance while %s is down", d.cfgs[leader].NodeID)
	rv, err := retryWrite(ctx, func() (*kv1.RevokeResponse, error) {
		return gov.Revoke(ctx, &kv1.RevokeRequest{RequestId: "demo-revoke", Target: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "demo", Wait: true})
	})
	if err != nil {
		return err
	}
	// Region dev reported it applied and fenced: every voter confirmed, or its serving lease ran
	// out. The stopped node cannot confirm, so the fence waited out its lease.
	say("event %d effective in regions %v: the running nodes applied it; %s is down, so the fence waited until its lease expired on [%s]",
		rv.GetEvent().GetCursor(), regionNames(rv.GetRegions()), d.cfgs[leader].NodeID, d.cfgs[leader].NodeID)
	step("restart %s from its data directory: it catches up before it serves", d.cfgs[leader].NodeID)
	if err := d.start(leader); err != nil {
		return err
	}
	if err := poll(ctx, 30*time.Second, d.cfgs[leader].NodeID+" to serve", func() bool { return d.nodes[leader].Serving() == nil }); err != nil {
		return err
	}
	for i := range devNodes {
		_, err := clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: orderCtx})
		if status.Code(err) != codes.FailedPrecondition {
			return fmt.Errorf("dev: %s answered %v for the revoked key, want FailedPrecondition", d.cfgs[i].NodeID, err)
		}
		say("%s refuses the v1 blob: %s", d.cfgs[i].NodeID, status.Convert(err).Message())
	}

	if err := d.demoGovernanceKillSwitch(ctx, gov, clients, ref, step, say); err != nil {
		return err
	}

	if d.anchorPath == "" {
		step("the L1 kill switch: disable the key %s in its own console and every node refuses acme within one check period", d.anchorURI)
		fmt.Fprintln(w, "\n==> demo complete")
		return nil
	}
	step("the customer disables the root key (the L1 kill switch): every node refuses the tenant")
	if err := anchorfile.Disable(d.anchorPath); err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, "the lockout", func() bool {
		for i := range devNodes {
			if _, err := clients[i].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{1}, 32)}); status.Code(err) != codes.FailedPrecondition {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	say("all three nodes refuse acme with FailedPrecondition; the sealed keys stay intact")
	if err := anchorfile.Enable(d.anchorPath); err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, "the lockout to lift", func() bool {
		_, err := clients[0].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{1}, 32)})
		return err == nil
	}); err != nil {
		return err
	}
	say("root key enabled again: acme wraps again, nothing was lost")
	fmt.Fprintln(w, "\n==> demo complete")
	return nil
}

// demoGovernanceKillSwitch deletes acme's L1 pointer at governance, shows every node refusing the
// tenant the moment DeleteAnchor returns, then sets the pointer back and shows that a blob wrapped
// before the switch still unwraps: the sealed keys were never touched.
func (d *devRegion) demoGovernanceKillSwitch(ctx context.Context, gov kv1.GovernanceServiceClient, clients []kv1.WrapServiceClient,
	ref *kv1.KeyRef, step func(string, ...any), say func(string, ...any)) error {
	blobCtx := []byte("invoice=42")
	before, err := clients[0].GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: ref, Context: blobCtx})
	if err != nil {
		return err
	}
	step("governance pulls the kill switch: delete acme's L1 pointer and wait until every region has it in force")
	start := time.Now()
	del, err := retryWrite(ctx, func() (*kv1.DeleteAnchorResponse, error) {
		return gov.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: "demo-kill", Tenant: "acme", Reason: "demo", Wait: true})
	})
	if err != nil {
		return err
	}
	say("event %d effective in %v (regions %v)", del.GetEvent().GetCursor(), time.Since(start).Round(time.Millisecond), regionNames(del.GetRegions()))
	for i := range devNodes {
		_, err := clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: before.GetBlob(), Context: blobCtx})
		if status.Code(err) != codes.FailedPrecondition {
			return fmt.Errorf("dev: %s answered %v after the kill switch, want FailedPrecondition", d.cfgs[i].NodeID, err)
		}
		say("%s refuses acme: %s", d.cfgs[i].NodeID, status.Convert(err).Message())
	}
	step("the tenant's owner signs a consent and governance sets the pointer again: the region checks that the anchor opens the sealed tenant keys, then serves")
	consent, err := d.ownerConsent("acme", d.anchorURI, "demo-restore")
	if err != nil {
		return err
	}
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceTenant, error) {
		return gov.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: "demo-restore", Tenant: "acme", AnchorUri: d.anchorURI, Consent: consent})
	}); err != nil {
		return err
	}
	for i := range devNodes {
		var got *kv1.UnwrapResponse
		if err := poll(ctx, 20*time.Second, d.cfgs[i].NodeID+" to serve acme again", func() bool {
			got, err = clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: before.GetBlob(), Context: blobCtx})
			return err == nil
		}); err != nil {
			return err
		}
		if !bytes.Equal(got.GetPlaintext(), before.GetPlaintext()) {
			return fmt.Errorf("dev: %s unwrapped other bytes after the kill switch", d.cfgs[i].NodeID)
		}
	}
	say("every node unwraps the blob wrapped before the switch: nothing was lost")
	return nil
}

func regionNames(rc []*kv1.RegionCursor) []string {
	names := make([]string, len(rc))
	for i, r := range rc {
		names[i] = r.GetRegion()
	}
	return names
}

// demoGateway encrypts a record through the gateway's Unix socket, as an application beside it
// would: the gateway makes the data key locally, has a region node wrap it, and seals the record
// under it with AES-256-GCM; the ciphertext carries the wrapped key.
func (d *devRegion) demoGateway(ctx context.Context, step func(string, ...any), say func(string, ...any)) error {
	step("an application encrypts a record through the gateway beside it (Unix socket %s)", d.gw.UnixSocket())
	c, err := client.DialGatewayUnix(d.gw.UnixSocket())
	if err != nil {
		return err
	}
	defer c.Close()
	record, recCtx := []byte("card=4111111111111111;exp=12/29"), []byte("customer=42")
	ct, err := c.Encrypt(ctx, record, recCtx)
	if err != nil {
		return fmt.Errorf("dev: encrypt through the gateway: %w", err)
	}
	say("%d-byte record -> %d-byte ciphertext (wrapped data key + AES-256-GCM payload), under demo/app", len(record), len(ct))
	pt, err := c.Decrypt(ctx, ct, recCtx)
	if err != nil {
		return fmt.Errorf("dev: decrypt through the gateway: %w", err)
	}
	if !bytes.Equal(pt, record) {
		return fmt.Errorf("dev: the gateway decrypted other bytes")
	}
	say("decrypted: the same record")
	if _, err := c.Decrypt(ctx, ct, []byte("customer=43")); err == nil {
		return fmt.Errorf("dev: decrypt under another context succeeded")
	} else {
		say("under another context it does not decrypt: %s", status.Code(err))
	}
	return nil
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

// ownerConsent signs, with the demo owner key, the consent to set tenant's anchor to uri under rid.
func (d *devRegion) ownerConsent(tenant, uri, rid string) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, devOwnerKey))
	if err != nil {
		return "", err
	}
	signer, err := owner.ParsePrivateKey(b)
	if err != nil {
		return "", err
	}
	now := time.Now()
	return signer.Sign(owner.Statement{Tenant: tenant, Op: owner.OpSetAnchor, Anchor: uri, RequestID: rid, Issued: now.Unix(), Expires: now.Add(time.Hour).Unix()})
}
