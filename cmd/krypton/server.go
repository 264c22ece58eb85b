package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
)

// serverFlags are the flags of `krypton server`; each may also come from a config file (-config,
// JSON with the flag names as keys) or from KRYPTON_<NAME>. The command line wins over the
// environment, which wins over the file.
type serverFlags struct {
	daemon          daemonFlags
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
	governance      string
	tuning          raftTuning
	gc              gcTuning
	oidc            oidcFlags
	audit           auditFlags
	settings        string
	keyringSize     int
	keyWarmup       bool
	anchorChecks    int
	anchorTimeout   time.Duration
	snapshots       snapshotFlags
}

func (f *serverFlags) declare(fs *flag.FlagSet) {
	f.daemon.declare(fs, "node-id")
	fs.StringVar(&f.nodeID, "node-id", "", "this node's id; its certificate must name it and the region (spiffe://krypton/region/<region>/node/<id>, krypton certs node -region R <id>)")
	fs.StringVar(&f.region, "region", "dev", "the region's name; bound into every tenant-key seal, never change it")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, snapshots and the audit log")
	fs.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7410", "host:port for Raft (mutual TLS)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7420", "host:port for gossip (encrypted, TCP and UDP)")
	fs.StringVar(&f.apiAddr, "api-addr", "127.0.0.1:7400", "host:port for the gRPC API (mutual TLS)")
	fs.StringVar(&f.httpAddr, "http-addr", "", "host:port for /metrics, /livez, /readyz and /healthz (plain HTTP: keep it on loopback or a management network); empty disables")
	fs.StringVar(&f.pprofAddr, "pprof", "", "host:port to serve /debug/pprof on, over mutual TLS to operator certificates only; empty (the default) disables the profiler")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "number of nodes that bootstrap a new region together (3 or 5); 0 joins an existing region")
	fs.StringVar(&f.join, "join", "", "gossip addresses of other nodes, comma-separated")
	f.gossip.declare(fs)
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA that signs node, service and operator certificates")
	fs.StringVar(&f.cert, "cert", "", "PEM file of this node's certificate")
	fs.StringVar(&f.key, "key", "", "PEM file of this node's private key")
	fs.BoolVar(&f.devAnchor, "dev-anchor", false, "allow tenants on the file:// development anchor (never in production)")
	fs.StringVar(&f.governance, "governance", "", "gRPC addresses of the governance nodes, comma-separated: the region's leader follows their feed (the node certificate must then name the region: spiffe://krypton/region/<region>/node/<id>); empty runs the region on its own")
	f.tuning.declare(fs)
	f.gc.declare(fs)
	fs.BoolVar(&f.keyWarmup, "key-warmup", true, "after a restart, and on becoming leader, open again the keys that were in the keyring (their IDs, never the keys, are kept in <data-dir>/recent-keys) before calls need them; -key-warmup=false starts cold")
	fs.IntVar(&f.keyringSize, "keyring-size", 0, "most unsealed L2 versions, and most L3 versions, held in locked memory at once (0: three quarters of what RLIMIT_MEMLOCK leaves free, 16 to 8192, or 8192 when memory locking is unlimited; the node logs the size it chose); each locks a page, and a size that does not fit the memlock limit refuses to start: raise it (ulimit -l, systemd LimitMEMLOCK=) first")
	fs.IntVar(&f.anchorChecks, "anchor-check-concurrency", 0, "most L1 checks the leader runs at once, each anchor once per anchor-check-period (0: 64); raise it when krypton_anchor_check_rounds_late_total grows")
	fs.DurationVar(&f.anchorTimeout, "anchor-check-timeout", 0, "how long one L1 check may take before it counts as a transient failure (0: 10s)")
	f.oidc.declare(fs)
	f.audit.declare(fs)
	f.snapshots.declare(fs)
	fs.StringVar(&f.settings, "region-settings", "", "region settings the leader keeps proposing while the replicated ones differ, as lease-duration=2s,anchor-check-period=1s,anchor-grace-period=10s (give every node the same; for tests and the chaos suite)")
}

func (f *serverFlags) regionConfig(e *daemonEnv) (region.Config, error) {
	log := e.log
	cfg := region.DefaultConfig()
	cfg.NodeID, cfg.Region = f.nodeID, f.region
	dir, err := dataDirFlag("server", f.dataDir)
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
	cfg.NoKeyWarmup = !f.keyWarmup
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
	if cfg.GossipKey, cfg.CertSource, err = nodeSecrets(e, "server", pki.KindNode, &f.gossip, f.caCert, f.cert, f.key, f.nodeID); err != nil {
		return cfg, err
	}
	m := cfg.CertSource.Current()
	cfg.Roots, cfg.Certificate = m.Roots, m.Certificate
	if cfg.Settings, err = fsm.ParseSettings(f.settings); err != nil {
		return cfg, usagef("-region-settings: %v", err)
	}
	return cfg, cfg.Validate()
}

func serverCommand() *command {
	f := &serverFlags{}
	return &command{
		name:     "server",
		synopsis: "run a region node",
		help: "Runs one node of a region until SIGINT or SIGTERM, which stop it cleanly and wipe every key from memory\n" +
			"(SIGHUP reloads its certificate files, as a change of them does),\n" +
			"or until `krypton leave` takes the node out of the region, after which the process exits (code 0).\n" +
			"Start three (or five) nodes the same way with -bootstrap-expect 3 and -join pointing at one another.",
		flags: f.declare,
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			return runDaemon(ctx, s, fs, "server", &f.daemon, &f.gossip, func(e *daemonEnv) (daemon, error) {
				cfg, err := f.regionConfig(e)
				if err != nil {
					return daemon{}, err
				}
				gcStop, err := f.gc.apply("server", e.log)
				if err != nil {
					return daemon{}, err
				}
				e.atExit(gcStop)
				e.atExit(func() { cfg.OIDC.Close() }) // after the node has stopped
				if cfg.TracerProvider, err = e.tracing(&f.daemon, "krypton-region", cfg.NodeID); err != nil {
					return daemon{}, err
				}
				sched, err := f.snapshots.schedule("server", cfg.DataDir, "region-"+cfg.Region, e.log)
				if err != nil {
					return daemon{}, err
				}
				n, err := region.New(cfg)
				if err != nil {
					return daemon{}, err
				}
				if sched != nil {
					sched.take = n.Snapshot
					e.background(sched.run)
				}
				fmt.Fprintf(e.s.err, "krypton: node %s of region %s serving on %s\n", cfg.NodeID, cfg.Region, n.RPCAddr())
				return daemon{
					stop: n.Shutdown,
					// `krypton leave` took the node out of the region and stopped it (Raft and bolt
					// closed, keys wiped): a process with no node has nothing left to serve.
					done: n.Done(),
					ended: func() error {
						e.log.Info("the node has left the region; exiting")
						return n.StopErr()
					},
				}, nil
			})
		},
	}
}
