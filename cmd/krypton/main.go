// Command krypton runs every Krypton role as a subcommand, in the manner of consul and vault:
//
//	krypton server ...       run a region node
//	krypton dev              a local development deployment
//	krypton certs ...        a development CA and certificates
//	krypton version          the version and commit
//
// Run `krypton help` for the whole list.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
)

func main() { os.Exit(runMain()) }

// runMain runs the command line of this process. SIGINT, SIGTERM and SIGHUP cancel the command's
// context: signals are handled here rather than with memguard.CatchSignal, which calls os.Exit
// without running deferred shutdowns (memguard v0.23), so commands stop cleanly and wipe their secrets,
// and `krypton dev` removes its directory (root.key, the CA's private key).
//
// SIGPIPE is caught too. Under `make dev 2>&1 | tee log`, Ctrl-C ends tee as well, and the first
// write to the closed pipe would otherwise kill the process on the spot (Go's default for stdout
// and stderr), before any cleanup. Caught, the write fails with EPIPE instead, and run treats that
// as a reason to shut down cleanly (pipeWatch).
//
// SIGHUP stops a command too, except while a daemon (`krypton server`, `krypton governance
// server`, `krypton gateway`) runs: it has registered a handler with onHangup, and SIGHUP then
// reloads its certificate files instead, as it does for consul, vault and nginx. `krypton dev`
// registers none, so SIGHUP (a closed terminal) still stops it and removes its directory.
// SIGHUP is left alone when the process started with it ignored: `nohup krypton server` must not
// stop when its terminal closes (a daemon's files are still reloaded when they change).
func runMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !signal.Ignored(syscall.SIGHUP) {
		var hangup context.CancelFunc
		ctx, hangup = context.WithCancel(ctx)
		defer hangup()
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for range hup {
				if h := hangupHandler.Load(); h != nil {
					(*h)()
				} else {
					hangup()
				}
			}
		}()
	}
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE) // never read: catching it is what keeps the process alive
	defer signal.Stop(pipe)
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// hangupHandler is what SIGHUP runs instead of stopping the command (onHangup).
var hangupHandler atomic.Pointer[func()]

// onHangup makes SIGHUP run f instead of stopping the command, until the returned func is called.
func onHangup(f func()) (restore func()) {
	hangupHandler.Store(&f)
	return func() { hangupHandler.CompareAndSwap(&f, nil) }
}

// run executes one command line and returns the process exit code: 0 success, 1 failure, 2 usage.
// A write to stdout or stderr that fails with EPIPE (the reader is gone) cancels the command's
// context: nobody reads what it prints, and it stops as it would on SIGINT.
func run(ctx context.Context, args []string, stdout, stderr *os.File) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &streams{out: &pipeWatch{f: stdout, broken: cancel}, err: &pipeWatch{f: stderr, broken: cancel}}
	err := dispatch(ctx, rootCommand(), args, s)
	if err == nil {
		return 0
	}
	fmt.Fprintln(s.err, errorLine(err))
	return exitCode(err)
}

// pipeWatch writes to f and calls broken when a write finds the reading end closed (EPIPE).
type pipeWatch struct {
	f      *os.File
	broken func()
}

func (p *pipeWatch) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	if err != nil && errors.Is(err, syscall.EPIPE) {
		p.broken()
	}
	return n, err
}

// Stat lets isTerminal see the file.
func (p *pipeWatch) Stat() (os.FileInfo, error) { return p.f.Stat() }

// errorLine is the one line main prints for a failed command: exactly one "krypton: " prefix.
// Every error leaves the process through here, so the prefix is added here only: messages name a
// command without the program ("server: -data-dir is required", cmdName), and a "krypton: " that a
// wrapped error brought along is dropped rather than printed as "krypton: krypton: ...".
func errorLine(err error) string {
	msg := err.Error()
	for {
		trimmed := strings.TrimLeft(msg, " ")
		switch {
		case strings.HasPrefix(trimmed, "krypton: "):
			msg = strings.TrimPrefix(trimmed, "krypton: ")
		case strings.HasPrefix(trimmed, "krypton:"):
			msg = strings.TrimPrefix(trimmed, "krypton:")
		default:
			return "krypton: " + trimmed
		}
	}
}
