package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/awnumar/memguard"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cmd/krypton/internal/bench"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The tenant and service key that `krypton bench -spawn` creates in the region it starts.
const (
	benchTenant  = "bench"
	benchService = "load"
)

// addrList is -addr as bench takes it: repeated, or a comma list, or both.
type addrList []string

func (a *addrList) String() string { return strings.Join(*a, ",") }

func (a *addrList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*a = append(*a, s)
		}
	}
	return nil
}

// benchOptions are the flags of `krypton bench`.
type benchOptions struct {
	addrs                         addrList
	caCert, clientCert, clientKey string
	key                           string
	spawn, via                    int
	conns                         int
	keyDist                       string
	keyringSize                   int
	cpuProfile                    string
	serverPID                     int
	op                            string
	batchForm                     string
	cfg                           bench.Config
	out, plot                     string
	quiet                         bool
	gw                            gatewayBench   // bench_gateway.go
	nb                            neighbourBench // bench_neighbour.go
	el                            electionBench  // bench_elections.go
}

func benchCommand() *command {
	o := &benchOptions{cfg: bench.DefaultConfig()}
	return &command{
		name:     "bench",
		synopsis: "measure wrap throughput and latency under load",
		usage:    "[-spawn 3 | -addr <host:port>[,...] -key <tenant>/<service>] [-op wrap|unwrap|datakey|rewrap|mixed] [-batch N [-batch-form packed|items]] [-callers N | -rate ops/s] [-conns N] [-keys N [-key-dist zipf|uniform]] | -elections [-duration 10m] [-hogs N] [-raft-* D]",
		help: "Drives a region's WrapService over gRPC with mutual TLS and reports throughput and latency: a live line on stderr\n" +
			"once a second, then a table (ops/s, p50, p90, p99, p99.9, max, errors by gRPC code) on stdout, and with -out and -plot\n" +
			"a JSON result and a latency plot.\n\n" +
			"Load: -callers callers each keep one call in flight (closed loop, latency from send to answer); or, with -rate, calls\n" +
			"are scheduled at fixed intervals whatever the answers (open loop, latency from each call's intended send time, so\n" +
			"that a stall counts for every call it delays: no coordinated omission), with at most -callers in flight.\n" +
			"-batch N sends batch RPCs with N items per call; ops count items. Wrap, unwrap and datakey go in the packed form\n" +
			"(PackedWrap, PackedUnwrap, PackedGenerateDataKey: one key per call, the items as repeated bytes), or with\n" +
			"-batch-form items in the per-item form (BatchWrap, BatchUnwrap, BatchGenerateDataKey: a message per item), to\n" +
			"compare; rewrap has only the per-item form (BatchRewrap). A node that does not serve the packed form (an older\n" +
			"version) fails the run before the load.\n\n" +
			"Against running nodes: -addr (repeated or comma-separated, callers are spread over them), -key, and a SERVICE\n" +
			"certificate for that key (-client-cert, -client-key, -ca-cert, or KRYPTON_CLIENT_CERT, KRYPTON_CLIENT_KEY,\n" +
			"KRYPTON_CA_CERT). With -spawn 3 it starts a development region in this process on free ports instead (as\n" +
			"`krypton dev`), creates tenant \"bench\" with key bench/load and a service certificate, runs, and stops it;\n" +
			"region and load generator then share this machine's cores.\n\n" +
			"With -spawn 3 -neighbour it measures a noisy neighbour instead: a second tenant (neighbour/light) sends unary\n" +
			"wraps at -neighbour-rate (open loop), first alone, then while this run's load floods the region as tenant bench,\n" +
			"and with -neighbour-quota N once more with tenant bench under a quota of N requests/s; it prints the second\n" +
			"tenant's p50 and p99 in each phase and their ratios to the unloaded ones (docs/performance.md).\n\n" +
			"Errors are counted by code and never stop the run; it exits 1 if no operation succeeded.\n\n" +
			"With -elections it measures leadership stability instead (docs/performance.md, \"Leadership under CPU starvation\"):\n" +
			"it starts a three-node region of krypton server processes (this binary; -in-process: in this process, as krypton dev)\n" +
			"with production settings and the -raft-* timings, leaves it idle for -duration, with -hogs N beside N busy cores,\n" +
			"and reports Raft term changes, leader changes and leader step-downs per hour, followers' silences, and the serving\n" +
			"leases that lapsed, from the nodes' metrics.",
		flags: func(fs *flag.FlagSet) {
			fs.Var(&o.addrs, "addr", "host:port of a region node's API; repeat it or give a comma list to spread the load (default "+defaultAPIAddr+")")
			fs.StringVar(&o.caCert, "ca-cert", "", "PEM file of the CA that signed the node certificates")
			fs.StringVar(&o.clientCert, "client-cert", "", "PEM file of a service (tenant/service) certificate")
			fs.StringVar(&o.clientKey, "client-key", "", "PEM file of the client certificate's private key")
			fs.StringVar(&o.key, "key", "", "the service key, tenant/service (required without -spawn)")
			fs.IntVar(&o.spawn, "spawn", 0, "start a local development region of this many nodes (3) and measure it")
			fs.IntVar(&o.conns, "conns", 1, "gRPC connections to each node, 1 to 10000; callers are spread over them, so give at least as many -callers to use them all (one HTTP/2 connection carries all its callers through one reader and one writer goroutine on each side)")
			fs.IntVar(&o.cfg.Keys, "keys", 0, "spread the calls over this many service keys (-op wrap or datakey): with -spawn the run creates them (bench/load, bench/load-1, ...) and a policy that lets its certificate use them all; against running nodes -key names the first and <service>-1 ... must exist and be allowed to the certificate (0: the one -key)")
			fs.StringVar(&o.keyDist, "key-dist", string(bench.DistZipf), "with -keys: how each call picks its key: zipf (s=1.1: a few hot keys, a long tail) or uniform")
			fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process over the load (warm-up and measured time) to this file, for go tool pprof; with -spawn it holds the nodes and the generator")
			fs.IntVar(&o.keyringSize, "keyring-size", 0, "with -spawn: each node's keyring size, as krypton server -keyring-size (0: the node's own choice from RLIMIT_MEMLOCK); the run raises RLIMIT_MEMLOCK to fit it if it can")
			fs.IntVar(&o.via, "via", 0, "with -spawn: spread the load over this many of its nodes (default: all; 1 measures through one node)")
			fs.StringVar(&o.op, "op", string(o.cfg.Op), "operation: wrap, unwrap, datakey, rewrap or mixed (all four in equal shares)")
			fs.IntVar(&o.cfg.Batch, "batch", 0, "items per call with the batch RPCs, 1 to 1024; 0 sends unary RPCs")
			fs.StringVar(&o.batchForm, "batch-form", string(bench.FormPacked), "with -batch: packed (PackedWrap, PackedUnwrap, PackedGenerateDataKey) or items (BatchWrap, BatchUnwrap, BatchGenerateDataKey); rewrap is always BatchRewrap")
			fs.IntVar(&o.cfg.Callers, "callers", o.cfg.Callers, "concurrent callers, each with one call in flight; with -rate, the most calls in flight")
			fs.Float64Var(&o.cfg.Rate, "rate", 0, "open-loop target rate in operations per second (0: closed loop)")
			fs.DurationVar(&o.cfg.Duration, "duration", o.cfg.Duration, "how long to measure, after the warm-up")
			fs.DurationVar(&o.cfg.Warmup, "warmup", o.cfg.Warmup, "how long to run unmeasured first")
			fs.DurationVar(&o.cfg.CallTimeout, "call-timeout", o.cfg.CallTimeout, "deadline of each call: at least half of it, at most all (a caller renews one deadline at half); a call that runs out counts as DeadlineExceeded")
			fs.DurationVar(&o.cfg.ReadyTimeout, "ready-timeout", o.cfg.ReadyTimeout, "how long each node may answer Unavailable to a first wrap before the run gives up")
			fs.StringVar(&o.out, "out", "", "write the result as JSON to this file (configuration, figures, percentile distribution, timeline)")
			fs.StringVar(&o.plot, "plot", "", "write a latency plot to this file, .svg or .png (by percentile, and per second over time)")
			fs.BoolVar(&o.quiet, "quiet", false, "no live progress line on stderr")
			fs.StringVar(&o.gw.addr, "gateway", "", "load a running gateway instead of region nodes: its gRPC front end at host:port, or its Unix socket as unix:PATH (gRPC) or framed:PATH (the framed protocol) (-op datakey or unwrap; -key names the gateway's tenant/service)")
			fs.IntVar(&o.serverPID, "server-pid", 0, "against running nodes (-addr): the process id of the nodes' server (krypton server, or krypton dev for its three nodes), to report its CPU per operation beside this process's (Linux)")
			fs.IntVar(&o.gw.pid, "gateway-pid", 0, "with -gateway: the gateway's process id, to report its CPU per operation (Linux)")
			fs.BoolVar(&o.gw.spawn, "spawn-gateway", false, "with -spawn: start a gateway in this process in front of the region and load it")
			fs.BoolVar(&o.gw.process, "gateway-process", false, "with -spawn-gateway: run the gateway as a krypton gateway process of its own and report its CPU per operation")
			fs.StringVar(&o.gw.front, "gateway-front", "tls", "with -spawn-gateway: the front end loaded: tls (gRPC over TCP with mutual TLS), unix (gRPC on the Unix socket) or framed (the framed protocol on the Unix socket)")
			fs.IntVar(&o.gw.batch, "gateway-batch", 128, "with -spawn-gateway: the gateway's batch size (1: batching off)")
			fs.DurationVar(&o.gw.batchWait, "gateway-batch-wait", 500*time.Microsecond, "with -spawn-gateway: the gateway's batch wait")
			fs.IntVar(&o.gw.payload, "gateway-payload", 1024, "with -op encrypt through a gateway: bytes of data per Encrypt")
			fs.BoolVar(&o.nb.on, "neighbour", false, "with -spawn: measure a noisy neighbour: a second tenant's light wraps (-neighbour-rate) alone, then beside this run's load as tenant bench, and print its p50/p99 in each phase and their ratios")
			fs.Float64Var(&o.nb.rate, "neighbour-rate", 50, "with -neighbour: the second tenant's wraps per second (open loop)")
			fs.IntVar(&o.nb.callers, "neighbour-callers", 8, "with -neighbour: the second tenant's most calls in flight")
			fs.IntVar(&o.nb.rounds, "neighbour-rounds", 3, "with -neighbour: run the phases this many times, interleaved (alone, flooding, under the quota, alone, ...), and merge each phase's rounds")
			fs.UintVar(&o.nb.quota, "neighbour-quota", 0, "with -neighbour: add a phase with the flooding tenant under a quota of this many requests/s (on each node)")
			o.el.declare(fs)
		},
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			if o.el.hogFor > 0 {
				return o.el.hog(ctx)
			}
			if o.el.enabled {
				if err := o.checkElections(fs); err != nil {
					return err
				}
				defer memguard.Purge()
				return o.runElections(ctx, s)
			}
			if err := o.check(fs); err != nil {
				return err
			}
			return o.run(ctx, s)
		},
	}
}

// check validates the flags before anything is started or dialled.
func (o *benchOptions) check(fs *flag.FlagSet) error {
	if fs.NArg() != 0 {
		return usagef("bench takes no arguments")
	}
	if err := refuseEnv(); err != nil {
		return err
	}
	o.cfg.Op = bench.Op(o.gw.op(o.op))
	if err := o.checkLoad(); err != nil {
		return err
	}
	if err := o.gw.check(o); err != nil {
		return err
	}
	if err := o.nb.check(o); err != nil {
		return err
	}
	if o.cfg.Keys > 0 && (o.gw.enabled() || o.nb.on) {
		return usagef("-keys loads region nodes: not with -gateway, -spawn-gateway or -neighbour")
	}
	if o.gw.enabled() && isSet(fs, "batch-form") {
		return usagef("-batch-form is for the region's batch RPCs (-batch); the gateway sends its own batches packed")
	}
	if o.serverPID != 0 && (o.spawn != 0 || o.gw.enabled()) {
		return usagef("-server-pid is for running nodes loaded with -addr: with -spawn the nodes are this process (process CPU), a gateway has -gateway-pid")
	}
	if o.spawn != 0 {
		if o.spawn != devNodes {
			return usagef("-spawn %d: the development region has %d nodes; give -spawn %d", o.spawn, devNodes, devNodes)
		}
		if o.via == 0 {
			o.via = devNodes
		}
		if o.via < 1 || o.via > devNodes {
			return usagef("-via must be 1 to %d", devNodes)
		}
		// Connection flags name another region: refuse them on the command line, and ignore
		// them when they come from KRYPTON_* variables (as `krypton dev` suggests exporting).
		for _, f := range []string{"addr", "ca-cert", "client-cert", "client-key", "key"} {
			if fl := fs.Lookup(f); isSet(fs, f) && fl.Value.String() != os.Getenv(envName(f)) {
				return usagef("-%s cannot be given with -spawn: the region it starts has its own addresses, key and certificates", f)
			}
		}
		o.cfg.Tenant, o.cfg.Service = benchTenant, benchService
	} else {
		if o.via != 0 {
			return usagef("-via is for -spawn; give the nodes to load with -addr")
		}
		if o.keyringSize != 0 {
			return usagef("-keyring-size is for -spawn; a running node takes krypton server -keyring-size")
		}
		if o.serverPID < 0 {
			return usagef("-server-pid %d: give the process id of the server loaded with -addr", o.serverPID)
		}
		ref, err := parseKeyFlag(o.key)
		if err != nil {
			return err
		}
		o.cfg.Tenant, o.cfg.Service = ref.GetTenant(), ref.GetService()
		if len(o.addrs) == 0 {
			o.addrs = addrList{defaultAPIAddr}
		}
	}
	if o.plot != "" {
		if _, err := bench.PlotFormat(o.plot); err != nil {
			return usagef("-plot %s: want a .svg or .png file", o.plot)
		}
	}
	for _, f := range []struct{ flag, path string }{{"out", o.out}, {"plot", o.plot}} {
		if f.path == "" {
			continue
		}
		if fi, err := os.Stat(filepath.Dir(f.path)); err != nil || !fi.IsDir() {
			return usagef("-%s %s: directory %s does not exist", f.flag, f.path, filepath.Dir(f.path))
		}
	}
	return nil
}

// checkElections validates the flags of -elections: only the ones it reads may be given.
func (o *benchOptions) checkElections(fs *flag.FlagSet) error {
	if fs.NArg() != 0 {
		return usagef("bench takes no arguments")
	}
	var other []string
	fs.Visit(func(f *flag.Flag) {
		switch {
		case f.Name == "elections" || f.Name == "duration" || f.Name == "hogs" || f.Name == "probe-interval" || f.Name == "in-process" || f.Name == "out" || f.Name == "quiet":
		case strings.HasPrefix(f.Name, "raft-"):
		case envSet(envName(f.Name)) && f.Value.String() == os.Getenv(envName(f.Name)):
			// From a KRYPTON_* variable (as `krypton dev` suggests exporting): not asked for here.
		default:
			other = append(other, "-"+f.Name)
		}
	})
	switch {
	case len(other) > 0:
		return usagef("%s cannot be given with -elections (it takes -duration, -hogs, -in-process, -probe-interval, -out and the -raft-* timings)", strings.Join(other, ", "))
	case o.cfg.Duration <= 0:
		return usagef("-duration must be positive")
	case o.el.hogs < 0 || o.el.hogs > 64:
		return usagef("-hogs must be 0 to 64")
	case o.el.probe < 0:
		return usagef("-probe-interval must not be negative (0: no probes)")
	}
	// The timings as the nodes will get them, checked as cluster.Config.Validate does, before
	// any node starts.
	c := cluster.DefaultConfig()
	o.el.raft.apply(&c)
	switch {
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return usagef("-raft-election-timeout %s is less than the heartbeat timeout %s: give at least that", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return usagef("-raft-leader-lease-timeout %s exceeds the heartbeat timeout %s: give at most that", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if o.out != "" {
		if fi, err := os.Stat(filepath.Dir(o.out)); err != nil || !fi.IsDir() {
			return usagef("-out %s: directory %s does not exist", o.out, filepath.Dir(o.out))
		}
	}
	return nil
}

// checkLoad validates the load flags, naming them as the command line does.
func (o *benchOptions) checkLoad() error {
	o.cfg.BatchForm = bench.BatchForm(o.batchForm)
	c := o.cfg
	switch {
	case c.Op != bench.OpWrap && c.Op != bench.OpUnwrap && c.Op != bench.OpDataKey && c.Op != bench.OpRewrap && c.Op != bench.OpMixed:
		return usagef("unknown -op %q (want wrap, unwrap, datakey, rewrap or mixed)", o.op)
	case c.Batch < 0 || c.Batch > transport.MaxBatchItems:
		return usagef("-batch must be 0 (unary) or 1 to %d", transport.MaxBatchItems)
	case o.batchForm != string(bench.FormPacked) && o.batchForm != string(bench.FormItems):
		return usagef("-batch-form must be packed or items, not %q", o.batchForm)
	case c.Callers < 1 || c.Callers > bench.MaxCallers:
		return usagef("-callers must be 1 to %d", bench.MaxCallers)
	case o.conns < 1 || o.conns > maxBenchConns:
		return usagef("-conns must be 1 to %d", maxBenchConns)
	case o.keyDist != string(bench.DistZipf) && o.keyDist != string(bench.DistUniform):
		return usagef("-key-dist must be zipf or uniform, not %q", o.keyDist)
	case o.cfg.Keys < 0 || o.cfg.Keys > bench.MaxKeys:
		return usagef("-keys must be 0 (the one -key) to %d", bench.MaxKeys)
	case o.cfg.Keys > 1 && c.Op != bench.OpWrap && c.Op != bench.OpDataKey:
		return usagef("-keys takes -op wrap or datakey (unwrap and rewrap open the blobs of one key)")
	case o.keyringSize < 0:
		return usagef("-keyring-size must not be negative (0: the node's own choice)")
	case c.Rate < 0:
		return usagef("-rate must not be negative")
	case c.Duration <= 0:
		return usagef("-duration must be positive")
	case c.Warmup < 0:
		return usagef("-warmup must not be negative")
	case c.CallTimeout <= 0:
		return usagef("-call-timeout must be positive")
	case c.ReadyTimeout <= 0:
		return usagef("-ready-timeout must be positive")
	}
	o.cfg.KeyDist = bench.KeyDist(o.keyDist)
	probe := o.cfg
	probe.Tenant, probe.Service = "t", "s"
	if err := probe.Validate(); err != nil {
		return usagef("%s", strings.TrimPrefix(err.Error(), "bench: "))
	}
	return nil
}

// isSet says whether flag name was set, on the command line or by applyEnv.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func (o *benchOptions) run(ctx context.Context, s *streams) error {
	var cfg transport.ClientConfig
	var ca *pki.CA
	addrs := []string(o.addrs)
	if o.spawn > 0 {
		defer memguard.Purge()
		raiseLimits(s.err, o.conns*o.via)
		d, err := startDev(ctx, &devOptions{logLevel: "warn", keyringSize: o.keyringSize}, s.err)
		if err != nil {
			return err
		}
		defer d.close()
		if o.cfg.Keys > 0 {
			cfg, err = d.benchSetupKeys(ctx, o.cfg.Keys, s.err)
		} else {
			cfg, err = d.benchSetup(ctx)
		}
		if err != nil {
			return err
		}
		addrs, ca = nil, d.ca
		for i := range o.via {
			addrs = append(addrs, d.cfgs[i].RPCAddr)
		}
		fmt.Fprintf(s.err, "krypton: %d-node region started; load on %s\n", devNodes, strings.Join(addrs, ", "))
		if o.nb.on {
			return o.runNeighbour(ctx, s, d, cfg, addrs)
		}
	} else if !o.gw.onSocket() {
		raiseLimits(s.err, o.conns*len(addrs))
		cf := &clientFlags{kind: pki.KindService, caCert: o.caCert, clientCert: o.clientCert, clientKey: o.clientKey}
		var err error
		if cfg, err = cf.loadConfig(); err != nil {
			return err
		}
	}
	var targets []bench.Target
	if o.gw.enabled() {
		client, name, stop, probe, err := o.gw.start(ctx, cfg, ca, addrs, s.err)
		if err != nil {
			return err
		}
		o.cfg.GatewayCPU, o.cfg.GatewayBatches = probe.cpu, probe.batches
		defer stop()
		addrs, targets = nil, []bench.Target{{Name: name, Client: client}}
	}
	if o.serverPID != 0 {
		o.cfg.ServerCPU = procCPU(o.serverPID)
		if _, ok := o.cfg.ServerCPU(); !ok {
			return fmt.Errorf("bench: -server-pid %d: cannot read /proc/%d/stat: no such process, or not Linux", o.serverPID, o.serverPID)
		}
	}
	// Connections in rounds over the addresses, so that callers, given targets round robin,
	// spread over every node and every connection.
	for range o.conns {
		for _, a := range addrs {
			rcfg := cfg
			rcfg.Server = pki.Identity{Kind: pki.KindNode}
			conn, err := transport.Dial(ctx, a, rcfg)
			if err != nil {
				return err
			}
			defer conn.Close()
			targets = append(targets, bench.Target{Name: a, Client: kv1.NewWrapServiceClient(conn)})
		}
	}

	var progress func(bench.Tick)
	if !o.quiet {
		progress = progressLine(s.err)
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	res, err := bench.Run(ctx, o.cfg, targets, progress)
	if progress != nil {
		endProgress(s.err)
	}
	if err != nil {
		return err
	}
	o.gw.relabel(res)
	if err := res.WriteTable(s.out); err != nil {
		return err
	}
	if o.out != "" {
		if err := writeFileAtomic(o.out, true, func(f *os.File) error { return res.WriteJSON(f) }); err != nil {
			return fmt.Errorf("-out: %w", err)
		}
		fmt.Fprintf(s.out, "result: %s\n", o.out)
	}
	if o.plot != "" && res.Total.OK > 0 {
		format, _ := bench.PlotFormat(o.plot)
		if err := writeFileAtomic(o.plot, true, func(f *os.File) error { return res.WritePlot(f, format) }); err != nil {
			return fmt.Errorf("-plot: %w", err)
		}
		fmt.Fprintf(s.out, "plot: %s\n", o.plot)
	}
	if res.Total.OK == 0 {
		return fmt.Errorf("bench: no operation succeeded (errors: %s)", errorSummary(res.Total.Errors))
	}
	return nil
}

func errorSummary(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none; no call was sent in the measured time"
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s %d", c, errs[c]))
	}
	return strings.Join(parts, ", ")
}

// benchSetup creates the bench tenant and key in a development region and returns a client
// configuration with a service certificate for them.
func (d *devRegion) benchSetup(ctx context.Context) (transport.ClientConfig, error) {
	leader := d.leader()
	if leader < 0 {
		return transport.ClientConfig{}, fmt.Errorf("bench: the development region has no leader")
	}
	if _, err := d.nodes[leader].CreateTenant(ctx, newRequestID(), benchTenant, d.anchorURI); err != nil {
		return transport.ClientConfig{}, fmt.Errorf("bench: creating tenant %s: %w", benchTenant, err)
	}
	if _, err := d.nodes[leader].CreateKey(ctx, newRequestID(), benchTenant, benchService); err != nil {
		return transport.ClientConfig{}, fmt.Errorf("bench: creating key %s/%s: %w", benchTenant, benchService, err)
	}
	cert, err := d.ca.IssueService(benchTenant, benchService, 24*time.Hour)
	if err != nil {
		return transport.ClientConfig{}, err
	}
	return transport.ClientConfig{Roots: d.ca.Pool(), Certificate: cert.TLSCertificate()}, nil
}

// progressLine returns the live display: on a terminal one line rewritten in place, elsewhere
// (a log, a CI job) one line per second.
func progressLine(w io.Writer) func(bench.Tick) {
	tty := isTerminal(w)
	return func(t bench.Tick) {
		phase := "measuring"
		if t.Warmup {
			phase = "warm-up  "
		}
		line := fmt.Sprintf("[%4.0fs] %s %9.0f ops/s  p50 %7.3f ms  p99 %7.3f ms  errors %d",
			t.Elapsed.Seconds(), phase, t.OpsPerSec, t.P50.Seconds()*1000, t.P99.Seconds()*1000, t.Errors)
		if tty {
			fmt.Fprintf(w, "\r\033[K%s", line)
		} else {
			fmt.Fprintln(w, line)
		}
	}
}

// endProgress ends the line that progressLine rewrites.
func endProgress(w io.Writer) {
	if isTerminal(w) {
		fmt.Fprint(w, "\r\033[K")
	}
}

// envSet reports whether the variable is set, even to nothing (KRYPTON_ADDR= in a script).
func envSet(name string) bool {
	_, ok := os.LookupEnv(name)
	return ok
}
