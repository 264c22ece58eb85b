package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/gateway/xks"
	"github.com/kryptonkms/krypton/internal/pki"
)

// defaultKMIPAddr is where -kmip serves: KMIP's registered port (IANA 5696), on loopback unless
// -kmip-addr says otherwise.
const defaultKMIPAddr = "127.0.0.1:5696"

// gatewayFlags are the flags of `krypton gateway`; each may also come from KRYPTON_<NAME> or from
// a JSON config file (-config) whose keys are the flag names. The command line wins over the
// environment, which wins over the file.
type gatewayFlags struct {
	daemon          daemonFlags
	gc              gcTuning
	region          string
	regionName      string
	failoverRegions string
	regionFailback  time.Duration
	caCert          string
	cert, key       string
	serverCert      string
	serverKey       string
	listen          string
	unixSocket      string
	unixSocketMode  string
	unixSocketGroup int
	httpAddr        string
	batchSize       int
	batchWait       time.Duration
	cacheEntries    int
	cacheBytes      int
	cacheTTL        time.Duration
	delegateWraps   bool
	attemptTimeout  time.Duration
	maxAttempts     int
	retryBudget     time.Duration
	refresh         time.Duration
	kmip            bool
	kmipAddr        string
	kmipRegistry    string
	xksAddr         string
	xksCert, xksKey string
	xksPrefix       string
	xksRegion       string
	xksCredentials  string
	xksKeysFile     string
	xksCreateKeys   string
	xksClientCA     string
	xksClientSubj   string
	xksTimeout      time.Duration
}

func (f *gatewayFlags) declare(fs *flag.FlagSet) {
	d := gateway.DefaultConfig()
	f.daemon.declare(fs, "batch-size")
	f.gc.declare(fs)
	fs.StringVar(&f.region, "region", "", "API addresses (host:port) of one or more region nodes, comma-separated; the gateway finds the others")
	fs.StringVar(&f.regionName, "region-name", "", "the name of that region (required): every node must present a node certificate of it, so a node of another region is refused")
	fs.StringVar(&f.failoverRegions, "failover-regions", "", "regions to fail over to, in order of preference after -region-name, as NAME=ADDR[,ADDR...][,NAME=ADDR...] (each node must present a node certificate of its region); the tenant must be shared across them")
	fs.DurationVar(&f.regionFailback, "region-failback", d.RegionFailback, "how long a more preferred region must serve without a break before the gateway moves back to it")
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA of the region's and the applications' certificates")
	fs.StringVar(&f.cert, "cert", "", "PEM file of the gateway's service certificate (krypton certs service TENANT SERVICE): the tenant and service it acts for")
	fs.StringVar(&f.key, "key", "", "PEM file of that certificate's private key")
	fs.StringVar(&f.serverCert, "server-cert", "", "PEM file of the certificate the TCP front end presents (a gateway certificate of the tenant: krypton certs gateway -ip ADDR TENANT gateway-1); needed with -listen")
	fs.StringVar(&f.serverKey, "server-key", "", "PEM file of its private key")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:7600", "host:port of the gRPC front end (mutual TLS; applications present service certificates of the gateway's tenant); empty disables")
	fs.StringVar(&f.unixSocket, "unix-socket", "", "path of a Unix socket serving the same API without TLS (whoever can open it acts as the gateway); empty disables")
	fs.StringVar(&f.unixSocketMode, "unix-socket-mode", "0600", "the socket file's mode, in octal")
	fs.IntVar(&f.unixSocketGroup, "unix-socket-group", -1, "numeric group id given to the socket file (with -unix-socket-mode 0660 to admit that group); -1 keeps the default")
	fs.StringVar(&f.httpAddr, "http-addr", "", "host:port for /metrics, /livez, /readyz and /healthz (plain HTTP); empty disables")
	fs.IntVar(&f.batchSize, "batch-size", d.BatchSize, "most requests coalesced into one region call (1 turns batching off)")
	fs.DurationVar(&f.batchWait, "batch-wait", d.BatchWait, "longest a request waits for others to join its batch")
	fs.IntVar(&f.cacheEntries, "cache-entries", 0, "entries of the cache of unwrapped data keys; 0 (the default) turns the cache off")
	fs.IntVar(&f.cacheBytes, "cache-bytes", d.CacheBytes, "bytes the cache may hold (blobs, contexts and keys)")
	fs.DurationVar(&f.cacheTTL, "cache-ttl", d.CacheTTL, "longest a cached data key is used after the region unwrapped it")
	fs.BoolVar(&f.delegateWraps, "delegate-wraps", d.DelegateWraps, "wrap data keys here under delegated wrapping keys from the region, with no region call per key (docs/gateway.md, Delegated data keys); -delegate-wraps=false sends every key to the region")
	fs.DurationVar(&f.attemptTimeout, "attempt-timeout", d.AttemptTimeout, "bound on one call to one region node")
	fs.IntVar(&f.maxAttempts, "max-attempts", d.MaxAttempts, "attempts per request across region nodes, at least (1 to 16)")
	fs.DurationVar(&f.retryBudget, "retry-budget", d.RetryBudget, "how long a request keeps being retried while no region node serves (a leader election), within the caller's deadline")
	fs.DurationVar(&f.refresh, "refresh-interval", d.RefreshInterval, "how often the gateway asks the region for its nodes")
	fs.BoolVar(&f.kmip, "kmip", false, "serve KMIP (TTLV over mutual TLS) on -kmip-addr, by default "+defaultKMIPAddr)
	fs.StringVar(&f.kmipAddr, "kmip-addr", "", "host:port of the KMIP front end; setting it enables KMIP (needs -server-cert and -server-key)")
	fs.StringVar(&f.kmipRegistry, "kmip-registry", "", "bbolt file keeping the KMIP objects (wrapped keys and attributes); empty keeps them in memory only")
	fs.StringVar(&f.xksAddr, "xks-addr", "", "host:port of the AWS KMS External Key Store proxy (HTTPS, SigV4; docs/xks.md); empty disables")
	fs.StringVar(&f.xksCert, "xks-cert", "", "PEM file of the XKS HTTPS certificate (naming the proxy's DNS name, from a CA AWS KMS trusts)")
	fs.StringVar(&f.xksKey, "xks-key", "", "PEM file of its private key")
	fs.StringVar(&f.xksPrefix, "xks-path-prefix", "", "path before /kms/xks/v1 (the key store's XksProxyUriPath minus /kms/xks/v1), e.g. /keystores/acme; empty for none")
	fs.StringVar(&f.xksRegion, "xks-region", "", "the AWS region whose KMS calls the proxy (the SigV4 credential scope's region), e.g. eu-west-1")
	fs.StringVar(&f.xksCredentials, "xks-credentials", "", "file of the SigV4 credentials accepted, one 'ACCESS_KEY_ID SECRET_ACCESS_KEY' a line, mode 0600; re-read when it changes")
	fs.StringVar(&f.xksKeysFile, "xks-keys-file", "", "JSON file of the external keys (IDs and their region-wrapped blobs)")
	fs.StringVar(&f.xksCreateKeys, "xks-create-keys", "", "external key IDs, comma-separated, to create at start if the keys file lacks them")
	fs.StringVar(&f.xksClientCA, "xks-client-ca", "", "PEM file of the CAs whose client certificates the XKS proxy requires (mutual TLS); empty: SigV4 only")
	fs.StringVar(&f.xksClientSubj, "xks-client-subject", "", "common name the XKS client certificate must carry, e.g. cks.kms.eu-west-1.amazonaws.com (needs -xks-client-ca)")
	fs.DurationVar(&f.xksTimeout, "xks-timeout", d.XKS.Timeout, "bound on one XKS request's work (AWS KMS gives up at 250 ms)")
}

func (f *gatewayFlags) gatewayConfig(e *daemonEnv) (gateway.Config, error) {
	cfg := gateway.DefaultConfig()
	cfg.RegionAddrs, cfg.Region = splitList(f.region), f.regionName
	if len(cfg.RegionAddrs) == 0 {
		return cfg, usagef("gateway: -region is required")
	}
	var err error
	if cfg.FailoverRegions, err = parseFailoverRegions(f.failoverRegions); err != nil {
		return cfg, err
	}
	cfg.RegionFailback = f.regionFailback
	if f.caCert == "" || f.cert == "" || f.key == "" {
		return cfg, usagef("gateway: -ca-cert, -cert and -key are required: the gateway calls the region with its own service certificate")
	}
	// The service certificate is checked first: it names what the gateway serves.
	if cert, err := pki.LoadCertificate(f.cert, f.key); err != nil {
		return cfg, err
	} else if id, err := cert.Identity(); err != nil || id.Kind != pki.KindService {
		return cfg, usagef("gateway: -cert must be a service certificate (krypton certs service TENANT SERVICE)")
	}
	cfg.ListenAddr = f.listen
	if f.kmip && f.kmipAddr == "" {
		f.kmipAddr = defaultKMIPAddr
	}
	cfg.KMIPAddr, cfg.KMIPRegistryPath = f.kmipAddr, f.kmipRegistry
	// One Reloader for both certificates: they share the CA bundle, and a reload uses both new
	// files or neither.
	pairs := []pki.ReloadPair{{Name: "service", CertFile: f.cert, KeyFile: f.key}}
	if f.listen != "" || f.kmipAddr != "" {
		if f.serverCert == "" || f.serverKey == "" {
			return cfg, usagef("gateway: -listen and -kmip-addr need -server-cert and -server-key (or -listen '' for the Unix socket only)")
		}
		pairs = append(pairs, pki.ReloadPair{Name: "server", CertFile: f.serverCert, KeyFile: f.serverKey})
	}
	r, err := e.certs(f.caCert, pairs...)
	if err != nil {
		return cfg, err
	}
	cfg.CertSource = r.Source(0)
	m := cfg.CertSource.Current()
	cfg.Roots, cfg.Certificate = m.Roots, m.Certificate
	if len(pairs) > 1 {
		cfg.ServerCertSource = r.Source(1)
		cfg.ServerCertificate = cfg.ServerCertSource.Current().Certificate
	}
	cfg.UnixSocket = f.unixSocket
	mode, err := strconv.ParseUint(f.unixSocketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return cfg, usagef("gateway: -unix-socket-mode %q: want an octal mode such as 0600", f.unixSocketMode)
	}
	cfg.UnixSocketMode = os.FileMode(mode)
	cfg.UnixSocketGroup = f.unixSocketGroup
	cfg.HTTPAddr = f.httpAddr
	cfg.BatchSize, cfg.BatchWait = f.batchSize, f.batchWait
	cfg.CacheEntries, cfg.CacheBytes, cfg.CacheTTL = f.cacheEntries, f.cacheBytes, f.cacheTTL
	cfg.DelegateWraps = f.delegateWraps
	cfg.AttemptTimeout, cfg.MaxAttempts, cfg.RetryBudget, cfg.RefreshInterval = f.attemptTimeout, f.maxAttempts, f.retryBudget, f.refresh
	if f.xksAddr != "" {
		if err := f.xksConfig(&cfg); err != nil {
			return cfg, err
		}
	}
	if cfg.ListenAddr == "" && cfg.UnixSocket == "" && f.kmipAddr == "" && f.xksAddr == "" {
		return cfg, usagef("gateway: nothing to serve: give -listen, -unix-socket, -kmip-addr or -xks-addr")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err.Error()}
	}
	return cfg, nil
}

// parseFailoverRegions parses -failover-regions: NAME=ADDR starts a region, and the bare
// addresses after it are more of its nodes (an address never holds '=').
func parseFailoverRegions(v string) ([]gateway.Region, error) {
	var out []gateway.Region
	for _, p := range splitList(v) {
		name, addr, named := strings.Cut(p, "=")
		switch {
		case named:
			name, addr = strings.TrimSpace(name), strings.TrimSpace(addr)
			if name == "" || addr == "" {
				return nil, usagef("gateway: -failover-regions: %q: want NAME=ADDR, e.g. eu-2=10.0.1.1:7400", p)
			}
			out = append(out, gateway.Region{Name: name, Addrs: []string{addr}})
		case len(out) == 0:
			return nil, usagef("gateway: -failover-regions: %q comes before any region name: start with NAME=ADDR, e.g. eu-2=10.0.1.1:7400,10.0.1.2:7400", p)
		default:
			out[len(out)-1].Addrs = append(out[len(out)-1].Addrs, p)
		}
	}
	return out, nil
}

// xksConfig fills the XKS proxy front end's configuration from the -xks-* flags.
func (f *gatewayFlags) xksConfig(cfg *gateway.Config) error {
	if f.xksCert == "" || f.xksKey == "" || f.xksRegion == "" || f.xksCredentials == "" || f.xksKeysFile == "" {
		return usagef("gateway: -xks-addr needs -xks-cert, -xks-key, -xks-region, -xks-credentials and -xks-keys-file (docs/xks.md)")
	}
	cert, err := tls.LoadX509KeyPair(f.xksCert, f.xksKey)
	if err != nil {
		return fmt.Errorf("gateway: -xks-cert/-xks-key: %w", err)
	}
	cfg.XKSAddr = f.xksAddr
	x := &cfg.XKS
	x.Certificate, x.PathPrefix, x.Region = cert, f.xksPrefix, f.xksRegion
	x.CredentialsFile, x.KeysPath, x.Timeout = f.xksCredentials, f.xksKeysFile, f.xksTimeout
	x.ClientSubject = f.xksClientSubj
	if f.xksClientCA != "" {
		if x.ClientCAs, err = pki.LoadCertPool(f.xksClientCA); err != nil {
			return err
		}
	}
	for _, id := range splitList(f.xksCreateKeys) {
		if !xks.ValidKeyID(id) {
			return usagef("gateway: -xks-create-keys: %q is not an external key ID (1 to 128 letters, digits, '-', '.' or '_')", id)
		}
	}
	return x.Validate()
}

// createXKSKeys makes the -xks-create-keys keys the keys file lacks, retrying while the region is
// unavailable (a gateway may start before its region serves).
func createXKSKeys(ctx context.Context, g *gateway.Gateway, ids []string, w io.Writer) error {
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		for {
			created, err := g.XKS().CreateKey(ctx, id)
			if err == nil {
				if created {
					fmt.Fprintf(w, "krypton: created XKS external key %s\n", id)
				}
				break
			}
			if status.Code(errors.Unwrap(err)) != codes.Unavailable || ctx.Err() != nil {
				cancel()
				return err
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		cancel()
	}
	return nil
}

func gatewayCommand() *command {
	f := &gatewayFlags{}
	return &command{
		name:     "gateway",
		synopsis: "run a gateway beside applications",
		help: "Runs a gateway until SIGINT or SIGTERM (SIGHUP reloads its certificate files, as a change of them does): it makes data keys at the edge, has the region wrap and unwrap them\n" +
			"(batching concurrent requests, failing over between nodes), and serves applications over gRPC with TLS,\n" +
			"a Unix socket, and KMIP. See docs/gateway.md.",
		flags: f.declare,
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			return runDaemon(ctx, s, fs, "gateway", &f.daemon, nil, func(e *daemonEnv) (daemon, error) {
				cfg, err := f.gatewayConfig(e)
				if err != nil {
					return daemon{}, err
				}
				// The gateway's live heap is small and each data key allocates: the same floor
				// under the collector's goal as a region node (server_tuning.go).
				gcStop, err := f.gc.apply("gateway", e.log)
				if err != nil {
					return daemon{}, err
				}
				e.atExit(gcStop)
				cfg.Logger = e.log
				if cfg.TracerProvider, err = e.tracing(&f.daemon, "krypton-gateway", ""); err != nil {
					return daemon{}, err
				}
				g, err := gateway.New(cfg)
				if err != nil {
					return daemon{}, err
				}
				if cfg.XKSAddr != "" {
					if err := createXKSKeys(ctx, g, splitList(f.xksCreateKeys), e.s.err); err != nil {
						g.Close()
						return daemon{}, err
					}
				}
				served := make(chan struct{})
				var serveErr error
				go func() { defer close(served); serveErr = g.Serve() }()
				id := g.Identity()
				fmt.Fprintf(e.s.err, "krypton: gateway for %s/%s", id.Tenant, id.Service)
				if a := g.Addr(); a != nil {
					fmt.Fprintf(e.s.err, " serving on %s", a)
				}
				if cfg.UnixSocket != "" {
					fmt.Fprintf(e.s.err, ", %s", cfg.UnixSocket)
				}
				if a := g.KMIPAddr(); a != nil {
					fmt.Fprintf(e.s.err, ", KMIP on %s", a)
				}
				if a := g.XKSAddr(); a != nil {
					fmt.Fprintf(e.s.err, ", AWS XKS proxy on https://%s%s/kms/xks/v1 (%d external keys)", a, cfg.XKS.PathPrefix, len(g.XKS().KeyIDs()))
				}
				fmt.Fprintln(e.s.err)
				return daemon{
					stop: func() error {
						err := g.Close()
						<-served
						return err
					},
					// Serve returns before Close only on a front end's error.
					done: served,
					ended: func() error {
						g.Close()
						return serveErr
					},
				}, nil
			})
		},
	}
}
