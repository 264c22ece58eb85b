package governance

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	"github.com/kryptonkms/krypton/wrap"
)

// Config configures one governance node. Every node of the governance
// cluster is started with the same Config apart from NodeID, DataDir, the
// addresses and the certificate.
type Config struct {
	// NodeID names the node in Raft, gossip and its certificate
	// (spiffe://krypton/governance/node/<id>).
	NodeID string
	// DataDir holds the Raft log, snapshots and the audit log.
	DataDir string

	// RaftAddr (Raft and cluster RPC, mutual TLS), GossipAddr (memberlist,
	// encrypted) and RPCAddr (the gRPC API, mutual TLS) are host:port to
	// bind; port 0 picks a free port for RPCAddr only. HTTPAddr serves
	// /metrics, /livez, /readyz and /healthz in plain HTTP; empty disables it.
	RaftAddr   string
	GossipAddr string
	RPCAddr    string
	HTTPAddr   string

	// PprofAddr, if set, serves Go's profiler (/debug/pprof/) there over mutual TLS to operator
	// certificates only (transport.ServePprof); empty (the default) serves it nowhere.
	PprofAddr string

	// BootstrapExpect is the number of nodes that bootstrap a new cluster
	// together (3 in production, 1 in development); 0 joins an existing
	// cluster. Join lists gossip addresses of other nodes.
	BootstrapExpect int
	Join            []string
	// GossipKey is the 32-byte key that encrypts gossip.
	GossipKey []byte

	// Roots are the CAs of node, service and operator certificates;
	// Certificate is this node's: a governance node certificate naming NodeID.
	Roots       *x509.CertPool
	Certificate tls.Certificate
	// CertSource, if set, is where every TLS handshake of the node (its API, Raft, the profiler)
	// takes the certificate and CA pool from, so that certificates reloaded from their files
	// (pki.Reloader) are used without a restart. Roots and Certificate must hold what it held at
	// start.
	CertSource *pki.Source

	// Regions, if not empty, are the only regions tenants may name; empty
	// accepts any valid region name.
	Regions []string
	// AllowDevAnchor lets tenants use the file:// development anchor.
	AllowDevAnchor bool

	// HeartbeatInterval is how often WatchRevocations sends a heartbeat
	// when no event is sent (default 5 s; tests shorten it).
	HeartbeatInterval time.Duration
	// StaleAfter is how long a follower serving WatchRevocations may go
	// without hearing from a leader before it ends the stream with
	// UNAVAILABLE (default 3 × the Raft election timeout).
	StaleAfter time.Duration

	// EventRetention is how long after its last report a region still holds back compaction of the
	// event log (DESIGN.md, "Compaction"); a region silent longer stops pinning it and, when it
	// comes back below the floor, catches up from the events that still define the state
	// (default 7 days). CompactInterval is how often the leader considers compacting (default 1
	// minute; negative: never).
	EventRetention  time.Duration
	CompactInterval time.Duration

	// AuditPath is the hash-chained audit log; empty means
	// DataDir/audit.log.
	AuditPath string
	// AuditSyslog, if set, sends a copy of every audit line to a syslog
	// receiver (a SIEM); the node starts and closes the sink.
	AuditSyslog *audit.SyslogConfig

	// OIDC, if set, lets operators call with OIDC bearer tokens
	// (transport.ServerConfig.OIDC); the caller closes it after Close.
	OIDC *transport.OIDCVerifier

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// TracerProvider, if set, traces the node's calls (a server span each, a caller with a
	// certificate as its parent; docs/operations.md, "Traces"). Nil (the default) is off.
	TracerProvider trace.TracerProvider

	// Tune, if set, adjusts the cluster configuration before the node
	// starts (test timings).
	Tune func(*cluster.Config)
	// ClusterOptions are passed to cluster.New (partition filters in tests).
	ClusterOptions []cluster.Option
}

// MaxHeartbeatInterval is the longest HeartbeatInterval: WatchRevocations
// promises a message at least every 5 seconds.
const MaxHeartbeatInterval = 5 * time.Second

// DefaultConfig returns a Config with the defaults and no identity,
// addresses or certificates.
func DefaultConfig() Config {
	return Config{HeartbeatInterval: 5 * time.Second, EventRetention: 7 * 24 * time.Hour, CompactInterval: time.Minute}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if err := wrap.ValidateName(c.NodeID); err != nil {
		return fmt.Errorf("governance: NodeID: %w", err)
	}
	if c.DataDir == "" {
		return fmt.Errorf("governance: DataDir is required")
	}
	for name, addr := range map[string]string{"RaftAddr": c.RaftAddr, "GossipAddr": c.GossipAddr, "RPCAddr": c.RPCAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("governance: %s %q: %w", name, addr, err)
		}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return fmt.Errorf("governance: HTTPAddr %q: %w", c.HTTPAddr, err)
		}
	}
	if c.PprofAddr != "" {
		if _, _, err := net.SplitHostPort(c.PprofAddr); err != nil {
			return fmt.Errorf("governance: PprofAddr %q: %w", c.PprofAddr, err)
		}
	}
	if c.Roots == nil {
		return fmt.Errorf("governance: Roots (the CA pool) is required")
	}
	if len(c.Certificate.Certificate) == 0 {
		return fmt.Errorf("governance: Certificate (the node certificate) is required")
	}
	if id, err := pki.LeafIdentity(c.Certificate); err != nil || id.Kind != pki.KindGovernance || id.NodeID != c.NodeID {
		why := "names another identity"
		if err != nil {
			why = err.Error()
		}
		return fmt.Errorf("governance: Certificate must be a governance node certificate naming spiffe://krypton/governance/node/%s (krypton certs governance %s): %s",
			c.NodeID, c.NodeID, why)
	}
	if c.BootstrapExpect < 0 {
		return fmt.Errorf("governance: BootstrapExpect %d is negative", c.BootstrapExpect)
	}
	for _, r := range c.Regions {
		if err := wrap.ValidateName(r); err != nil {
			return fmt.Errorf("governance: Regions: %w", err)
		}
	}
	if c.HeartbeatInterval < 0 || c.StaleAfter < 0 {
		return fmt.Errorf("governance: HeartbeatInterval and StaleAfter must not be negative")
	}
	if c.EventRetention < 0 {
		return fmt.Errorf("governance: EventRetention %v is negative: set how long a silent region holds back compaction (0 for the default, 7 days)", c.EventRetention)
	}
	if c.HeartbeatInterval > MaxHeartbeatInterval {
		// The API promises a heartbeat at least every 5 s; regions time out
		// silent streams on that promise.
		return fmt.Errorf("governance: HeartbeatInterval %v exceeds %v", c.HeartbeatInterval, MaxHeartbeatInterval)
	}
	return nil
}
