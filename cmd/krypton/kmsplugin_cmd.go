package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/kryptonkms/krypton/client"
	"github.com/kryptonkms/krypton/gateway/kmsplugin"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
)

// kmsPluginFlags are the flags of `krypton kms-plugin`; like the gateway's, each may also come from
// KRYPTON_<NAME> or from a JSON config file (-config).
type kmsPluginFlags struct {
	daemon        daemonFlags
	socket        string
	socketMode    string
	socketGroup   int
	gatewaySocket string
	gatewayAddr   string
	region        string
	regionName    string
	caCert        string
	cert, key     string
	context       string
	timeout       time.Duration
}

func (f *kmsPluginFlags) declare(fs *flag.FlagSet) {
	d := kmsplugin.DefaultConfig()
	f.daemon.declare(fs, "socket")
	fs.StringVar(&f.socket, "socket", "", "path of the Unix socket the kube-apiserver calls (its EncryptionConfiguration's endpoint: unix:///PATH); required")
	fs.StringVar(&f.socketMode, "socket-mode", "0600", "the socket file's mode, in octal: whoever can open it can have Secrets' keys sealed and opened")
	fs.IntVar(&f.socketGroup, "socket-group", -1, "numeric group id given to the socket file (with -socket-mode 0660 to admit that group); -1 keeps the default")
	fs.StringVar(&f.gatewaySocket, "gateway-socket", "", "work through the gateway on this Unix socket (krypton gateway -unix-socket): the gateway's service identity is used")
	fs.StringVar(&f.gatewayAddr, "gateway", "", "work through the gateway at host:port (its TLS front end), as the service of -cert")
	fs.StringVar(&f.region, "region", "", "work directly against these region nodes (host:port, comma-separated), as the service of -cert")
	fs.StringVar(&f.regionName, "region-name", "", "with -region: the region's name; every node must present a node certificate of it")
	fs.StringVar(&f.caCert, "ca-cert", "", "with -gateway or -region: PEM file of the CA")
	fs.StringVar(&f.cert, "cert", "", "with -gateway or -region: PEM file of the service certificate (krypton certs service TENANT SERVICE) whose key seals the Secrets")
	fs.StringVar(&f.key, "key", "", "PEM file of that certificate's private key")
	fs.StringVar(&f.context, "context", kmsplugin.DefaultContext, "context bound to every DEK seed, e.g. the cluster's name; the same context is needed to open them, so never change it for a cluster")
	fs.DurationVar(&f.timeout, "timeout", d.Timeout, "bound on one call's work (the apiserver's own timeout applies too)")
}

// dial makes the client the plugin works through, as the flags say; closing it is the caller's.
func (f *kmsPluginFlags) dial(ctx context.Context, e *daemonEnv) (c *client.Client, via string, err error) {
	n := 0
	for _, s := range []string{f.gatewaySocket, f.gatewayAddr, f.region} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, "", usagef("kms-plugin: give exactly one of -gateway-socket, -gateway and -region: what the plugin works through")
	}
	if f.gatewaySocket != "" {
		if f.cert != "" {
			return nil, "", usagef("kms-plugin: -gateway-socket acts as the gateway's own service; -cert is for -gateway and -region")
		}
		if f.daemon.trace.endpoint != "" {
			return nil, "", usagef("kms-plugin: traces are sent with -gateway and -region; on -gateway-socket the gateway traces its calls")
		}
		c, err := client.DialGatewayUnix(f.gatewaySocket)
		return c, "the gateway on " + f.gatewaySocket, err
	}
	if f.caCert == "" || f.cert == "" || f.key == "" {
		return nil, "", usagef("kms-plugin: -gateway and -region need -ca-cert, -cert and -key: the service identity the plugin acts as")
	}
	cert, err := pki.LoadCertificate(f.cert, f.key)
	if err != nil {
		return nil, "", err
	}
	id, err := cert.Identity()
	if err != nil || id.Kind != pki.KindService {
		return nil, "", usagef("kms-plugin: -cert must be a service certificate (krypton certs service TENANT SERVICE)")
	}
	r, err := e.certs(f.caCert, pki.ReloadPair{Name: "service", CertFile: f.cert, KeyFile: f.key})
	if err != nil {
		return nil, "", err
	}
	src := r.Source(0)
	m := src.Current()
	cfg := transport.ClientConfig{Roots: m.Roots, Certificate: m.Certificate, Source: src}
	if cfg.TracerProvider, err = e.tracing(&f.daemon, "krypton-kms-plugin", ""); err != nil {
		return nil, "", err
	}
	if f.gatewayAddr != "" {
		c, err := client.DialGateway(ctx, f.gatewayAddr, cfg)
		return c, fmt.Sprintf("the gateway at %s as %s/%s", f.gatewayAddr, id.Tenant, id.Service), err
	}
	if f.regionName == "" {
		return nil, "", usagef("kms-plugin: -region needs -region-name: a node of another region is then refused")
	}
	c, err = client.DialRegion(ctx, f.regionName, splitList(f.region), cfg, id.Tenant, id.Service)
	return c, fmt.Sprintf("region %s as %s/%s", f.regionName, id.Tenant, id.Service), err
}

// pluginConfig is the plugin's configuration but for Keys.
func (f *kmsPluginFlags) pluginConfig() (kmsplugin.Config, error) {
	cfg := kmsplugin.DefaultConfig()
	if f.socket == "" {
		return cfg, usagef("kms-plugin: -socket is required: the path the EncryptionConfiguration's endpoint names (unix:///PATH)")
	}
	mode, err := strconv.ParseUint(f.socketMode, 8, 32)
	if err != nil || mode > 0o777 || mode == 0 {
		return cfg, usagef("kms-plugin: -socket-mode %q: want an octal mode such as 0600", f.socketMode)
	}
	if f.context == "" {
		return cfg, usagef("kms-plugin: -context must not be empty")
	}
	cfg.Socket, cfg.SocketMode, cfg.SocketGroup = f.socket, os.FileMode(mode), f.socketGroup
	cfg.Context, cfg.Timeout = []byte(f.context), f.timeout
	if f.timeout <= 0 {
		return cfg, usagef("kms-plugin: -timeout must be positive")
	}
	return cfg, nil
}

func kmsPluginCommand() *command {
	f := &kmsPluginFlags{}
	return &command{
		name:     "kms-plugin",
		synopsis: "run a Kubernetes KMS v2 plugin that seals Secrets through Krypton",
		help: "Runs a Kubernetes KMS v2 plugin until SIGINT or SIGTERM: it serves the kube-apiserver's KeyManagementService\n" +
			"(Status, Encrypt, Decrypt) on -socket and seals the apiserver's DEK seeds through a gateway (-gateway-socket,\n" +
			"-gateway) or the region's nodes (-region) under a service key. The key ID it reports changes when that key\n" +
			"rotates; Status is not \"ok\" while the region refuses (revoked key, locked tenant, unreachable). See docs/kms-plugin.md.",
		flags: f.declare,
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			return runDaemon(ctx, s, fs, "kms-plugin", &f.daemon, nil, func(e *daemonEnv) (daemon, error) {
				cfg, err := f.pluginConfig()
				if err != nil {
					return daemon{}, err
				}
				c, via, err := f.dial(ctx, e)
				if err != nil {
					return daemon{}, err
				}
				e.atExit(func() { c.Close() })
				cfg.Keys, cfg.Logger = c, e.log
				p, err := kmsplugin.New(cfg)
				if err != nil {
					return daemon{}, err
				}
				served := make(chan struct{})
				var serveErr error
				go func() { defer close(served); serveErr = p.Serve() }()
				fmt.Fprintf(e.s.err, "krypton: kms-plugin serving on %s, through %s\n", cfg.Socket, via)
				// One Status at start says at once whether the region serves the key; the plugin
				// serves either way (it may start before its gateway).
				if st, err := p.Status(ctx); err == nil && st.Healthz == "ok" {
					e.log.Info("kms plugin: the region serves the key", "key_id", st.KeyID)
				} else if err == nil {
					e.log.Warn("kms plugin: the region does not serve the key yet", "healthz", st.Healthz)
				}
				return daemon{
					stop: func() error {
						err := p.Close()
						<-served
						return err
					},
					done: served,
					ended: func() error {
						p.Close()
						return serveErr
					},
				}, nil
			})
		},
	}
}
