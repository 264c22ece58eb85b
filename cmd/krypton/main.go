// Command krypton runs every Krypton role as a subcommand, in the manner of consul and vault.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Signals are handled here rather than with memguard.CatchSignal, which would os.Exit without
	// running deferred shutdowns (see PEERS.md); commands wipe their secrets on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "krypton:", err)
		os.Exit(exitCode(err))
	}
}
