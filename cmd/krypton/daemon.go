package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/awnumar/memguard"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/tracing"
)

// The daemon set-up, shared by the three long-running commands: `krypton server` (a region node),
// `krypton governance server` (a governance node) and `krypton gateway`. Each reads its flags the
// same way (command line over KRYPTON_<NAME> over the -config file), logs the same way, wipes
// locked memory on the way out, and runs until a signal (main turns SIGINT and SIGTERM into the
// end of the command's context; SIGHUP reloads the certificate files, watchCerts) or until it
// stops on its own. What each one serves, and
// its listeners, TLS, admin HTTP port and profiler, are the libraries' (region, governance,
// gateway): a command only turns flags into their Config.

// daemonFlags are the flags every daemon has: -config, -log-level and -log-format.
type daemonFlags struct {
	config, logLevel, logFormat string
	certExpiryWarning           time.Duration
	trace                       traceFlags
}

// traceFlags turn on OpenTelemetry traces (internal/tracing; docs/operations.md, "Traces").
type traceFlags struct {
	endpoint     string
	insecure     bool
	ratio        float64
	remoteParent float64
}

// declare declares them; example is a flag name the -config help shows as a key.
func (d *daemonFlags) declare(fs *flag.FlagSet, example string) {
	fs.StringVar(&d.config, "config", "", "JSON config file whose keys are these flags' names (e.g. \""+example+"\")")
	fs.StringVar(&d.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&d.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&d.certExpiryWarning, "cert-expiry-warning", pki.DefaultExpiryWarning, "log a warning, at start, on every reload and hourly, while a certificate expires within this long")
	fs.StringVar(&d.trace.endpoint, "trace-otlp-endpoint", "", "host:port of an OTLP/gRPC receiver to send traces to; empty (the default) turns tracing off, unless OTEL_EXPORTER_OTLP_ENDPOINT is set")
	fs.BoolVar(&d.trace.insecure, "trace-otlp-insecure", false, "send traces without TLS (a collector on loopback); otherwise TLS with the system's roots or OTEL_EXPORTER_OTLP_CERTIFICATE")
	fs.Float64Var(&d.trace.ratio, "trace-sample-ratio", tracing.DefaultSampleRatio, "share of the calls that start a trace here that are recorded, 0 to 1")
	fs.Float64Var(&d.trace.remoteParent, "trace-remote-parent-rate", tracing.DefaultRemoteParentRate, "most calls a second recorded because their caller's trace context said sampled; the rest are not")
}

// tracing starts tracing as the daemon's flags say, for the daemon service (krypton-region...)
// of node nodeID, and stops it (sending what is buffered) when the command returns. Off, it
// returns nil, which every Config takes as off.
func (e *daemonEnv) tracing(d *daemonFlags, service, nodeID string) (trace.TracerProvider, error) {
	t, err := tracing.Start(context.Background(), tracing.Config{
		Endpoint: d.trace.endpoint, Insecure: d.trace.insecure,
		SampleRatio: d.trace.ratio, RemoteParentRate: d.trace.remoteParent,
		ServiceName: service, NodeID: nodeID,
	})
	if err != nil {
		return nil, usagef("%v", err)
	}
	if t == nil {
		return nil, nil
	}
	log := e.log
	// The exporter's errors (a receiver away) go to the log, not to stderr.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: exporting spans failed", "err", err) }))
	e.atExit(func() {
		ctx, cancel := context.WithTimeout(context.Background(), tracing.ShutdownTimeout)
		defer cancel()
		if err := t.Shutdown(ctx); err != nil {
			log.Warn("tracing: sending the last spans failed", "err", err)
		}
	})
	log.Info("tracing on", "service", service, "sample-ratio", d.trace.ratio, "remote-parent-rate", d.trace.remoteParent)
	return t.Provider(), nil
}

// daemon is a started daemon, as runDaemon's start returns it. stop ends it on a signal and
// returns the error of stopping. done, if not nil, is closed when it ends on its own; ended then
// returns the error to exit with.
type daemon struct {
	stop  func() error
	done  <-chan struct{}
	ended func() error
}

// daemonEnv is what start gets: the logger, the command's streams, and atExit, which runs f when
// the command returns (after the daemon stopped, and also if start fails), last registered first.
type daemonEnv struct {
	log      *slog.Logger
	s        *streams
	deferred []func()

	bg     context.Context // ends when the daemon is about to stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	certWarning time.Duration
	reloaders   []*pki.Reloader // watched once the daemon has started
}

// certs loads a daemon's certificate files into a Reloader (an error names the file to fix),
// which runDaemon keeps fresh once the daemon has started: on a change of the files, and on
// SIGHUP.
func (e *daemonEnv) certs(caFile string, pairs ...pki.ReloadPair) (*pki.Reloader, error) {
	r, err := pki.NewReloader(pki.ReloaderConfig{CAFile: caFile, Pairs: pairs, ExpiryWarning: e.certWarning, Logger: e.log})
	if err != nil {
		return nil, err
	}
	e.reloaders = append(e.reloaders, r)
	return r, nil
}

// watchCerts starts watching the reloaders' files and makes SIGHUP reload them.
func (e *daemonEnv) watchCerts() {
	if len(e.reloaders) == 0 {
		return
	}
	reload := func() {
		e.log.Info("SIGHUP: reloading the certificate files")
		for _, r := range e.reloaders {
			_ = r.Reload() // a refusal is logged and counted there
		}
	}
	e.atExit(onHangup(reload))
	for _, r := range e.reloaders {
		e.background(func(ctx context.Context) {
			if err := r.Watch(ctx, 0); err != nil {
				e.log.Warn("certificate files are not watched (SIGHUP still reloads them)", "err", err)
			}
		})
	}
}

func (e *daemonEnv) atExit(f func()) { e.deferred = append(e.deferred, f) }

// background runs f in a goroutine beside the daemon (e.g. scheduled snapshots); f's context ends
// when the daemon is about to stop, and the daemon stops only once f has returned.
func (e *daemonEnv) background(f func(ctx context.Context)) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f(e.bg)
	}()
}

// stopBackground ends what background started and waits for it.
func (e *daemonEnv) stopBackground() {
	e.cancel()
	e.wg.Wait()
}

// runDaemon runs a daemon command: cmd names it in errors ("server", "governance server",
// "gateway"); gossip, if not nil, is its gossip key, refused on the command line. It reads the
// flags that are left (the environment was applied by dispatch; -config fills the rest), makes the
// logger, calls start, and waits for a signal or the daemon's own end.
func runDaemon(ctx context.Context, s *streams, fs *flag.FlagSet, cmd string, d *daemonFlags, gossip *gossipKeyFlags,
	start func(e *daemonEnv) (daemon, error)) error {
	if fs.NArg() != 0 {
		return usagef("%s takes no arguments", cmd)
	}
	fromEnv := map[string]bool{}
	fs.VisitAll(func(fl *flag.Flag) {
		if _, ok := os.LookupEnv(envName(fl.Name)); ok {
			fromEnv[fl.Name] = true
		}
	})
	if gossip != nil {
		if err := gossip.refuseArgv(cmd); err != nil {
			return err
		}
	}
	if err := applyConfigFile(fs, d.config, fromEnv); err != nil {
		return err
	}
	log, err := newLogger(d.logLevel, d.logFormat)
	if err != nil {
		return err
	}
	// Whatever happens below, no key outlives the process in locked memory.
	defer memguard.Purge()
	e := &daemonEnv{log: log, s: s, certWarning: d.certExpiryWarning}
	e.bg, e.cancel = context.WithCancel(context.Background())
	defer e.stopBackground()
	defer func() {
		for i := len(e.deferred) - 1; i >= 0; i-- {
			e.deferred[i]()
		}
	}()
	dm, err := start(e)
	if err != nil {
		return err
	}
	e.watchCerts()
	select {
	case <-ctx.Done():
		log.Info("signal received; shutting down")
		e.stopBackground()
		return dm.stop()
	case <-dm.done:
		e.stopBackground()
		return dm.ended()
	}
}

// dataDirFlag checks a node's -data-dir and makes it absolute.
func dataDirFlag(cmd, dir string) (string, error) {
	if dir == "" {
		return "", usagef("%s: -data-dir is required", cmd)
	}
	return filepath.Abs(dir)
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
// its cluster: the gossip key, and the CA pool and a node certificate of kind (a region node's, or
// a governance node's) naming nodeID, in a Reloader that keeps them fresh. cmd prefixes the usage
// errors.
func nodeSecrets(e *daemonEnv, cmd string, kind pki.Kind, gossip *gossipKeyFlags, caCert, certFile, keyFile, nodeID string) ([]byte, *pki.Source, error) {
	key, err := gossip.load(cmd)
	if err != nil {
		return nil, nil, err
	}
	if caCert == "" || certFile == "" || keyFile == "" {
		return nil, nil, usagef("%s: -ca-cert, -cert and -key are required: Krypton never runs without mutual TLS (`krypton certs` makes development ones)", cmd)
	}
	r, err := e.certs(caCert, pki.ReloadPair{Name: "node", CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		return nil, nil, err
	}
	src := r.Source(0)
	id, err := pki.LeafIdentity(src.Current().Certificate)
	if err != nil {
		return nil, nil, err
	}
	if id.Kind != kind || id.NodeID != nodeID {
		fix := "krypton certs node -region R " + nodeID
		if kind == pki.KindGovernance {
			fix = "krypton certs governance " + nodeID
		}
		return nil, nil, usagef("%s: the certificate names %s, not the %s %q (%s)", cmd, id, kind, nodeID, fix)
	}
	return key, src, nil
}
