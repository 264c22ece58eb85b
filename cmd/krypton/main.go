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
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() { os.Exit(runMain()) }

// runMain runs the command line of this process. SIGINT and SIGTERM cancel the command's context:
// signals are handled here rather than with memguard.CatchSignal, which calls os.Exit without
// running deferred shutdowns (PEERS.md), so commands stop cleanly and wipe their secrets.
func runMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

// run executes one command line and returns the process exit code: 0 success, 1 failure, 2 usage.
func run(ctx context.Context, args []string, stdout, stderr *os.File) int {
	err := dispatch(ctx, rootCommand(), args, &streams{out: stdout, err: stderr})
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, errorLine(err))
	return exitCode(err)
}

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
