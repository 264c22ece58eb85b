package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/gateway/xks"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/wrap"
)

// Config configures a Gateway. Start from DefaultConfig; New validates it and names the bad field.
type Config struct {
	// RegionAddrs are host:port addresses of one or more region nodes' API. The gateway asks them
	// for every node of the region (WrapService.ListEndpoints) and keeps that list fresh; a single
	// reachable address is enough. Required.
	RegionAddrs []string
	// Region is the name of the region those nodes belong to. Every node must present a node
	// certificate of that region (spiffe://krypton/region/<region>/node/<id>); a node of another
	// region, though of the same CA, is refused at the handshake. Required. It is the region the
	// gateway prefers: with FailoverRegions, the first of the list.
	Region string
	// FailoverRegions are the regions the gateway moves to, in order of preference after Region,
	// when every node of the region it uses is unavailable; it moves back to a more preferred
	// region once that region has served for RegionFailback. Each has its name and one or more of
	// its nodes' addresses, and its nodes are pinned to that name as Region's are: no call of the
	// gateway ever goes to a region it does not list. The regions must hold the gateway's tenant as
	// a shared tenant (docs/governance.md), so that a data key wrapped in one unwraps in the
	// others. Empty (the default): one region, no failover between regions.
	FailoverRegions []Region
	// RegionFailback is how long a more preferred region must be seen serving, without a break, at
	// every refresh before the gateway moves back to it (hysteresis: a region that flaps does not
	// drag the gateway along). Used with FailoverRegions.
	RegionFailback time.Duration
	// Roots are the CAs the region nodes' certificates chain to, and the CAs whose service
	// certificates the TCP front end accepts from applications. Required.
	Roots *x509.CertPool
	// Certificate is the gateway's own service certificate (krypton certs service TENANT SERVICE):
	// the identity it calls the region with. The gateway serves exactly that tenant and service.
	// Required.
	Certificate tls.Certificate

	// ListenAddr is the TCP address of the gRPC front end (TLS, client certificates of the
	// gateway's tenant required); empty disables it. Needs ServerCertificate.
	ListenAddr string
	// ServerCertificate is what the TCP front end presents: a gateway certificate of the
	// gateway's tenant naming the gateway's host (krypton certs gateway -ip ... TENANT NAME,
	// spiffe://krypton/tenant/<tenant>/gateway/<name>). Never a node's certificate: no node
	// listener accepts a gateway's, so a gateway that is broken into holds nothing that speaks for
	// a node.
	ServerCertificate tls.Certificate
	// CertSource and ServerCertSource, if set, are where every handshake takes Certificate (with
	// Roots) and ServerCertificate (with Roots) from, so that certificates reloaded from their
	// files (pki.Reloader: on a change, or the process's SIGHUP) are used by new connections
	// without a restart. Roots, Certificate and ServerCertificate must hold what they held at start.
	CertSource, ServerCertSource *pki.Source
	// UnixSocket is the path of a Unix socket serving the same API without TLS; anyone who can
	// open the file acts with the gateway's identity, so its mode matters. Empty disables it.
	UnixSocket string
	// UnixSocketMode is the socket file's mode; 0 means 0600.
	UnixSocketMode fs.FileMode
	// UnixSocketGroup, if not -1, is the numeric group the socket file is given (with mode 0660,
	// say, to admit one group of applications). DefaultConfig sets -1.
	UnixSocketGroup int
	// HTTPAddr, if set, serves /metrics, /livez, /readyz and /healthz.
	HTTPAddr string
	// KMIPAddr is the TCP address of the KMIP front end (TTLV over mutual TLS, package
	// gateway/kmip; 127.0.0.1:5696 is KMIP's port); empty disables it. Needs ServerCertificate.
	// KMIP clients present service certificates; only the gateway's own tenant and service is
	// served.
	KMIPAddr string
	// KMIPRegistryPath is the bbolt file where the KMIP front end keeps its objects (wrapped keys
	// and attributes); empty keeps them in memory, lost when the gateway stops.
	KMIPRegistryPath string
	// XKSAddr is the TCP address of the AWS KMS External Key Store proxy front end (HTTPS, SigV4,
	// package gateway/xks; docs/xks.md); empty disables it. Needs XKS's Certificate, Region,
	// CredentialsFile and KeysPath. Its external keys are wrapped under the gateway's own
	// service key.
	XKSAddr string
	// XKS configures that front end (start from xks.DefaultConfig; Logger and Registerer are
	// the gateway's).
	XKS xks.Config

	// BatchSize is the most requests coalesced into one region batch call (1 to 1024). 1 turns
	// batching off: every request is its own RPC.
	BatchSize int
	// BatchWait is the longest a request waits for others to join its batch; a batch is sent when
	// it is full, when its first request has waited this long, or as soon as no earlier batch is
	// in flight. 0 sends every request at once, alone (batching off, as BatchSize 1).
	BatchWait time.Duration

	// CacheEntries enables the cache of unwrapped data keys when positive: at most this many
	// entries. Off (0) by default: every Decrypt and Unwrap then goes to the region.
	CacheEntries int
	// CacheBytes bounds the bytes the cache holds (each entry counts its blob, context and key).
	CacheBytes int
	// CacheTTL bounds how long an entry may be used after the region unwrapped it.
	CacheTTL time.Duration

	// DelegateWraps makes GenerateDataKey (and Encrypt) wrap data keys here, under delegated
	// wrapping keys the region hands out (DelegateWrap), rather than sending each key to the
	// region: no region round trip per data key. The keys are used under the same cache lease
	// and key events as the cache, so revocation is as exact; requests take the region path
	// while no delegated key is held. On by default.
	DelegateWraps bool

	// AttemptTimeout bounds one RPC to one region node.
	AttemptTimeout time.Duration
	// MaxAttempts is how many times one request (or batch) is tried, at least, before its error
	// goes back to the caller; RetryBudget keeps it retrying beyond that while no node serves.
	MaxAttempts int
	// RetryBudget is how long a request keeps being retried while the region answers only "try
	// another node" (a leader election, a node restarting), counted from its first attempt and
	// always within the caller's deadline. Six attempts over three nodes take well under a
	// second; a region electing a leader on a busy machine needs one to three (Raft's heartbeat
	// timeout, then the new leader's serving leases), so the default outlasts that.
	RetryBudget time.Duration
	// RefreshInterval is how often the gateway asks the nodes for the region's endpoints.
	RefreshInterval time.Duration

	// MaxDataSize bounds Encrypt's data (at most envelope.MaxDataSize).
	MaxDataSize int

	// Logger receives the gateway's logs (never key material); nil discards.
	Logger *slog.Logger
	// TracerProvider, if set, traces the gateway's calls: each application call, each batch and
	// each region call, with the trace context sent on to the region (docs/operations.md,
	// "Traces"). Applications' own trace context is only linked, never followed. Nil (the
	// default) is off, at no cost.
	TracerProvider trace.TracerProvider
	// Registerer, if set, is where the gateway's metrics are registered, in addition to the
	// gateway's own registry (Gateway.Registry).
	Registerer prometheus.Registerer
}

// Region is one region the gateway may use: its name and the addresses of one or more of its
// nodes (the gateway finds the others).
type Region struct {
	Name  string
	Addrs []string
}

// DefaultConfig returns a configuration with every default set and no addresses or certificates.
func DefaultConfig() Config {
	return Config{
		UnixSocketMode:  0o600,
		UnixSocketGroup: -1,
		BatchSize:       128,
		BatchWait:       500 * time.Microsecond,
		CacheBytes:      8 << 20,
		CacheTTL:        5 * time.Minute,
		DelegateWraps:   true,
		AttemptTimeout:  2 * time.Second,
		MaxAttempts:     6,
		RetryBudget:     5 * time.Second,
		RefreshInterval: 2 * time.Second,
		RegionFailback:  30 * time.Second,
		MaxDataSize:     4 << 20,
		XKS:             xks.DefaultConfig(),
	}
}

// Validate reports the first unusable field, by name.
func (c Config) Validate() error {
	switch {
	case len(c.RegionAddrs) == 0:
		return errors.New("gateway: Config.RegionAddrs is required")
	case c.Roots == nil:
		return errors.New("gateway: Config.Roots is required")
	case len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil:
		return errors.New("gateway: Config.Certificate is required")
	case (c.ListenAddr != "" || c.KMIPAddr != "") && (len(c.ServerCertificate.Certificate) == 0 || c.ServerCertificate.PrivateKey == nil):
		return errors.New("gateway: Config.ServerCertificate is required with ListenAddr or KMIPAddr")
	case len(c.ServerCertificate.Certificate) > 0 && !isGatewayOf(c.ServerCertificate, c.Certificate):
		return errors.New("gateway: Config.ServerCertificate must be a gateway certificate of the gateway's tenant " +
			"(krypton certs gateway TENANT NAME: spiffe://krypton/tenant/<tenant>/gateway/<name>), not a node's or another tenant's")
	case c.BatchSize < 1 || c.BatchSize > 1024:
		return fmt.Errorf("gateway: Config.BatchSize %d is outside [1, 1024]", c.BatchSize)
	case c.BatchWait < 0 || c.BatchWait > time.Second:
		return fmt.Errorf("gateway: Config.BatchWait %v is outside [0, 1s]", c.BatchWait)
	case c.CacheEntries < 0:
		return errors.New("gateway: Config.CacheEntries must not be negative")
	case c.CacheEntries > 0 && c.CacheBytes <= 0:
		return errors.New("gateway: Config.CacheBytes must be positive with a cache")
	case c.CacheEntries > 0 && c.CacheTTL <= 0:
		return errors.New("gateway: Config.CacheTTL must be positive with a cache")
	case c.AttemptTimeout <= 0:
		return errors.New("gateway: Config.AttemptTimeout must be positive")
	case c.MaxAttempts < 1 || c.MaxAttempts > 16:
		return fmt.Errorf("gateway: Config.MaxAttempts %d is outside [1, 16]", c.MaxAttempts)
	case c.RetryBudget < 0 || c.RetryBudget > time.Minute:
		return fmt.Errorf("gateway: Config.RetryBudget %v is outside [0, 1m]", c.RetryBudget)
	case c.RefreshInterval <= 0:
		return errors.New("gateway: Config.RefreshInterval must be positive")
	case c.MaxDataSize < 0 || c.MaxDataSize > 4<<20:
		return errors.New("gateway: Config.MaxDataSize is outside [0, 4 MiB]")
	case c.UnixSocketMode&^0o777 != 0:
		return errors.New("gateway: Config.UnixSocketMode has bits beyond 0777")
	case c.Region == "":
		return errors.New("gateway: Config.Region is required: the name of the region RegionAddrs belong to (-region-name), so that a node of another region is refused")
	case wrap.ValidateName(c.Region) != nil:
		return fmt.Errorf("gateway: Config.Region %q is not a valid region name", c.Region)
	}
	return c.validateFailover()
}

// validateFailover checks FailoverRegions and RegionFailback.
func (c Config) validateFailover() error {
	if len(c.FailoverRegions) == 0 {
		return nil
	}
	if c.RegionFailback <= 0 {
		return errors.New("gateway: Config.RegionFailback must be positive with FailoverRegions")
	}
	names := map[string]bool{c.Region: true}
	addrs := map[string]string{}
	for _, a := range c.RegionAddrs {
		addrs[a] = c.Region
	}
	for i, r := range c.FailoverRegions {
		switch {
		case r.Name == "":
			return fmt.Errorf("gateway: Config.FailoverRegions[%d] has no name: give each region's name with its addresses (-failover-regions NAME=ADDR,...)", i)
		case wrap.ValidateName(r.Name) != nil:
			return fmt.Errorf("gateway: Config.FailoverRegions[%d]: %q is not a valid region name", i, r.Name)
		case names[r.Name]:
			return fmt.Errorf("gateway: Config.FailoverRegions[%d]: region %q is listed twice; list each region once, in order of preference", i, r.Name)
		case len(r.Addrs) == 0:
			return fmt.Errorf("gateway: Config.FailoverRegions[%d] (%s) has no address: give one or more of its nodes' addresses", i, r.Name)
		}
		names[r.Name] = true
		for _, a := range r.Addrs {
			if other, ok := addrs[a]; ok {
				return fmt.Errorf("gateway: address %s is listed for regions %s and %s; a node belongs to one region", a, other, r.Name)
			}
			addrs[a] = r.Name
		}
	}
	return nil
}

// regions is every region the gateway may use, in order of preference.
func (c Config) regions() []Region {
	return append([]Region{{Name: c.Region, Addrs: c.RegionAddrs}}, c.FailoverRegions...)
}

// isGatewayOf reports whether server is a gateway certificate of the tenant that the service
// certificate client names.
func isGatewayOf(server, client tls.Certificate) bool {
	sid, err := pki.LeafIdentity(server)
	if err != nil || sid.Kind != pki.KindGateway {
		return false
	}
	cid, err := pki.LeafIdentity(client)
	return err == nil && cid.Kind == pki.KindService && cid.Tenant == sid.Tenant
}
