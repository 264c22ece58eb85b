package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/kryptonkms/krypton/cluster"
)

// TestDamagedStateNamesTheFix: a Raft store whose bbolt meta pages are corrupted (a torn write of
// the header) is refused with an error that names the procedure, not only bbolt's "invalid
// database"; another error (here: no such directory) is left as it is.
func TestDamagedStateNamesTheFix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "raft.db")
	s, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	s.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := []byte(strings.Repeat("\xa5", 64))
	for _, off := range []int64{16, int64(os.Getpagesize()) + 16} {
		if _, err := f.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	_, err = raftboltdb.NewBoltStore(path)
	if err == nil {
		t.Fatal("a corrupted store opened")
	}
	got := cluster.DamagedState(path, dir, err).Error()
	for _, want := range []string{path + " is damaged", "krypton operator raft remove-peer", "krypton operator reset-node -data-dir " + dir, "krypton operator raft join"} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q does not say %q", got, want)
		}
	}
	_, err = raftboltdb.NewBoltStore(filepath.Join(dir, "missing", "raft.db"))
	if got := cluster.DamagedState(path, dir, err); got != err {
		t.Errorf("DamagedState(%v) = %v, want it unchanged", err, got)
	}
}
