package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/awnumar/memguard"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
)

// serverFlags are the flags of `krypton server`; each may also come from a config file (-config,
// JSON with the flag names as keys) or from KRYPTON_<NAME>. The command line wins over the
// environment, which wins over the file.
type serverFlags struct {
	config          string
	nodeID          string
	region          string
	dataDir         string
	raftAddr        string
	gossipAddr      string
	apiAddr         string
	httpAddr        string
	pprofAddr       string
	bootstrapExpect int
	join            string
	gossip          gossipKeyFlags
	caCert          string
	cert            string
	key             string
	devAnchor       bool
	logLevel        string
	logFormat       string
	governance      string
	tuning          raftTuning
	gc              gcTuning
	oidc            oidcFlags
	audit           auditFlags
	settings        string
	keyringSize     int
	anchorChecks    int
	anchorTimeout   time.Duration
}

func (f *serverFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "JSON config file whose keys are these flags' names (e.g. \"node-id\")")
	fs.StringVar(&f.nodeID, "node-id", "", "this node's id; its certificate must name it and the region (spiffe://krypton/region/<region>/node/<id>, krypton certs node -region R <id>)")
	fs.StringVar(&f.region, "region", "dev", "the region's name; bound into every tenant-key seal, never change it")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, snapshots and the audit log")
	fs.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7410", "host:port for Raft (mutual TLS)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7420", "host:port for gossip (encrypted, TCP and UDP)")
	fs.StringVar(&f.apiAddr, "api-addr", "127.0.0.1:7400", "host:port for the gRPC API (mutual TLS)")
	fs.StringVar(&f.httpAddr, "http-addr", "", "host:port for /metrics and /healthz (plain HTTP: keep it on loopback or a management network); empty disables")
	fs.StringVar(&f.pprofAddr, "pprof", "", "host:port to serve /debug/pprof on, over mutual TLS to operator certificates only; empty (the default) disables the profiler")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "number of nodes that bootstrap a new region together (3 or 5); 0 joins an existing region")
	fs.StringVar(&f.join, "join", "", "gossip addresses of other nodes, comma-separated")
	f.gossip.declare(fs)
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA that signs node, service and operator certificates")
	fs.StringVar(&f.cert, "cert", "", "PEM file of this node's certificate")
	fs.StringVar(&f.key, "key", "", "PEM file of this node's private key")
	fs.BoolVar(&f.devAnchor, "dev-anchor", false, "allow tenants on the file:// development anchor (never in production)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.governance, "governance", "", "gRPC addresses of the governance nodes, comma-separated: the region's leader follows their feed (the node certificate must then name the region: spiffe://krypton/region/<region>/node/<id>); empty runs the region on its own")
	f.tuning.declare(fs)
	f.gc.declare(fs)
	fs.IntVar(&f.keyringSize, "keyring-size", 0, "most unsealed L2 versions, and most L3 versions, held in locked memory at once (0: 512, or what RLIMIT_MEMLOCK allows if less); each locks a page, and a size that does not fit the memlock limit refuses to start: raise it (ulimit -l, systemd LimitMEMLOCK=) first")
	fs.IntVar(&f.anchorChecks, "anchor-check-concurrency", 0, "most L1 checks the leader runs at once, each anchor once per anchor-check-period (0: 64); raise it when krypton_anchor_check_rounds_late_total grows")
	fs.DurationVar(&f.anchorTimeout, "anchor-check-timeout", 0, "how long one L1 check may take before it counts as a transient failure (0: 10s)")
	f.oidc.declare(fs)
	f.audit.declare(fs)
	fs.StringVar(&f.settings, "region-settings", "", "region settings the leader keeps proposing while the replicated ones differ, as lease-duration=2s,anchor-check-period=1s,anchor-grace-period=10s (give every node the same; for tests and the chaos suite)")
}

// applyConfigFile sets every flag that neither the command line nor the environment set from the
// JSON file named by -config.
func applyConfigFile(fs *flag.FlagSet, path string, fromEnv map[string]bool) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("server: config: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("server: config %s: %w", path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range raw {
		if fs.Lookup(name) == nil || name == "config" {
			return usagef("server: config %s: unknown key %q", path, name)
		}
		if given[name] || fromEnv[name] {
			continue
		}
		var s any
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("server: config %s: key %q: %w", path, name, err)
		}
		var str string
		switch x := s.(type) {
		case string:
			str = x
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			str = strings.Join(parts, ",")
		default:
			str = fmt.Sprint(x)
		}
		if err := fs.Set(name, str); err != nil {
			return usagef("server: config %s: key %q: %v", path, name, err)
		}
	}
	return nil
}

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("-log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, usagef("-log-format %q: want text or json", format)
}

func (f *serverFlags) regionConfig(log *slog.Logger) (region.Config, error) {
	cfg := region.DefaultConfig()
	cfg.NodeID, cfg.Region = f.nodeID, f.region
	if f.dataDir == "" {
		return cfg, usagef("server: -data-dir is required")
	}
	dir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return cfg, err
	}
	cfg.DataDir = dir
	cfg.RaftAddr, cfg.GossipAddr, cfg.RPCAddr, cfg.HTTPAddr = f.raftAddr, f.gossipAddr, f.apiAddr, f.httpAddr
	cfg.PprofAddr = f.pprofAddr
	cfg.BootstrapExpect = f.bootstrapExpect
	cfg.Join = splitList(f.join)
	cfg.Governance = splitList(f.governance)
	cfg.AllowDevAnchor = f.devAnchor
	cfg.Logger = log
	cfg.Tune = f.tuning.apply
	if f.keyringSize < 0 {
		return cfg, usagef("server: -keyring-size %d is negative", f.keyringSize)
	}
	cfg.KeyringSize = f.keyringSize
	if f.anchorChecks < 0 || f.anchorTimeout < 0 {
		return cfg, usagef("server: -anchor-check-concurrency and -anchor-check-timeout must not be negative")
	}
	cfg.AnchorCheckConcurrency, cfg.AnchorCheckTimeout = f.anchorChecks, f.anchorTimeout
	if cfg.AuditSyslog, err = f.audit.syslogConfig(log); err != nil {
		return cfg, err
	}
	if cfg.OIDC, err = f.oidc.verifier(log); err != nil {
		return cfg, err
	}
	if cfg.GossipKey, cfg.Roots, cfg.Certificate, err = nodeSecrets("server", pki.KindNode, &f.gossip, f.caCert, f.cert, f.key, f.nodeID); err != nil {
		return cfg, err
	}
	if cfg.Settings, err = fsm.ParseSettings(f.settings); err != nil {
		return cfg, usagef("-region-settings: %v", err)
	}
	return cfg, cfg.Validate()
}

// gossipKeyFlags are where a node's gossip key comes from: a file (-gossip-key-file), the
// environment (KRYPTON_GOSSIP_KEY) or the -config file's "gossip-key", never the command line,
// which every user of the machine reads in ps and /proc/<pid>/cmdline. -gossip-key stays declared
// only so that giving it is refused with an error that names the alternatives (an unknown flag
// would not, and the flag package's own error would echo the key).
type gossipKeyFlags struct {
	key  secretValue
	file string
}

func (g *gossipKeyFlags) declare(fs *flag.FlagSet) {
	fs.Var(&g.key, "gossip-key", "refused on the command line (ps shows it): use -gossip-key-file or KRYPTON_GOSSIP_KEY")
	fs.StringVar(&g.file, "gossip-key-file", "", "file holding base64 of the 32-byte key that encrypts gossip, the same on every node (or KRYPTON_GOSSIP_KEY; never -gossip-key)")
}

// refuseArgv fails if -gossip-key was given on the command line. Call it after the command line
// and the environment were read and before the -config file is: a value then came from one of
// the two, and it came from the environment only if KRYPTON_GOSSIP_KEY holds exactly it.
func (g *gossipKeyFlags) refuseArgv(cmd string) error {
	if !g.key.set {
		return nil
	}
	if env, ok := os.LookupEnv(envName("gossip-key")); ok && env == g.key.v {
		return nil
	}
	return usagef("%s: -gossip-key on the command line is refused: every user of the machine can read a process's arguments (ps, /proc/<pid>/cmdline); "+
		"give -gossip-key-file FILE (mode 0600) or set KRYPTON_GOSSIP_KEY", cmd)
}

// load returns the key, from -gossip-key-file or from KRYPTON_GOSSIP_KEY (or the -config file).
func (g *gossipKeyFlags) load(cmd string) ([]byte, error) {
	b64 := g.key.v
	switch {
	case g.file != "" && g.key.set:
		return nil, usagef("%s: give the gossip key once: -gossip-key-file or KRYPTON_GOSSIP_KEY, not both", cmd)
	case g.file != "":
		b, err := os.ReadFile(g.file)
		if err != nil {
			return nil, usagef("%s: -gossip-key-file: %v", cmd, err)
		}
		b64 = string(b)
		clear(b)
	case !g.key.set:
		return nil, usagef("%s: a gossip key is required: -gossip-key-file FILE or KRYPTON_GOSSIP_KEY (base64 of 32 bytes; e.g. head -c32 /dev/urandom | base64 > gossip.key)", cmd)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil || len(key) != 32 {
		return nil, usagef("%s: the gossip key must be base64 of exactly 32 bytes", cmd)
	}
	return key, nil
}

// secretValue is a string flag whose value no usage text or error ever shows.
type secretValue struct {
	v   string
	set bool
}

func (s *secretValue) String() string { return "" }
func (s *secretValue) Set(v string) error {
	s.v, s.set = v, v != "" // an empty KRYPTON_GOSSIP_KEY= is no key
	return nil
}

// nodeSecrets checks and loads what every node command (server, governance server) needs to join
// its cluster: the gossip key, the CA pool, and a node certificate of kind (a region node's, or a
// governance node's) naming nodeID. cmd prefixes the usage errors.
func nodeSecrets(cmd string, kind pki.Kind, gossip *gossipKeyFlags, caCert, certFile, keyFile, nodeID string) ([]byte, *x509.CertPool, tls.Certificate, error) {
	key, err := gossip.load(cmd)
	if err != nil {
		return nil, nil, tls.Certificate{}, err
	}
	if caCert == "" || certFile == "" || keyFile == "" {
		return nil, nil, tls.Certificate{}, usagef("%s: -ca-cert, -cert and -key are required: Krypton never runs without mutual TLS (`krypton certs` makes development ones)", cmd)
	}
	roots, err := pki.LoadCertPool(caCert)
	if err != nil {
		return nil, nil, tls.Certificate{}, err
	}
	cert, err := pki.LoadCertificate(certFile, keyFile)
	if err != nil {
		return nil, nil, tls.Certificate{}, err
	}
	id, err := cert.Identity()
	if err != nil {
		return nil, nil, tls.Certificate{}, err
	}
	if id.Kind != kind || id.NodeID != nodeID {
		fix := "krypton certs node -region R " + nodeID
		if kind == pki.KindGovernance {
			fix = "krypton certs governance " + nodeID
		}
		return nil, nil, tls.Certificate{}, usagef("%s: the certificate names %s, not the %s %q (%s)", cmd, id, kind, nodeID, fix)
	}
	return key, roots, cert.TLSCertificate(), nil
}

func serverCommand() *command {
	f := &serverFlags{}
	return &command{
		name:     "server",
		synopsis: "run a region node",
		help: "Runs one node of a region until SIGINT or SIGTERM, which stop it cleanly and wipe every key from memory,\n" +
			"or until `krypton leave` takes the node out of the region, after which the process exits (code 0).\n" +
			"Start three (or five) nodes the same way with -bootstrap-expect 3 and -join pointing at one another.",
		flags: f.declare,
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != 0 {
				return usagef("server takes no arguments")
			}
			fromEnv := map[string]bool{}
			fs.VisitAll(func(fl *flag.Flag) {
				if _, ok := os.LookupEnv(envName(fl.Name)); ok {
					fromEnv[fl.Name] = true
				}
			})
			if err := f.gossip.refuseArgv("server"); err != nil {
				return err
			}
			if err := applyConfigFile(fs, f.config, fromEnv); err != nil {
				return err
			}
			log, err := newLogger(f.logLevel, f.logFormat)
			if err != nil {
				return err
			}
			cfg, err := f.regionConfig(log)
			if err != nil {
				return err
			}
			if err := f.gc.apply(log); err != nil {
				return err
			}
			// Whatever happens below, no key outlives the process in locked memory.
			defer memguard.Purge()
			defer cfg.OIDC.Close() // after the node has stopped
			n, err := region.New(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.err, "krypton: node %s of region %s serving on %s\n", cfg.NodeID, cfg.Region, n.RPCAddr())
			select {
			case <-ctx.Done():
				log.Info("signal received; shutting down")
				return n.Shutdown()
			case <-n.Done():
				// `krypton leave` took the node out of the region and stopped it (Raft and bolt
				// closed, keys wiped): a process with no node has nothing left to serve.
				log.Info("the node has left the region; exiting")
				return n.StopErr()
			}
		},
	}
}
