package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

// TestRunDaemon: the shared daemon set-up refuses arguments, stops the daemon on a signal (the end
// of ctx) or returns when it ends on its own, and runs atExit after either, last first, and after
// a failed start as well.
func TestRunDaemon(t *testing.T) {
	parse := func(args ...string) (*flag.FlagSet, *daemonFlags) {
		d := &daemonFlags{}
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		d.declare(fs, "x")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return fs, d
	}
	s := &streams{out: &bytes.Buffer{}, err: &bytes.Buffer{}}

	fs, d := parse("extra")
	if err := runDaemon(context.Background(), s, fs, "thing", d, nil, nil); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "thing takes no arguments") {
		t.Fatalf("an argument: got %v", err)
	}
	fs, d = parse("-log-level", "loud")
	if err := runDaemon(context.Background(), s, fs, "thing", d, nil, nil); err == nil || exitCode(err) != 2 {
		t.Fatalf("a bad -log-level: got %v", err)
	}

	var order []string
	start := func(ended <-chan struct{}, startErr error) func(e *daemonEnv) (daemon, error) {
		return func(e *daemonEnv) (daemon, error) {
			e.atExit(func() { order = append(order, "exit-1") })
			e.atExit(func() { order = append(order, "exit-2") })
			if startErr != nil {
				return daemon{}, startErr
			}
			return daemon{
				stop:  func() error { order = append(order, "stop"); return errors.New("stopped") },
				done:  ended,
				ended: func() error { order = append(order, "ended"); return errors.New("ended") },
			}, nil
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fs, d = parse()
	if err := runDaemon(ctx, s, fs, "thing", d, nil, start(nil, nil)); err == nil || err.Error() != "stopped" {
		t.Fatalf("a signal: got %v, want stop's error", err)
	}
	if want := []string{"stop", "exit-2", "exit-1"}; !slices.Equal(order, want) {
		t.Fatalf("a signal: ran %v, want %v", order, want)
	}

	order = nil
	ended := make(chan struct{})
	close(ended)
	fs, d = parse()
	if err := runDaemon(context.Background(), s, fs, "thing", d, nil, start(ended, nil)); err == nil || err.Error() != "ended" {
		t.Fatalf("ended on its own: got %v, want ended's error", err)
	}
	if want := []string{"ended", "exit-2", "exit-1"}; !slices.Equal(order, want) {
		t.Fatalf("ended on its own: ran %v, want %v", order, want)
	}

	order = nil
	fs, d = parse()
	if err := runDaemon(context.Background(), s, fs, "thing", d, nil, start(nil, errors.New("bad config"))); err == nil || err.Error() != "bad config" {
		t.Fatalf("a failed start: got %v", err)
	}
	if want := []string{"exit-2", "exit-1"}; !slices.Equal(order, want) {
		t.Fatalf("a failed start: ran %v, want %v", order, want)
	}
}
