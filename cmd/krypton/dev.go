// The `krypton dev` command, its development region's type, and stopping the region.

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/awnumar/memguard"
	"google.golang.org/grpc"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
)

// devOptions are the flags of `krypton dev`.
type devOptions struct {
	dir      string
	keep     bool
	portBase int
	demo     bool
	logLevel string
	anchor   string
	// newAnchor, if set, is where to write a new development root key, and all there is to do.
	newAnchor string
	// tune, if set, adjusts each node's cluster configuration (bench -elections: Raft timings).
	tune func(*cluster.Config)
	// defaultSettings keeps the production settings (fsm.DefaultSettings: a 5 s lease, the L1
	// check's default period) instead of the short ones that make the demo quick to watch.
	defaultSettings bool
	// keyringSize is each node's Config.KeyringSize (bench -keyring-size; 0: the node's own choice).
	keyringSize int
}

func devCommand() *command {
	o := &devOptions{}
	return &command{
		name:     "dev",
		synopsis: "run a local three-node development region (not for production)",
		help: "Starts a three-node region in this process on 127.0.0.1, with a throwaway CA and the file:// development\n" +
			"anchor, and stays up until Ctrl-C, like `vault server -dev`: SIGINT, SIGTERM or SIGHUP stop it and remove\n" +
			"the temporary directory (unless -keep), also when stdout is a pipe whose reader is gone. With -demo it walks\n" +
			"through bootstrap, wrap and unwrap on different nodes, rotation, losing the leader, revocation and the L1 kill\n" +
			"switch, then exits.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.dir, "dir", "", "directory for data, certificates and the development root key (default: a new temporary directory)")
			fs.BoolVar(&o.keep, "keep", false, "keep -dir when the region stops (a temporary one is removed otherwise)")
			fs.IntVar(&o.portBase, "port-base", 7400, "API ports are base, base+1, base+2; Raft +10, gossip +20, metrics +30; 0 picks free ports")
			fs.BoolVar(&o.demo, "demo", false, "run the walkthrough and exit")
			fs.StringVar(&o.anchor, "anchor", "", "the L1 anchor URI for the demo tenants (awskms://, gcpkms://, azurekv://, pkcs11:); default: a file:// development root key in -dir")
			fs.BoolVar(&o.defaultSettings, "production-settings", false, "keep the production region settings (a 5 s serving lease, the L1 check every 30 s) instead of the short development ones (2 s, 1 s) that make revocation and the kill switch quick to watch: for measuring under load")
			fs.StringVar(&o.logLevel, "log-level", "info", "level of the node logs written to krypton.log in -dir: debug, info, warn or error")
			fs.StringVar(&o.newAnchor, "new-anchor", "", "only write a new development root key to this file (mode 0600), print its file:// URI and exit: for hand-started nodes with -dev-anchor, which never create one")
		},
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != 0 {
				return usagef("dev takes no arguments")
			}
			defer memguard.Purge()
			if o.newAnchor != "" {
				return newDevAnchor(ctx, s, o.newAnchor)
			}
			d, err := startDev(ctx, o, s.err)
			if errors.Is(err, syscall.EADDRINUSE) && o.portBase != 0 {
				return fmt.Errorf("%w\nanother krypton dev (or another program) holds a port from %d on: stop it, or run `krypton dev -port-base 0` for free ports", err, o.portBase)
			}
			if err != nil {
				return err
			}
			defer d.close()
			if o.demo {
				return d.runDemo(ctx, s.out)
			}
			d.printWelcome(s.out)
			<-ctx.Done()
			fmt.Fprintln(s.out, "\n==> stopping the development region; wiping every key from memory")
			return nil
		},
	}
}

// newDevAnchor writes a new development root key to path for the file:// anchor, and prints its URI.
// A node never creates one (a tenant's "?create=1" is ignored), so this is how a hand-started region
// on -dev-anchor, or the chaos suite, which knows the binary only, gets its key files.
func newDevAnchor(ctx context.Context, s *streams, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(abs); err == nil {
		return usagef("dev -new-anchor: %s exists; choose another file (a root key is never overwritten)", abs)
	}
	uri := "file://" + abs
	p, err := anchor.Open(ctx, uri, anchor.Options{Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	p.Close()
	fmt.Fprintln(s.out, uri)
	return nil
}

// devRegion is a development region running in this process.
type devRegion struct {
	opts       *devOptions
	dir        string
	temp       bool
	ca         *pki.CA
	anchorPath string
	anchorURI  string
	cfgs       []region.Config
	nodes      []*region.Node
	gov        *governance.Node // the single-node governance plane that feeds the region
	gw         *gateway.Gateway // a gateway for the service demo/app
	gwDone     chan error       // Serve's result
	svcCert    *pki.Certificate // demo/app
	conns      []*grpc.ClientConn
	operator   [2]string // certificate and key files
	logPath    string
	logFile    *os.File
	service    [2]string // of the demo/app service
	gcStop     func()    // ends the garbage collector's floor (gcfloor), as krypton server keeps one
}

const (
	devNodes      = 3
	devRegionName = "dev"
)

func (d *devRegion) kill(i int) {
	if d.nodes[i] != nil {
		d.nodes[i].Shutdown()
		d.nodes[i] = nil
	}
}

func (d *devRegion) close() {
	if d.gw != nil {
		d.gw.Close()
		<-d.gwDone
	}
	for _, c := range d.conns {
		c.Close()
	}
	for i := range d.nodes {
		d.kill(i)
	}
	if d.gov != nil {
		d.gov.Close()
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	if d.temp && !d.opts.keep {
		os.RemoveAll(d.dir)
	}
	if d.gcStop != nil {
		d.gcStop()
	}
}
