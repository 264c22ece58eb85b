// Package logtest hands code under test an io.Writer that writes to testing.TB's Log, for the
// slog loggers that Raft, memberlist and Krypton's own servers are given in tests.
//
// It is written by hand because the late line needs care that t.Log does not take: a library
// goroutine that ends a little after its Shutdown returns (memberlist's probes, gRPC's transports;
// see internal/leaktest) may log after its test and every parent have completed, while TestMain
// waits for it. t.Log then panics ("Log in goroutine after TestX has completed") and the package
// fails with no test named. Such a line is dropped instead: the test it belonged to has reported.
package logtest

import (
	"strings"
	"sync"
	"testing"
)

// Writer writes each Write to t.Log, trimmed of its trailing newline.
type Writer struct {
	t    testing.TB
	mu   sync.Mutex
	late bool // a Write came after the test and its parents completed; drop the rest
}

// New returns a Writer for t.
func New(t testing.TB) *Writer { return &Writer{t: t} }

// Write logs p to the test, or drops it if the test and its parents have completed.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.late {
		w.log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *Writer) log(s string) {
	defer func() {
		if r := recover(); r != nil {
			if msg, ok := r.(string); ok && strings.HasPrefix(msg, "Log in goroutine after ") {
				w.late = true
				return
			}
			panic(r)
		}
	}()
	w.t.Log(s)
}
