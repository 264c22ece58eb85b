package region

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
)

// TestBarrierJoinsOnlyOneStartedLater: a caller that arrives while a barrier is in flight does not
// take that barrier's result (its read index may predate the write the caller depends on); it
// waits for the next one, which it shares with the others that arrived meanwhile (jepsen finding:
// wrap right after CreateKey got NotFound).
func TestBarrierJoinsOnlyOneStartedLater(t *testing.T) {
	var b barriers
	started := make(chan int, 8)
	release := make(chan error)
	runs := 0
	barrier := func() error {
		runs++ // runs are serial
		started <- runs
		return <-release
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- b.do(ctx, barrier) }()
	if got := recv(t, started, "run 1 to start"); got != 1 {
		t.Fatalf("run %d started, want 1", got)
	}
	// Two callers arrive while run 1 is in flight.
	later := make(chan error, 2)
	for range 2 {
		go func() { later <- b.do(ctx, barrier) }()
	}
	// Both must have queued before run 1 ends: one that had not would start run 2 itself, or
	// queue behind it for run 3, and this test would wait for an answer that never comes. (It
	// waited for the first of the two only, and failed about one run in fifty on a busy machine.)
	clustertest.Eventually(t, 10*time.Second, "both callers queued behind run 1", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.next != nil && b.next.waiters == 2
	})
	send(t, release, nil, "run 1 to take its outcome")
	if err := recv(t, first, "the first caller's answer"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, started, "run 2 to start"); got != 2 {
		t.Fatalf("run %d started, want 2", got)
	}
	select {
	case err := <-later:
		t.Fatalf("a caller that arrived during run 1 returned (%v) before run 2 ended", err)
	default:
	}
	// Run 2's outcome, an error here, is what both later callers get.
	errCut := errors.New("cut off")
	send(t, release, errCut, "run 2 to take its outcome")
	for range 2 {
		if err := recv(t, later, "a later caller's answer"); !errors.Is(err, errCut) {
			t.Fatalf("later caller got %v, want run 2's error", err)
		}
	}
	// Nothing left queued: the runner has stopped, and a new caller starts run 3 at once.
	clustertest.Eventually(t, 10*time.Second, "runner stopped", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return !b.running
	})
	go func() { release <- nil }()
	if err := b.do(ctx, barrier); err != nil || runs != 3 {
		t.Fatalf("third call: %v after %d runs, want nil after 3", err, runs)
	}
}

// recv takes one value from ch, failing the test if none comes within 10 s (a generous bound: each
// wait here is for a goroutine that is ready to run).
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out after 10s waiting for %s", what)
		panic("unreachable")
	}
}

// send hands v to ch, failing the test if no one takes it within 10 s.
func send[T any](t *testing.T, ch chan<- T, v T, what string) {
	t.Helper()
	select {
	case ch <- v:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out after 10s waiting for %s", what)
	}
}
