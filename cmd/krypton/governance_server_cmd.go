// `krypton governance server`: its flags and running a governance node.

package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/internal/pki"
)

// govServerFlags are the flags of `krypton governance server`, read as `krypton server` reads its
// own (command line over KRYPTON_<NAME> over -config).
type govServerFlags struct {
	daemon                                  daemonFlags
	nodeID, dataDir                         string
	raftAddr, gossipAddr, apiAddr, httpAddr string
	pprofAddr                               string
	bootstrapExpect                         int
	join, caCert, cert, key, regions        string
	gossip                                  gossipKeyFlags
	devAnchor                               bool
	heartbeat, eventRetention               time.Duration
	tuning                                  raftTuning
	oidc                                    oidcFlags
	audit                                   auditFlags
	snapshots                               snapshotFlags
}

func (f *govServerFlags) declare(fs *flag.FlagSet) {
	f.daemon.declare(fs, "node-id")
	fs.StringVar(&f.nodeID, "node-id", "", "this node's id; its certificate must name it (spiffe://krypton/governance/node/<id>, krypton certs governance <id>)")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, snapshots and the audit log")
	fs.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7510", "host:port for Raft (mutual TLS)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7520", "host:port for gossip (encrypted, TCP and UDP)")
	fs.StringVar(&f.apiAddr, "api-addr", defaultGovernanceAddr, "host:port for the GovernanceService API (mutual TLS)")
	fs.StringVar(&f.httpAddr, "http-addr", "", "host:port for /metrics, /livez, /readyz and /healthz (plain HTTP); empty disables")
	fs.StringVar(&f.pprofAddr, "pprof", "", "host:port to serve /debug/pprof on, over mutual TLS to operator certificates only; empty (the default) disables the profiler")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "number of nodes that bootstrap a new governance cluster together (3 in production, 1 for development); 0 joins an existing one")
	fs.StringVar(&f.join, "join", "", "gossip addresses of other governance nodes, comma-separated")
	f.gossip.declare(fs)
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA that signs node, service and operator certificates")
	fs.StringVar(&f.cert, "cert", "", "PEM file of this node's certificate")
	fs.StringVar(&f.key, "key", "", "PEM file of this node's private key")
	fs.StringVar(&f.regions, "regions", "", "the only regions tenants may name, comma-separated; empty accepts any region name")
	fs.BoolVar(&f.devAnchor, "dev-anchor", false, "allow tenants on the file:// development anchor (never in production)")
	fs.DurationVar(&f.heartbeat, "heartbeat-interval", 5*time.Second, "how often the revocation feed sends a heartbeat when idle (at most 5s)")
	fs.DurationVar(&f.eventRetention, "event-retention", 7*24*time.Hour, "how long after its last report a region holds back compaction of the event log; a region silent longer catches up from the events that define the state")
	f.tuning.declare(fs)
	f.oidc.declare(fs)
	f.audit.declare(fs)
	f.snapshots.declare(fs)
}

func (f *govServerFlags) governanceConfig(e *daemonEnv) (governance.Config, error) {
	cfg := governance.DefaultConfig()
	cfg.NodeID = f.nodeID
	if f.nodeID == "" {
		return cfg, usagef("governance server: -node-id is required")
	}
	dir, err := dataDirFlag("governance server", f.dataDir)
	if err != nil {
		return cfg, err
	}
	cfg.DataDir = dir
	cfg.RaftAddr, cfg.GossipAddr, cfg.RPCAddr, cfg.HTTPAddr = f.raftAddr, f.gossipAddr, f.apiAddr, f.httpAddr
	cfg.PprofAddr = f.pprofAddr
	cfg.BootstrapExpect = f.bootstrapExpect
	cfg.Join = splitList(f.join)
	cfg.Regions = splitList(f.regions)
	cfg.AllowDevAnchor = f.devAnchor
	if f.heartbeat <= 0 {
		return cfg, usagef("governance server: -heartbeat-interval must be positive")
	}
	cfg.HeartbeatInterval = f.heartbeat
	if f.eventRetention <= 0 {
		return cfg, usagef("governance server: -event-retention must be positive (7 days by default: how long a silent region holds back compaction)")
	}
	cfg.EventRetention = f.eventRetention
	cfg.Tune = f.tuning.apply
	if cfg.GossipKey, cfg.CertSource, err = nodeSecrets(e, "governance server", pki.KindGovernance, &f.gossip, f.caCert, f.cert, f.key, f.nodeID); err != nil {
		return cfg, err
	}
	m := cfg.CertSource.Current()
	cfg.Roots, cfg.Certificate = m.Roots, m.Certificate
	return cfg, cfg.Validate()
}

func governanceServerCommand() *command {
	f := &govServerFlags{}
	return &command{
		name:     "server",
		synopsis: "run a governance node",
		help: "Runs one node of the governance cluster until SIGINT or SIGTERM (SIGHUP reloads its certificate files, as a change of them does). Start three nodes with -bootstrap-expect 3 and -join " +
			"pointing at one another (one with -bootstrap-expect 1 for development). Region nodes follow its feed " +
			"(`krypton server -governance <addrs>`); operators use `krypton tenant|service|policy|revoke -governance <addr>`.",
		flags: f.declare,
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			return runDaemon(ctx, s, fs, "governance server", &f.daemon, &f.gossip, func(e *daemonEnv) (daemon, error) {
				cfg, err := f.governanceConfig(e)
				if err != nil {
					return daemon{}, err
				}
				cfg.Logger = e.log
				if cfg.TracerProvider, err = e.tracing(&f.daemon, "krypton-governance", cfg.NodeID); err != nil {
					return daemon{}, err
				}
				if cfg.AuditSyslog, err = f.audit.syslogConfig(e.log); err != nil {
					return daemon{}, err
				}
				if cfg.OIDC, err = f.oidc.verifier(e.log); err != nil {
					return daemon{}, err
				}
				e.atExit(func() { cfg.OIDC.Close() }) // after the node has stopped
				sched, err := f.snapshots.schedule("governance server", cfg.DataDir, "governance", e.log)
				if err != nil {
					return daemon{}, err
				}
				n, err := governance.Start(ctx, cfg)
				if err != nil {
					return daemon{}, err
				}
				if sched != nil {
					sched.take = governanceSnapshot(n)
					e.background(sched.run)
				}
				fmt.Fprintf(e.s.err, "krypton: governance node %s serving on %s\n", cfg.NodeID, n.Addr())
				return daemon{stop: n.Close}, nil
			})
		},
	}
}
