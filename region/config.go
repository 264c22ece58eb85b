package region

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/wrap"
)

// Config configures one region node. Every node of a region is started with the same Config apart
// from NodeID, DataDir, the addresses and the certificate.
type Config struct {
	// NodeID names the node in Raft, gossip and its certificate (spiffe://krypton/node/<id>).
	NodeID string
	// Region names the region; it is bound into every L2 seal, so it must never change.
	Region string
	// DataDir holds the Raft log, snapshots and the audit log. Never any plaintext key.
	DataDir string

	// RaftAddr (Raft and cluster RPC, mutual TLS), GossipAddr (memberlist, encrypted) and RPCAddr
	// (the gRPC API, mutual TLS) are host:port to bind. HTTPAddr serves /metrics, /healthz and
	// /debug/pprof in plain HTTP: bind it to loopback or a management network; empty disables it.
	RaftAddr   string
	GossipAddr string
	RPCAddr    string
	HTTPAddr   string

	// BootstrapExpect is the number of nodes that bootstrap a new region together (3 or 5); 0
	// joins an existing region. Join lists gossip addresses of other nodes.
	BootstrapExpect int
	Join            []string
	// GossipKey is the 32-byte key that encrypts gossip; every node of the region shares it.
	GossipKey []byte

	// Roots are the CAs that sign node, service and operator certificates; Certificate is this
	// node's own (a node certificate naming NodeID).
	Roots       *x509.CertPool
	Certificate tls.Certificate

	// AllowDevAnchor lets tenants use the file:// development anchor. Off by default: a root key in
	// a file on the server is not a customer-held key.
	AllowDevAnchor bool

	// AnchorOptions are the anchor providers' own options, keyed by URI scheme ("awskms",
	// "pkcs11", ...), passed to every anchor.Open as anchor.Options.Provider: credentials or an
	// endpoint for a cloud KMS, a session pool size for an HSM. Nil means each provider's
	// defaults (the SDKs' default credential chains). The providers themselves are registered by
	// importing their packages (cmd/krypton imports them all).
	AnchorOptions map[string]any

	// ClockDrift bounds how much faster one node's monotonic clock may run than another's over a
	// lease period; the revocation fence waits lease × (1 + ClockDrift) for a node that did not
	// confirm. 0.05 by default.
	ClockDrift float64

	// AuditPath is the hash-chained JSON-lines audit log; empty means DataDir/audit.log.
	AuditPath string

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger

	// Tune, if set, adjusts the cluster configuration before the node starts (Raft and gossip
	// timing in tests and in the chaos suite).
	Tune func(*cluster.Config)

	// ClusterOptions are passed to cluster.New (tests partition nodes with cluster.WithConnFilter).
	ClusterOptions []cluster.Option

	// PeerFilter, if set, is asked before each node-service call to another node (lease renewal,
	// L2 handoff, fence); false drops the call as if the network had. For partition tests, with
	// cluster.WithConnFilter: together they cut a node off from its peers.
	PeerFilter func(remoteID string) bool
}

// DefaultConfig returns a Config with the defaults filled in and the per-node fields empty.
func DefaultConfig() Config {
	return Config{Region: "dev", ClockDrift: 0.05}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if err := wrap.ValidateName(c.NodeID); err != nil {
		return fmt.Errorf("region: NodeID: %w", err)
	}
	if err := wrap.ValidateName(c.Region); err != nil {
		return fmt.Errorf("region: Region: %w", err)
	}
	if c.DataDir == "" {
		return fmt.Errorf("region: DataDir is required")
	}
	for name, addr := range map[string]string{"RaftAddr": c.RaftAddr, "GossipAddr": c.GossipAddr, "RPCAddr": c.RPCAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("region: %s %q: %w", name, addr, err)
		}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return fmt.Errorf("region: HTTPAddr %q: %w", c.HTTPAddr, err)
		}
	}
	if c.Roots == nil {
		return fmt.Errorf("region: Roots (the CA pool) is required")
	}
	if len(c.Certificate.Certificate) == 0 {
		return fmt.Errorf("region: Certificate (the node certificate) is required")
	}
	if c.ClockDrift < 0 || c.ClockDrift > 1 {
		return fmt.Errorf("region: ClockDrift %v is outside [0, 1]", c.ClockDrift)
	}
	if c.BootstrapExpect < 0 {
		return fmt.Errorf("region: BootstrapExpect %d is negative", c.BootstrapExpect)
	}
	return nil
}

// leaseFenceWait is how long after a revocation committed a node that did not confirm may still
// be serving under a lease granted before it.
func (c *Config) leaseFenceWait(lease time.Duration) time.Duration {
	return time.Duration(float64(lease) * (1 + c.ClockDrift))
}
