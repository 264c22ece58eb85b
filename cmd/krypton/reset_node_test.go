package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestResetNode: operator reset-node refuses a directory that is not a node's and one whose files a
// running node holds (bbolt's flock), and otherwise moves the state aside, keeping it.
func TestResetNode(t *testing.T) {
	base := t.TempDir()
	if _, err := resetNode(base, time.Now()); err == nil || !strings.Contains(err.Error(), "not a node's data directory") {
		t.Fatalf("reset of an empty directory = %v, want refused as not a node's", err)
	}
	dir := filepath.Join(base, "data")
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(dir, "raft", "raft.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resetNode(dir, time.Now()); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("reset while the store is open = %v, want refused", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("a refused reset moved the directory: %v", err)
	}
	db.Close()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	moved, err := resetNode(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if moved != dir+".damaged-20260102T030405Z" {
		t.Errorf("moved to %s", moved)
	}
	if _, err := os.Stat(filepath.Join(moved, "raft", "raft.db")); err != nil {
		t.Errorf("the state was not kept: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the data directory is still there: %v", err)
	}
}
