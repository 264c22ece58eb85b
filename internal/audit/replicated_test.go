package audit_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/internal/audit"
)

// TestLastIndex: the highest log index of a file's replicated records, found from the end past
// records that carry none and across read chunks; 0 for no file, an empty one, or one without
// replicated records.
func TestLastIndex(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	if i, err := audit.LastIndex(path); i != 0 || err != nil {
		t.Fatalf("no file: %d, %v", i, err)
	}
	l, err := audit.Open(path, audit.Options{Node: "n1", SyncInterval: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	if i, err := audit.LastIndex(path); i != 0 || err != nil {
		t.Fatalf("empty file: %d, %v", i, err)
	}
	refused := audit.Event{Kind: audit.KindCallRefused, Actor: "x", Detail: map[string]string{"method": strings.Repeat("m", 900)}}
	if err := l.Record(refused); err != nil {
		t.Fatal(err)
	}
	if i, err := audit.LastIndex(path); i != 0 || err != nil {
		t.Fatalf("no replicated record: %d, %v", i, err)
	}
	for i := 1; i <= 40; i++ {
		if err := l.Record(audit.Event{Kind: audit.KindKeyRotate, Detail: map[string]string{audit.IndexKey: strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// More than one 64 KiB chunk of records without an index after the last replicated one.
	for range 200 {
		if err := l.Record(refused); err != nil {
			t.Fatal(err)
		}
	}
	// Sync makes the lines durable without waiting for the (here very long) interval.
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if i, err := audit.LastIndex(path); i != 40 || err != nil {
		t.Fatalf("LastIndex = %d, %v; want 40", i, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	events, err := audit.ReadReplicated(bytes.NewReader(b))
	if err != nil || len(events) != 40 {
		t.Fatalf("ReadReplicated: %d events, %v", len(events), err)
	}
	if got := audit.FormatReplicated(events[0]); got != "1 key.rotate" {
		t.Errorf("FormatReplicated = %q", got)
	}
}
