package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/netutil"
)

// TestDRScripts runs the disaster-recovery drills of docs/operations.md ("Disaster recovery") as
// an operator would, with real krypton processes (the test binary, on PATH as krypton): two of
// three nodes lost for good and the survivor recovered, then joined by new nodes; and a whole
// region rebuilt from a snapshot file on fresh data directories. Each drill checks that the key
// still unwraps, that its revoked version stays refused on every node, and that writes are
// acknowledged.
func TestDRScripts(t *testing.T) {
	if testing.Short() {
		t.Skip("the drills start real regions")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("the drills are bash scripts")
	}
	kryptonPath(t)
	for _, script := range []string{"dr-lose-quorum.sh", "dr-restore-region.sh"} {
		t.Run(strings.TrimSuffix(script, ".sh"), func(t *testing.T) {
			t.Parallel()
			var ports []string
			seen := map[int]bool{}
			for len(ports) < 15 {
				p, err := netutil.FreePort(true)
				if err != nil {
					t.Fatal(err)
				}
				if !seen[p] {
					seen[p] = true
					ports = append(ports, strconv.Itoa(p))
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			work := filepath.Join(t.TempDir(), "drill")
			cmd := exec.CommandContext(ctx, "bash", filepath.Join("..", "..", "scripts", script), work)
			cmd.Env = append(os.Environ(), "DR_PORTS="+strings.Join(ports, " "))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", script, err, out)
			}
			t.Logf("%s\n%s", script, out)
		})
	}
}
