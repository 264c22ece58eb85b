package region

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
)

// TestDevAnchorRefusedBeforeOpen: a node without -dev-anchor answers every file:// anchor with
// ErrDevAnchor, which names the flag, whatever state the key file is in — missing (opening would
// say "destroyed"), too open (opening would say "unusable"), or to be created (?create=1: opening
// would create a root key file on a production node) — and touches nothing on disk.
func TestDevAnchorRefusedBeforeOpen(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open", "root.key")
	if err := os.MkdirAll(filepath.Dir(open), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(open, []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	created := filepath.Join(dir, "new", "root.key")
	c := newAnchorCache(slog.New(slog.DiscardHandler), false, nil)
	defer c.close()
	for _, uri := range []string{
		"file://" + filepath.Join(dir, "missing.key"),
		"file://" + open,
		"file://" + created + "?create=1",
		"FILE://" + created + "?create=1",
	} {
		_, err := c.get(context.Background(), uri)
		if !errors.Is(err, ErrDevAnchor) {
			t.Errorf("get(%s) = %v, want ErrDevAnchor", uri, err)
		}
		if err := c.check(context.Background(), uri); !errors.Is(err, ErrDevAnchor) {
			t.Errorf("check(%s) = %v, want ErrDevAnchor", uri, err)
		}
	}
	if _, err := os.Lstat(filepath.Dir(created)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused file://...?create=1 left %s behind (%v)", filepath.Dir(created), err)
	}

	// A node started with -dev-anchor opens the anchor, but never creates its key file, whatever
	// the URI says: only krypton dev does (krypton dev -new-anchor, anchor.Options.Create).
	dev := newAnchorCache(slog.New(slog.DiscardHandler), true, nil)
	defer dev.close()
	if _, err := dev.get(context.Background(), "file://"+created+"?create=1"); err == nil || errors.Is(err, ErrDevAnchor) {
		t.Fatalf("with -dev-anchor, a missing key file: %v, want the file's own error", err)
	}
	if _, err := os.Lstat(filepath.Dir(created)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("with -dev-anchor, ?create=1 made %s (%v)", filepath.Dir(created), err)
	}
	p, err := anchor.Open(context.Background(), "file://"+created, anchor.Options{Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := dev.get(context.Background(), "file://"+created); err != nil {
		t.Fatalf("with -dev-anchor, a key file krypton dev made: %v", err)
	}
}
