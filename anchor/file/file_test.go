package file_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	"github.com/kryptonkms/krypton/anchor/file"
)

// keyPath returns the key file behind a file provider.
func keyPath(p anchor.Provider) string { return p.Describe().Key }

func openNew(t *testing.T) anchor.Provider {
	t.Helper()
	path := filepath.Join(t.TempDir(), "anchor", "root.key")
	p, err := anchor.Open(context.Background(), "file://"+path, anchor.Options{Create: true, Logger: anchortest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	anchortest.Run(t, anchortest.Harness{
		Open: openNew,
		Reopen: func(t *testing.T, p anchor.Provider) anchor.Provider {
			q, err := anchor.Open(context.Background(), "file://"+keyPath(p), anchor.Options{Development: true, Logger: anchortest.Logger(t)})
			must(t, err)
			return q
		},
		Disable: func(t *testing.T, p anchor.Provider) { must(t, file.Disable(keyPath(p))) },
		Enable:  func(t *testing.T, p anchor.Provider) { must(t, file.Enable(keyPath(p))) },
		Destroy: func(t *testing.T, p anchor.Provider) { must(t, file.Destroy(keyPath(p))) },
		FailTransiently: func(t *testing.T, p anchor.Provider) func() {
			must(t, file.SetUnavailable(keyPath(p), true))
			return func() { must(t, file.SetUnavailable(keyPath(p), false)) }
		},
		ExactReasons: true,
		Development:  true,
	})
}

// A stalled key answers nothing: a call waits until its context ends (transient) or until the
// marker is removed (then it answers as usual).
func TestStalled(t *testing.T) {
	p := openNew(t)
	defer p.Close()
	if err := file.SetStalled(keyPath(p), true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Check(ctx) }()
	cancel()
	if err := <-done; !anchor.IsTransient(err) {
		t.Fatalf("Check of a stalled key after its context ended: %v, want a transient error", err)
	}

	done = make(chan error, 1)
	go func() { done <- p.Check(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Check of a stalled key answered %v before the marker was removed", err)
	default:
	}
	if err := file.SetStalled(keyPath(p), false); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Check after the stall ended: %v", err)
	}
}
