package cluster_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines of cluster, Raft or memberlist
// outlive the tests: every goroutine must have an owner that stops it.
// memberlist's probe goroutines end up to a probe timeout after Shutdown,
// hence the grace period.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitForGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitForGoroutines(grace time.Duration) string {
	deadline := time.Now().Add(grace)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "kryptonkms/krypton/cluster") ||
				strings.Contains(g, "hashicorp/raft") ||
				strings.Contains(g, "hashicorp/memberlist") {
				if strings.Contains(g, "waitForGoroutines") {
					continue
				}
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
