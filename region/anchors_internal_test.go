package region

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
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

	// A node started with -dev-anchor opens (and creates) the same anchor.
	dev := newAnchorCache(slog.New(slog.DiscardHandler), true, nil)
	defer dev.close()
	if _, err := dev.get(context.Background(), "file://"+created+"?create=1"); err != nil {
		t.Fatalf("with -dev-anchor: %v", err)
	}
	if _, err := os.Stat(created); err != nil {
		t.Fatalf("with -dev-anchor, ?create=1 made no key file: %v", err)
	}
}
