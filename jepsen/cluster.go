package jepsen

import (
	cryptorand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	// The file:// development anchor, whose key files the cluster makes.
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
)

// Timing is a run's randomised Raft timing and region settings (from the seed), printed and
// recorded in the summary so that a failing run can be repeated.
type Timing struct {
	Heartbeat         time.Duration `json:"heartbeat"`
	Election          time.Duration `json:"election"`
	LeaderLease       time.Duration `json:"leader-lease"`
	SnapshotThreshold uint64        `json:"snapshot-threshold"`
	SnapshotInterval  time.Duration `json:"snapshot-interval"`
	TrailingLogs      uint64        `json:"trailing-logs"`
	Lease             time.Duration `json:"lease"`
	AnchorCheck       time.Duration `json:"anchor-check"`
	AnchorGrace       time.Duration `json:"anchor-grace"`
}

// randomTiming draws short timings, with low snapshot thresholds and trailing logs so that
// snapshot installs really run.
func randomTiming(r *rand.Rand) Timing {
	hb := time.Duration(150+r.IntN(250)) * time.Millisecond
	return Timing{
		Heartbeat:         hb,
		Election:          hb + time.Duration(r.IntN(int(hb))),
		LeaderLease:       hb / 2,
		SnapshotThreshold: uint64(16 + r.IntN(112)),
		SnapshotInterval:  time.Duration(500+r.IntN(1500)) * time.Millisecond,
		TrailingLogs:      uint64(4 + r.IntN(60)),
		Lease:             time.Duration(1500+r.IntN(1500)) * time.Millisecond,
		AnchorCheck:       time.Duration(500+r.IntN(500)) * time.Millisecond,
		AnchorGrace:       time.Duration(3000+r.IntN(3000)) * time.Millisecond,
	}
}

// node is one krypton server process (or none, while it is down).
type node struct {
	i       int
	id      string
	bin     string // the binary it runs: the cluster's, or, in an upgrade scenario, the old one until upgraded
	dir     string // data directory
	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	paused  bool
	// expectExit: the harness started the node expecting it to refuse to start (corrupt-restart);
	// its exit is not a crash.
	expectExit bool
	// crashes are the exits the harness did not cause (the no-crash checker).
	crashes []string
}

// cluster runs the region under test: certificates, anchors, node processes, the network; and,
// in governance mode, the governance plane that feeds the region.
type cluster struct {
	bin       string
	oldBin    string // an upgrade scenario's previous release (upgrade.go); "" otherwise
	dir       string
	net       network
	timing    Timing
	gossipKey string // a file holding the region's gossip key (never on a node's argv)
	ca        *pki.CA
	caPath    string
	nodes     []*node
	anchors   []string // anchor key files, one per tenant
	// region is the region's name (the nodes' -region and certificates); prefix starts its node
	// ids (n1…, or a1… and b1… with two regions); base is the network host index of its first
	// node and govBase that of the first governance node (multiregion.go puts a second region's
	// nodes after the first's, and governance after both).
	region  string
	prefix  string
	base    int
	govBase int
	// disks are the nodes' own filesystems (disk.go), when the scenario lists a disk nemesis.
	disks []*nodeDisk

	// Governance mode (Scenario.Governance > 0): the governance nodes, on the network's hosts
	// after the region's (host index len(nodes)+j), with a gossip key of their own.
	gov          []*node
	govGossipKey string // a file, as gossipKey
	// The tenants' owner key: governance lifts a deleted anchor only with its consent.
	owner    *owner.Signer
	ownerPub string
}

// consent signs the owner's consent to set tenant's anchor to uri under request id rid.
func (c *cluster) consent(tenant, uri, rid string) (string, error) {
	now := time.Now()
	return c.owner.Sign(owner.Statement{Tenant: tenant, Op: owner.OpSetAnchor, Anchor: uri, RequestID: rid, Issued: now.Unix(), Expires: now.Add(time.Hour).Unix()})
}

// regionName is the region's name, which the node certificates name.
const regionName = "jepsen"

func newCluster(bin, dir string, nw network, n int, timing Timing, tenants, govNodes int) (*cluster, error) {
	return newRegionCluster(bin, dir, nw, n, timing, tenants, govNodes, regionName, "n", 0, n)
}

// newRegionCluster is newCluster for a region named region whose node ids start with prefix,
// its nodes on network hosts base… and governance's on govBase….
func newRegionCluster(bin, dir string, nw network, n int, timing Timing, tenants, govNodes int, region, prefix string, base, govBase int) (*cluster, error) {
	c := &cluster{bin: bin, dir: dir, net: nw, timing: timing, region: region, prefix: prefix, base: base, govBase: govBase}
	priv, pub, err := owner.GenerateKey()
	if err != nil {
		return nil, err
	}
	if c.owner, err = owner.ParsePrivateKey(priv); err != nil {
		return nil, err
	}
	c.ownerPub = string(pub)
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	// Gossip keys go to the nodes as files: `krypton server` refuses -gossip-key on argv.
	newKeyFile := func(name string) (string, error) {
		key := make([]byte, 32)
		if _, err := cryptorand.Read(key); err != nil {
			return "", err
		}
		path := filepath.Join(pkiDir, name)
		return path, os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	}
	if c.gossipKey, err = newKeyFile("gossip.key"); err != nil {
		return nil, err
	}
	if govNodes > 0 {
		if c.govGossipKey, err = newKeyFile("gov-gossip.key"); err != nil {
			return nil, err
		}
	}
	ca, err := pki.NewCA("krypton jepsen CA", 0)
	if err != nil {
		return nil, err
	}
	c.ca = ca
	c.caPath = filepath.Join(pkiDir, "ca.pem")
	if err := ca.WriteFiles(c.caPath, filepath.Join(pkiDir, "ca-key.pem")); err != nil {
		return nil, err
	}
	if err := c.addNodes(n); err != nil {
		return nil, err
	}
	for j := range govNodes {
		i := govBase + j
		nd := &node{i: i, id: "g" + strconv.Itoa(j+1), dir: filepath.Join(dir, "nodes", "g"+strconv.Itoa(j+1), "data")}
		nd.logPath = filepath.Join(dir, "nodes", nd.id, "server.log")
		if err := os.MkdirAll(filepath.Dir(nd.dir), 0o700); err != nil {
			return nil, err
		}
		cert, err := ca.IssueGovernance(nd.id, pki.NodeOptions{IPs: []net.IP{net.ParseIP(nw.host(i))}})
		if err != nil {
			return nil, err
		}
		if err := cert.WriteFiles(c.certPath(nd), c.keyPath(nd)); err != nil {
			return nil, err
		}
		c.gov = append(c.gov, nd)
	}
	anchorDir := filepath.Join(dir, "anchors")
	if err := os.MkdirAll(anchorDir, 0o700); err != nil {
		return nil, err
	}
	for t := range tenants {
		path := filepath.Join(anchorDir, "t"+strconv.Itoa(t+1)+".key")
		// The key files are made by the binary under test (`krypton dev -new-anchor`): a node never
		// creates one because a tenant's URI says create=1, and the harness knows only the binary.
		if out, err := exec.Command(bin, "dev", "-new-anchor", path).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("jepsen: making the root key of tenant t%d: %v: %s", t+1, err, out)
		}
		c.anchors = append(c.anchors, path)
	}
	return c, nil
}

// addNodes issues certificates for the region's n nodes.
func (c *cluster) addNodes(n int) error {
	for i := range n {
		id := c.prefix + strconv.Itoa(i+1)
		nd := &node{i: c.base + i, id: id, dir: filepath.Join(c.dir, "nodes", id, "data")}
		nd.logPath = filepath.Join(c.dir, "nodes", nd.id, "server.log")
		if err := os.MkdirAll(filepath.Dir(nd.dir), 0o700); err != nil {
			return err
		}
		// The certificate names the region: peers and governance's feed admit only its nodes.
		opts := pki.NodeOptions{IPs: []net.IP{net.ParseIP(c.net.host(nd.i))}, Region: c.region}
		cert, err := c.ca.IssueNode(nd.id, opts)
		if err != nil {
			return err
		}
		if err := cert.WriteFiles(c.certPath(nd), c.keyPath(nd)); err != nil {
			return err
		}
		c.nodes = append(c.nodes, nd)
	}
	return nil
}

// sibling is a second region fed by c's governance plane: the same CA, owner, anchors and
// governance nodes, its own name, node ids, gossip key and network hosts (base…).
func (c *cluster) sibling(n int, region, prefix string, base int) (*cluster, error) {
	s := &cluster{bin: c.bin, dir: c.dir, net: c.net, timing: c.timing, ca: c.ca, caPath: c.caPath, anchors: c.anchors,
		gov: c.gov, govGossipKey: c.govGossipKey, owner: c.owner, ownerPub: c.ownerPub,
		region: region, prefix: prefix, base: base, govBase: c.govBase}
	key := make([]byte, 32)
	if _, err := cryptorand.Read(key); err != nil {
		return nil, err
	}
	s.gossipKey = filepath.Join(c.dir, "pki", "gossip-"+region+".key")
	if err := os.WriteFile(s.gossipKey, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return s, s.addNodes(n)
}

// host is the network host index of node i.
func (c *cluster) host(i int) int { return c.base + i }

func (c *cluster) certPath(nd *node) string {
	return filepath.Join(c.dir, "pki", "node-"+nd.id+".pem")
}
func (c *cluster) keyPath(nd *node) string {
	return filepath.Join(c.dir, "pki", "node-"+nd.id+"-key.pem")
}

// addr is the address of network host i's listener kind (host indices: c.host, c.govBase+j).
func (c *cluster) addr(i, kind int) string {
	return net.JoinHostPort(c.net.host(i), strconv.Itoa(c.net.port(i, kind)))
}

// apiAddr is node i's gRPC address.
func (c *cluster) apiAddr(i int) string { return c.addr(c.host(i), 0) }

// httpAddr is node i's plain HTTP address (/metrics, for the soak sampler).
func (c *cluster) httpAddr(i int) string { return c.addr(c.host(i), 3) }

// govAddr is governance node j's GovernanceService address.
func (c *cluster) govAddr(j int) string { return c.addr(c.govBase+j, 0) }

// govAddrs lists every governance node's API address (the region's -governance flag).
func (c *cluster) govAddrs() []string {
	var out []string
	for j := range c.gov {
		out = append(out, c.govAddr(j))
	}
	return out
}

// anchorURI is tenant t's file:// development anchor.
func (c *cluster) anchorURI(t int) string { return "file://" + c.anchors[t] }

// start launches node i; bootstrap says whether it may bootstrap a new region (the first start)
// or only joins (a wiped node coming back).
func (c *cluster) start(i int, bootstrap bool) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		return fmt.Errorf("jepsen: %s is already running", nd.id)
	}
	var join []string
	for j := range c.nodes {
		if j != i {
			join = append(join, c.addr(c.host(j), 2))
		}
	}
	expect := 0
	if bootstrap {
		expect = len(c.nodes)
	}
	t := c.timing
	argv := []string{c.binOf(nd), "server",
		"-node-id", nd.id, "-region", c.region, "-data-dir", nd.dir,
		"-api-addr", c.addr(nd.i, 0), "-raft-addr", c.addr(nd.i, 1), "-gossip-addr", c.addr(nd.i, 2), "-http-addr", c.httpAddr(i),
		"-bootstrap-expect", strconv.Itoa(expect), "-join", joinList(join),
		"-gossip-key-file", c.gossipKey, "-ca-cert", c.caPath, "-cert", c.certPath(nd), "-key", c.keyPath(nd),
		"-dev-anchor", "-log-level", "info",
		"-raft-heartbeat-timeout", t.Heartbeat.String(), "-raft-election-timeout", t.Election.String(),
		"-raft-leader-lease-timeout", t.LeaderLease.String(),
		"-raft-snapshot-threshold", strconv.FormatUint(t.SnapshotThreshold, 10),
		"-raft-snapshot-interval", t.SnapshotInterval.String(),
		"-raft-trailing-logs", strconv.FormatUint(t.TrailingLogs, 10),
		"-region-settings", fmt.Sprintf("lease-duration=%s,anchor-check-period=%s,anchor-grace-period=%s", t.Lease, t.AnchorCheck, t.AnchorGrace),
	}
	if len(c.gov) > 0 {
		argv = append(argv, "-governance", joinList(c.govAddrs()))
	}
	return c.launch(nd, argv)
}

// binOf is the binary nd runs.
func (c *cluster) binOf(nd *node) string {
	if nd.bin != "" {
		return nd.bin
	}
	return c.bin
}

// startGov launches governance node j; bootstrap as for start.
func (c *cluster) startGov(j int, bootstrap bool) error {
	nd := c.gov[j]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd != nil {
		return fmt.Errorf("jepsen: %s is already running", nd.id)
	}
	var join []string
	for k := range c.gov {
		if k != j {
			join = append(join, c.addr(c.gov[k].i, 2))
		}
	}
	expect := 0
	if bootstrap {
		expect = len(c.gov)
	}
	t := c.timing
	argv := []string{c.bin, "governance", "server",
		"-node-id", nd.id, "-data-dir", nd.dir,
		"-api-addr", c.addr(nd.i, 0), "-raft-addr", c.addr(nd.i, 1), "-gossip-addr", c.addr(nd.i, 2),
		"-bootstrap-expect", strconv.Itoa(expect), "-join", joinList(join),
		"-gossip-key-file", c.govGossipKey, "-ca-cert", c.caPath, "-cert", c.certPath(nd), "-key", c.keyPath(nd),
		"-dev-anchor", "-log-level", "info", "-heartbeat-interval", "1s",
		"-raft-heartbeat-timeout", t.Heartbeat.String(), "-raft-election-timeout", t.Election.String(),
		"-raft-leader-lease-timeout", t.LeaderLease.String(),
		"-raft-snapshot-threshold", strconv.FormatUint(t.SnapshotThreshold, 10),
		"-raft-snapshot-interval", t.SnapshotInterval.String(),
		"-raft-trailing-logs", strconv.FormatUint(t.TrailingLogs, 10),
	}
	return c.launch(nd, argv)
}

// launch starts argv as node nd (nd.mu held) in its network namespace, logging to its log file.
func (c *cluster) launch(nd *node, argv []string) error {
	argv = c.net.wrap(nd.i, argv)
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== jepsen: starting %s at %s\n", nd.id, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Each node in its own process group, so that a signal to the harness (Ctrl-C in a
	// terminal) does not reach the nodes before the harness has recorded and stopped them.
	// (No Pdeathsig: it fires when the forking OS thread ends, and the netns dialer ends threads.
	// Teardown and the stale-namespace sweep stop nodes instead.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("jepsen: starting %s: %w", nd.id, err)
	}
	nd.cmd = cmd
	nd.paused = false
	exited := make(chan struct{})
	nd.exited = exited
	started := time.Now()
	go func() {
		err := cmd.Wait()
		logf.Close()
		nd.mu.Lock()
		if nd.cmd == cmd {
			// Nobody stopped it (kill and stop clear nd.cmd first): it exited on its own. It is
			// down now, and healAll starts it again.
			nd.cmd, nd.paused = nil, false
			if !nd.expectExit {
				nd.crashes = append(nd.crashes, fmt.Sprintf("%s exited on its own after %s: %v (see %s)", nd.id, time.Since(started).Round(time.Millisecond), err, nd.logPath))
			}
		}
		nd.mu.Unlock()
		close(exited)
	}()
	return nil
}

func joinList(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// signal sends sig to node i's process; false if it is not running.
func (c *cluster) signal(i int, sig syscall.Signal) bool { return signalNode(c.nodes[i], sig) }

func signalNode(nd *node, sig syscall.Signal) bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.cmd == nil {
		return false
	}
	_ = nd.cmd.Process.Signal(sig)
	switch sig {
	case syscall.SIGSTOP:
		nd.paused = true
	case syscall.SIGCONT:
		nd.paused = false
	}
	return true
}

// kill SIGKILLs node i and waits for it to be gone.
func (c *cluster) kill(i int) { killNode(c.nodes[i]) }

func killNode(nd *node) {
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.cmd = nil
	nd.paused = false
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop stops node i gracefully (SIGCONT first if paused, then SIGTERM), SIGKILL after timeout.
func (c *cluster) stop(i int, timeout time.Duration) { stopNode(c.nodes[i], timeout) }

func stopNode(nd *node, timeout time.Duration) {
	nd.mu.Lock()
	cmd, exited := nd.cmd, nd.exited
	nd.cmd = nil
	nd.paused = false
	nd.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

func (c *cluster) running(i int) bool { return runningNode(c.nodes[i]) }

func runningNode(nd *node) bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.cmd != nil && !nd.paused
}

// useDisks puts every region node's data directory on a filesystem of its own (disk.go).
func (c *cluster) useDisks() error {
	for _, nd := range c.nodes {
		home := filepath.Dir(nd.dir)
		d, err := newDisk(filepath.Join(home, "disk.img"), filepath.Join(home, "disk"))
		if err != nil {
			c.closeDisks(false)
			return err
		}
		c.disks = append(c.disks, d)
		nd.dir = filepath.Join(home, "disk", "data")
	}
	return nil
}

// closeDisks unmounts the nodes' disks (the nodes must be down); keep keeps the images.
func (c *cluster) closeDisks(keep bool) {
	for _, d := range c.disks {
		d.close(keep)
	}
	c.disks = nil
}

// wipe deletes node i's data directory (it must be down).
func (c *cluster) wipe(i int) error { return os.RemoveAll(c.nodes[i].dir) }

// shutdown stops every node, in parallel.
func (c *cluster) shutdown() {
	var wg sync.WaitGroup
	for _, nd := range append(append([]*node(nil), c.nodes...), c.gov...) {
		wg.Add(1)
		go func() { defer wg.Done(); stopNode(nd, 10*time.Second) }()
	}
	wg.Wait()
}

// setAnchor puts tenant t's anchor in a mode by its marker files (anchor/file's documented
// ".unavailable" and ".disabled" suffixes): "ok", "unavailable" (transient failures) or
// "disabled" (a definite denial).
func (c *cluster) setAnchor(t int, mode string) error {
	p := c.anchors[t]
	for _, m := range []string{".unavailable", ".disabled", ".stalled"} { // anchor/file's markers
		if err := os.Remove(p + m); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if mode == "ok" {
		return nil
	}
	return os.WriteFile(p+"."+mode, nil, 0o600)
}
