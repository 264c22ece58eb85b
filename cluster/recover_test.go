package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
)

// TestRecoverRefusesBadInput: no data directory, or one without Raft state, is refused naming the
// fix, and nothing is created. (The recovery itself runs end to end in cmd/krypton.TestDRScripts.)
func TestRecoverRefusesBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope")
	err := cluster.Recover(missing, "n1", "127.0.0.1:1", fsm.New(fsm.Options{}))
	if err == nil || !strings.Contains(err.Error(), "-data-dir") {
		t.Fatalf("a missing data directory: %v", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("Recover created %s", missing)
	}
	if err := cluster.Recover(dir, "", "127.0.0.1:1", fsm.New(fsm.Options{})); err == nil {
		t.Fatal("no node id was accepted")
	}
}
