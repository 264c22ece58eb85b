package cluster

import (
	"crypto/fips140"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/wrap"
)

// Config configures one cluster node. Every node of a cluster is normally
// started with the same Config apart from NodeID, DataDir, the addresses
// and the TLS certificate.
type Config struct {
	// NodeID names this node in Raft and gossip. It must match the node
	// id in this node's TLS certificate (a region node's
	// spiffe://krypton/region/<region>/node/<id>, or a governance node's
	// spiffe://krypton/governance/node/<id>) and must never be reused for a
	// different machine's data.
	NodeID string

	// DataDir holds the Raft log and stable store (DataDir/raft/raft.db)
	// and snapshots (DataDir/snapshots). Created if missing.
	DataDir string

	// RaftAddr is the host:port the Raft and cluster-RPC listener binds.
	RaftAddr string
	// RaftAdvertise is the host:port other nodes dial; empty means
	// RaftAddr, which then must not be an unspecified address (0.0.0.0).
	RaftAdvertise string

	// GossipAddr is the host:port memberlist binds (TCP and UDP).
	GossipAddr string
	// GossipAdvertise is the host:port other nodes reach gossip on; empty
	// means GossipAddr.
	GossipAdvertise string
	// GossipKey is the 32-byte AES-256 key that encrypts and authenticates
	// gossip. All nodes share it. It is not used when gossip runs over TLS
	// (GossipTLS, or FIPS 140-3 mode), and may then be empty.
	GossipKey []byte
	// GossipTLS carries gossip, UDP-style packets included, over the
	// node's mutual TLS (TLS, TLSSource) on the GossipAddr TCP port instead
	// of memberlist's UDP and TCP with its own AES-GCM encryption under
	// GossipKey. It is forced on in FIPS 140-3 mode (crypto/fips140.Enabled:
	// GODEBUG=fips140=on or only), where memberlist's encryption is refused.
	// Every node of a region must use the same gossip mode.
	GossipTLS bool

	// BootstrapExpect is the number of servers that bootstrap a new
	// cluster together: when a node without Raft state sees that many
	// servers in gossip, none of them with state, it bootstraps Raft with
	// all of them. 0 means never bootstrap (the node joins an existing
	// cluster and is added as a voter by an operator's Join at the leader).
	BootstrapExpect int
	// Join lists gossip addresses (host:port) of nodes to join at start.
	// One reachable address is enough.
	Join []string

	// TLS is the node's mutual TLS configuration (see
	// pki.NodeTLSConfig): it must present the node certificate and hold
	// the CA in both RootCAs and ClientCAs. The Raft transport and the
	// cluster-internal RPC use it in both directions; peers whose
	// certificate does not chain to the CA or does not name a node of this
	// node's plane (its region, or governance) are refused during the
	// handshake. A dialing node verifies the peer's
	// certificate against the host of the address it dials (unless
	// TLS.ServerName is set), so node certificates must name the
	// advertised Raft host (pki.NodeOptions IPs or DNSNames).
	TLS *tls.Config
	// TLSSource, if set, is where every handshake takes the node's
	// certificate and CA pool from (pki.Source.Server, pki.Source.Client):
	// a certificate reloaded from its files (pki.Reloader) is used by the
	// next connection, in both directions, without a restart; connections
	// open keep theirs. TLS stays the base of both, and must hold the
	// certificate the Source held at start.
	TLSSource *pki.Source

	// Raft timing; see raft.Config. On loopback, tests use tens of
	// milliseconds; across a region's zones the defaults are sensible.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one (checked every SnapshotInterval).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many log entries are kept after a snapshot so
	// that a slightly lagging follower catches up without a snapshot
	// transfer. Must be positive: 0 breaks restarts (a known hashicorp/raft
	// pitfall).
	TrailingLogs uint64

	// Gossip timing; see memberlist.Config.
	GossipInterval      time.Duration
	GossipProbeInterval time.Duration
	GossipProbeTimeout  time.Duration
	// GossipTCPTimeout bounds one gossip TCP stream (a push/pull state
	// exchange, a join, a probe's TCP fallback): memberlist's TCPTimeout.
	// Zero means DefaultGossipTCPTimeout (10 s).
	GossipTCPTimeout time.Duration
	// GossipMaxStreams bounds the gossip TCP streams this node serves at
	// once, and GossipMaxStreamsPerSource those from one source address
	// (an IPv4 address or an IPv6 /64): the gossip port takes connections
	// from anyone who can reach it, before memberlist decrypts a byte.
	// More are closed as soon as they are accepted and counted in
	// krypton_handshakes_refused_total{listener="gossip"}. Zero means
	// DefaultGossipMaxStreams (1,024) and DefaultGossipMaxStreamsPerSource
	// (64). UDP (probes and gossip messages) is not bounded here: it holds
	// no connection, and memberlist drops a packet that does not decrypt.
	GossipMaxStreams          int
	GossipMaxStreamsPerSource int

	// ReconcileInterval is how often the leader compares gossip with the
	// Raft configuration (it also reacts to every gossip event at once).
	ReconcileInterval time.Duration

	// Meta holds small tags gossiped with the node (e.g. "grpc" ->
	// "10.0.0.5:7400", so the region can discover nodes). Keys and values
	// together must stay under about 300 bytes.
	Meta map[string]string

	// OnPeerRequest, if set, is told (on the leader, from the RPC's
	// goroutine; it must not block for long) of every add-voter,
	// remove-server, transfer-leadership and apply (a forwarded write)
	// another node asked for over the cluster RPC, done or failed, and of
	// every request refused because the asking node is not in the
	// configuration: the region audits them with the requesting node's
	// identity.
	OnPeerRequest func(PeerRequest)

	// Logger receives structured logs, including Raft's and memberlist's.
	// nil discards them.
	Logger *slog.Logger
	// TracerProvider, if set, carries a forwarded write's trace on to the leader: the follower
	// sends its call's W3C traceparent with the request, and the leader records a
	// "cluster.apply" span under it. Nil (the default) sends and records nothing.
	TracerProvider trace.TracerProvider

	// Registerer, if set, receives the cluster's Prometheus collectors;
	// they are unregistered at Shutdown.
	Registerer prometheus.Registerer
}

// DefaultConfig returns a Config with production timings and no
// identity, addresses or TLS: the caller fills those in.
func DefaultConfig() Config {
	return Config{
		// Raft's election timings ride out CPU starvation (issue 16; DESIGN.md, "Timings"): at
		// 1 s, 1 s and 500 ms, regions on two starved cores (load average 34–47, CPU hogs beside
		// them) changed term 6–66 times an hour, the leader stepping down whenever it went 500 ms
		// without hearing from a follower; at these, none in the same runs side by side
		// (docs/performance.md, "Leadership under CPU starvation"). A follower still calls an
		// election 1.5–3 s after the leader's last word, so a crashed leader is replaced before
		// the followers' 5 s serving leases (renewed every third of a lease) run out; the leader
		// gives up after 1 s without a quorum, before any follower can call that election.
		HeartbeatTimeout:   1500 * time.Millisecond,
		ElectionTimeout:    1500 * time.Millisecond,
		LeaderLeaseTimeout: 1000 * time.Millisecond,
		// Followers learn that an entry committed on the leader's next append, at the latest
		// one to two commit timeouts later when no other write is under way: this bounds how
		// soon an idle region's followers apply (and refuse after) a revocation. At raft's 50 ms
		// a revocation took p50 89 ms, p99 104 ms to reach the last node; at 10 ms see
		// docs/performance.md ("Revocation"). The cost is an empty append to each follower every
		// 10–20 ms while idle.
		CommitTimeout:       10 * time.Millisecond,
		SnapshotThreshold:   8192,
		SnapshotInterval:    2 * time.Minute,
		TrailingLogs:        10240,
		GossipInterval:      200 * time.Millisecond,
		GossipProbeInterval: 1 * time.Second,
		GossipProbeTimeout:  500 * time.Millisecond,
		ReconcileInterval:   10 * time.Second,
	}
}

// maxMetaBytes leaves room inside memberlist's 512-byte meta limit for
// the fields cluster adds itself.
const maxMetaBytes = 300

// Validate reports the first invalid field as a *ConfigError.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	// The node id appears in the node's certificate, so it follows the
	// project's one naming rule.
	if err := wrap.ValidateName(c.NodeID); err != nil {
		return bad("NodeID", "%v", err)
	}
	if c.DataDir == "" {
		return bad("DataDir", "empty")
	}
	if !filepath.IsAbs(c.DataDir) {
		return bad("DataDir", "must be an absolute path")
	}
	if err := validHostPort(c.RaftAddr, true); err != nil {
		return bad("RaftAddr", "%v", err)
	}
	if c.RaftAdvertise != "" {
		if err := validHostPort(c.RaftAdvertise, false); err != nil {
			return bad("RaftAdvertise", "%v", err)
		}
	} else if err := validHostPort(c.RaftAddr, false); err != nil {
		return bad("RaftAdvertise", "required when RaftAddr %v", err)
	}
	if err := validHostPort(c.GossipAddr, true); err != nil {
		return bad("GossipAddr", "%v", err)
	}
	if c.GossipAdvertise != "" {
		if err := validHostPort(c.GossipAdvertise, false); err != nil {
			return bad("GossipAdvertise", "%v", err)
		}
	}
	if len(c.GossipKey) != 32 && !c.gossipOverTLS() {
		return bad("GossipKey", "must be 32 bytes, got %d", len(c.GossipKey))
	}
	if c.BootstrapExpect < 0 {
		return bad("BootstrapExpect", "negative")
	}
	for i, j := range c.Join {
		if err := validHostPort(j, false); err != nil {
			return bad(fmt.Sprintf("Join[%d]", i), "%v", err)
		}
	}
	if c.TLS == nil {
		return bad("TLS", "required: cluster traffic is always mutually authenticated")
	}
	if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil {
		return bad("TLS", "no certificate")
	}
	if c.TLS.RootCAs == nil || c.TLS.ClientCAs == nil {
		return bad("TLS", "RootCAs and ClientCAs must both hold the CA (use pki.NodeTLSConfig)")
	}
	if len(c.TLS.Certificates) > 0 {
		// Peers are admitted by the plane this certificate names (pki.PlaneOf), and by the node ID
		// they present: a certificate of another kind or node would admit no one, or the wrong ones.
		id, err := pki.LeafIdentity(c.TLS.Certificates[0])
		if err != nil {
			return bad("TLS", "certificate: %v", err)
		}
		if (id.Kind != pki.KindNode && id.Kind != pki.KindGovernance) || id.NodeID != c.NodeID {
			return bad("TLS", "the certificate names %s, not node %s of a region (krypton certs node -region R %s) or of governance (krypton certs governance %s)",
				id, c.NodeID, c.NodeID, c.NodeID)
		}
	}
	durations := []struct {
		name string
		d    time.Duration
	}{
		{"HeartbeatTimeout", c.HeartbeatTimeout},
		{"ElectionTimeout", c.ElectionTimeout},
		{"LeaderLeaseTimeout", c.LeaderLeaseTimeout},
		{"CommitTimeout", c.CommitTimeout},
		{"SnapshotInterval", c.SnapshotInterval},
		{"GossipInterval", c.GossipInterval},
		{"GossipProbeInterval", c.GossipProbeInterval},
		{"GossipProbeTimeout", c.GossipProbeTimeout},
		{"ReconcileInterval", c.ReconcileInterval},
	}
	for _, d := range durations {
		if d.d <= 0 {
			return bad(d.name, "must be positive")
		}
	}
	if c.GossipTCPTimeout < 0 {
		return bad("GossipTCPTimeout", "negative (0 takes the default, %v)", DefaultGossipTCPTimeout)
	}
	if c.GossipMaxStreams < 0 {
		return bad("GossipMaxStreams", "negative (0 takes the default, %d)", DefaultGossipMaxStreams)
	}
	if c.GossipMaxStreamsPerSource < 0 {
		return bad("GossipMaxStreamsPerSource", "negative (0 takes the default, %d)", DefaultGossipMaxStreamsPerSource)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return bad("LeaderLeaseTimeout", "must not exceed HeartbeatTimeout")
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		return bad("ElectionTimeout", "must not be less than HeartbeatTimeout")
	}
	if c.SnapshotThreshold == 0 {
		return bad("SnapshotThreshold", "must be positive")
	}
	if c.TrailingLogs == 0 {
		return bad("TrailingLogs", "must be positive (0 breaks restarts)")
	}
	n := 0
	for k, v := range c.Meta {
		if k == "" {
			return bad("Meta", "empty key")
		}
		n += len(k) + len(v) + 6
	}
	if n > maxMetaBytes {
		return bad("Meta", "%d bytes, more than %d", n, maxMetaBytes)
	}
	return nil
}

func (c *Config) raftAdvertise() string {
	if c.RaftAdvertise != "" {
		return c.RaftAdvertise
	}
	return c.RaftAddr
}

func (c *Config) gossipAdvertise() string {
	if c.GossipAdvertise != "" {
		return c.GossipAdvertise
	}
	return c.GossipAddr
}

func validHostPort(s string, bind bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (!bind && p == 0) {
		return fmt.Errorf("%q has a bad port", s)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() && !bind {
		return fmt.Errorf("%q is unspecified", s)
	}
	return nil
}

// gossipOverTLS reports whether gossip runs over the node's mutual TLS: GossipTLS, or FIPS
// 140-3 mode, where memberlist's own AES-GCM (caller-drawn nonces) is refused.
func (c *Config) gossipOverTLS() bool { return c.GossipTLS || fips140.Enabled() }
