package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/kryptonkms/krypton/gateway"
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
	region          string
	regionName      string
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
	attemptTimeout  time.Duration
	maxAttempts     int
	refresh         time.Duration
	kmip            bool
	kmipAddr        string
	kmipRegistry    string
}

func (f *gatewayFlags) declare(fs *flag.FlagSet) {
	d := gateway.DefaultConfig()
	f.daemon.declare(fs, "batch-size")
	fs.StringVar(&f.region, "region", "", "API addresses (host:port) of one or more region nodes, comma-separated; the gateway finds the others")
	fs.StringVar(&f.regionName, "region-name", "", "the name of that region (required): every node must present a node certificate of it, so a node of another region is refused")
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
	fs.DurationVar(&f.attemptTimeout, "attempt-timeout", d.AttemptTimeout, "bound on one call to one region node")
	fs.IntVar(&f.maxAttempts, "max-attempts", d.MaxAttempts, "attempts per request across region nodes (1 to 16)")
	fs.DurationVar(&f.refresh, "refresh-interval", d.RefreshInterval, "how often the gateway asks the region for its nodes")
	fs.BoolVar(&f.kmip, "kmip", false, "serve KMIP (TTLV over mutual TLS) on -kmip-addr, by default "+defaultKMIPAddr)
	fs.StringVar(&f.kmipAddr, "kmip-addr", "", "host:port of the KMIP front end; setting it enables KMIP (needs -server-cert and -server-key)")
	fs.StringVar(&f.kmipRegistry, "kmip-registry", "", "bbolt file keeping the KMIP objects (wrapped keys and attributes); empty keeps them in memory only")
}

func (f *gatewayFlags) gatewayConfig(e *daemonEnv) (gateway.Config, error) {
	cfg := gateway.DefaultConfig()
	cfg.RegionAddrs, cfg.Region = splitList(f.region), f.regionName
	if len(cfg.RegionAddrs) == 0 {
		return cfg, usagef("gateway: -region is required")
	}
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
	cfg.AttemptTimeout, cfg.MaxAttempts, cfg.RefreshInterval = f.attemptTimeout, f.maxAttempts, f.refresh
	if cfg.ListenAddr == "" && cfg.UnixSocket == "" && f.kmipAddr == "" {
		return cfg, usagef("gateway: nothing to serve: give -listen, -unix-socket or -kmip-addr")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err.Error()}
	}
	return cfg, nil
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
				cfg.Logger = e.log
				if cfg.TracerProvider, err = e.tracing(&f.daemon, "krypton-gateway", ""); err != nil {
					return daemon{}, err
				}
				g, err := gateway.New(cfg)
				if err != nil {
					return daemon{}, err
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
