package region

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	"github.com/kryptonkms/krypton/wrap"
)

// Config configures one region node. Every node of a region is started with the same Config apart
// from NodeID, DataDir, the addresses and the certificate.
type Config struct {
	// NodeID names the node in Raft, gossip and its certificate
	// (spiffe://krypton/region/<region>/node/<id>).
	NodeID string
	// Region names the region; it is bound into every L2 seal, so it must never change.
	Region string
	// DataDir holds the Raft log, snapshots and the audit log. Never any plaintext key.
	DataDir string

	// RaftAddr (Raft and cluster RPC, mutual TLS), GossipAddr (memberlist, encrypted) and RPCAddr
	// (the gRPC API, mutual TLS) are host:port to bind. HTTPAddr serves /metrics, /livez, /readyz and /healthz
	// in plain HTTP: bind it to loopback or a management network; empty disables it.
	RaftAddr   string
	GossipAddr string
	RPCAddr    string
	HTTPAddr   string

	// PprofAddr, if set, serves Go's profiler (/debug/pprof/) there over mutual TLS to operator
	// certificates only (transport.ServePprof); empty (the default) serves it nowhere.
	PprofAddr string

	// BootstrapExpect is the number of nodes that bootstrap a new region together (3 or 5); 0
	// joins an existing region. Join lists gossip addresses of other nodes.
	BootstrapExpect int
	Join            []string
	// GossipKey is the 32-byte key that encrypts gossip; every node of the region shares it.
	GossipKey []byte

	// Roots are the CAs that sign node, service and operator certificates; Certificate is this
	// node's own: a region node certificate naming NodeID and Region
	// (spiffe://krypton/region/<region>/node/<id>, `krypton certs node -region R`).
	Roots       *x509.CertPool
	Certificate tls.Certificate
	// CertSource, if set, is where every TLS handshake of the node (its API, Raft, its calls to
	// other nodes and to governance, the profiler) takes the certificate and CA pool from, so that
	// certificates reloaded from their files (pki.Reloader: on a change, or the process's SIGHUP)
	// are used without a restart. Roots and Certificate must then hold what it held at start.
	CertSource *pki.Source

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

	// KeyEventAckWait bounds how long a gateway watching key events may leave one unacknowledged
	// before this node cuts its stream: the gateway then stops serving from its cache and
	// subscribes again, and a revocation fence waits for it at most this plus one cache lease.
	// 0 means DefaultKeyEventAckWait (2s).
	KeyEventAckWait time.Duration

	// DelegateTTL is how long a gateway may use a delegated wrapping key (DelegateWrap) before it
	// asks for another. It binds an honest gateway only (which also wipes the key on key events):
	// the derived key does not expire, and a caller that keeps it may seal with it after a policy
	// change or rotation (docs/gateway.md, "Delegated data keys"). 0 means
	// DefaultDelegateTTL (30s); negative turns DelegateWrap off, so that every wrap is done here.
	DelegateTTL time.Duration

	// Governance lists the addresses (host:port) of the governance plane's nodes. When set, the
	// region's leader follows the governance feed (any node will do; it moves on to the next on
	// failure) and reports back how far it has applied it; Region must then be the name that
	// governance knows this region by, and Certificate must name it
	// (spiffe://krypton/region/<region>/node/<id>). Empty: the region is run on its own, by its
	// admin API only.
	Governance []string

	// Settings, if set, are region settings this node proposes whenever it leads and the replicated
	// ones differ (settingsLoop): give every node the same. For tests and the chaos suite, which
	// want short leases and L1 checks from the start (`krypton server -region-settings`,
	// fsm.ParseSettings); nil leaves the settings to SetSettings.
	Settings *fsm.Settings

	// GovernanceAnchorWait is how long the feed retries an event that needs a tenant's anchor
	// (create a tenant, set an anchor, create a service) while the anchor does not answer; then it
	// records the event as refused in this region and goes on, so that one customer's flaky KMS
	// cannot hold back the revocations behind it. One minute by default.
	GovernanceAnchorWait time.Duration

	// RevocationHistory is how many history entries of the revocation log (governance events that
	// revoke nothing, refused events, lifted anchor deletions) the leader keeps when it compacts
	// the log; the revocations in force are always kept (DESIGN.md, "Revocation log compaction").
	// 10,000 by default. RevocationCompactInterval is how often the leader looks (1 minute by
	// default; negative: never).
	RevocationHistory         int
	RevocationCompactInterval time.Duration

	// KeyringSize bounds the unsealed keys the node holds in locked memory: at most this many L2
	// versions and this many L3 versions; a full keyring evicts a key not used lately (it is
	// opened again on its next use). 0 means three quarters of what RLIMIT_MEMLOCK leaves
	// free (autoKeyringSize: MinKeyringSize to MaxAutoKeyringSize; DefaultKeyringSize, 8192, when
	// unbounded). Each key locks one page; New refuses a size whose
	// pages do not fit the limit (raise RLIMIT_MEMLOCK, systemd LimitMEMLOCK=, before raising this
	// past ~900). See DESIGN.md, "Locked memory".
	KeyringSize int
	// NoKeyWarmup turns off the warm-up of recently used keys (warmup.go; DESIGN.md, "Key
	// warm-up"): by default a node keeps the IDs (never the keys) of the L3 versions in its keyring
	// in <DataDir>/recent-keys and, after a restart or when it becomes leader, opens them again
	// before calls need them.
	NoKeyWarmup bool

	// AnchorCheckConcurrency bounds the leader's L1 checks in flight at once (DESIGN.md, "L1
	// checks"): each period every distinct anchor URI is asked once. 0 means
	// DefaultAnchorCheckConcurrency (64): with 100,000 tenants on their own keys and ~30 ms a
	// check, a round takes ~50 s at 64 — raise it, or the period, when
	// krypton_anchor_check_rounds_late_total grows.
	AnchorCheckConcurrency int

	// AnchorCheckTimeout bounds one L1 check; a check that times out counts as a transient
	// failure. 0 means DefaultAnchorCheckTimeout (10 s).
	AnchorCheckTimeout time.Duration

	// AuditPath is the hash-chained JSON-lines audit log; empty means DataDir/audit.log.
	AuditPath string

	// AuditSyslog, if set, sends a copy of every audit line to a syslog receiver (RFC 5424 over
	// TLS; audit.NewSyslog). The node sets its Logger and Registerer. A receiver that is down
	// delays nothing: see docs/audit.md.
	AuditSyslog *audit.SyslogConfig

	// OIDC, if set, admits operators with OIDC bearer tokens on the operator RPCs
	// (transport.ServerConfig.OIDC, docs/identity.md). The caller closes it after Shutdown.
	OIDC *transport.OIDCVerifier

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger

	// Tune, if set, adjusts the cluster configuration before the node starts (Raft and gossip
	// timing in tests and in the chaos suite).
	Tune func(*cluster.Config)

	// TracerProvider, if set, traces the node's calls: each RPC it serves or makes, and the steps
	// of a wrap (region.key: lease, policy, state; region.catch-up; region.open-key;
	// region.crypto), with no key material in any span (docs/operations.md, "Traces"). Nil (the
	// default) is off, at no cost.
	TracerProvider trace.TracerProvider
	// ClusterOptions are passed to cluster.New (tests partition nodes with cluster.WithConnFilter).
	ClusterOptions []cluster.Option

	// PeerFilter, if set, is asked before each node-service call to another node (lease renewal,
	// L2 handoff, fence); false drops the call as if the network had. For partition tests, with
	// cluster.WithConnFilter: together they cut a node off from its peers.
	PeerFilter func(remoteID string) bool
}

// DefaultConfig returns a Config with the defaults filled in and the per-node fields empty.
func DefaultConfig() Config {
	return Config{Region: "dev", ClockDrift: 0.05, GovernanceAnchorWait: time.Minute, RevocationHistory: 10000, RevocationCompactInterval: time.Minute}
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
	if c.PprofAddr != "" {
		if _, _, err := net.SplitHostPort(c.PprofAddr); err != nil {
			return fmt.Errorf("region: PprofAddr %q: %w", c.PprofAddr, err)
		}
	}
	if c.Roots == nil {
		return fmt.Errorf("region: Roots (the CA pool) is required")
	}
	if len(c.Certificate.Certificate) == 0 {
		return fmt.Errorf("region: Certificate (the node certificate) is required")
	}
	if c.KeyringSize < 0 {
		return fmt.Errorf("region: KeyringSize %d is negative", c.KeyringSize)
	}
	if c.ClockDrift < 0 || c.ClockDrift > 1 {
		return fmt.Errorf("region: ClockDrift %v is outside [0, 1]", c.ClockDrift)
	}
	if c.KeyEventAckWait < 0 {
		return fmt.Errorf("region: KeyEventAckWait %v is negative; use 0 for the default (%v)", c.KeyEventAckWait, DefaultKeyEventAckWait)
	}
	if c.Settings != nil {
		if err := c.Settings.Validate(); err != nil {
			return fmt.Errorf("region: Settings: %w", err)
		}
	}
	for i, addr := range c.Governance {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("region: Governance[%d] %q: %w", i, addr, err)
		}
	}
	if len(c.Certificate.Certificate) > 0 {
		// Peers admit only nodes of their own region, and governance serves a region's feed only to
		// nodes whose certificate names the region: a certificate naming another region or node, or
		// none, could not work with either.
		id, err := pki.LeafIdentity(c.Certificate)
		if err != nil || id.Kind != pki.KindNode || id.Region != c.Region || id.NodeID != c.NodeID {
			why := "names another identity"
			if err != nil {
				why = err.Error()
			}
			return fmt.Errorf("region: Certificate must be a region node certificate naming spiffe://krypton/region/%s/node/%s (krypton certs node -region %s %s): %s",
				c.Region, c.NodeID, c.Region, c.NodeID, why)
		}
	}
	if c.AnchorCheckConcurrency < 0 {
		return fmt.Errorf("region: AnchorCheckConcurrency %d is negative", c.AnchorCheckConcurrency)
	}
	if c.AnchorCheckTimeout < 0 {
		return fmt.Errorf("region: AnchorCheckTimeout %v is negative", c.AnchorCheckTimeout)
	}
	if c.RevocationHistory < 0 {
		return fmt.Errorf("region: RevocationHistory %d is negative: set how many history entries of the revocation log to keep (0 for the default, 10000)", c.RevocationHistory)
	}
	if c.GovernanceAnchorWait < 0 {
		return fmt.Errorf("region: GovernanceAnchorWait %v is negative", c.GovernanceAnchorWait)
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

// The defaults of Config.AnchorCheckConcurrency and Config.AnchorCheckTimeout.
const (
	DefaultAnchorCheckConcurrency = 64
	DefaultAnchorCheckTimeout     = 10 * time.Second
)

func (c *Config) anchorCheckConcurrency() int {
	if c.AnchorCheckConcurrency == 0 {
		return DefaultAnchorCheckConcurrency
	}
	return c.AnchorCheckConcurrency
}

func (c *Config) anchorCheckTimeout() time.Duration {
	if c.AnchorCheckTimeout == 0 {
		return DefaultAnchorCheckTimeout
	}
	return c.AnchorCheckTimeout
}
