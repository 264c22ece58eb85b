package clustertest

import (
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/anchor/file"
)

// recorder is a testing.TB that keeps what is logged to it.
type recorder struct {
	testing.TB
	lines []string
}

func (r *recorder) Log(args ...any) {
	for _, a := range args {
		r.lines = append(r.lines, a.(string))
	}
}

// TestLoggerDropsDevAnchorWarning: the file:// anchor's warning stays out of a test's log at the
// default level, every other warning stays in, and KRYPTON_TEST_LOG=info brings it back.
func TestLoggerDropsDevAnchorWarning(t *testing.T) {
	t.Setenv("KRYPTON_TEST_LOG", "")
	r := &recorder{TB: t}
	log := NewLogger(r).With("node", "node-1")
	log.Warn(file.DevWarning, "op", "seal")
	log.Warn("memberlist: Refuting a suspect message")
	if len(r.lines) != 1 || !strings.Contains(r.lines[0], "Refuting") {
		t.Fatalf("logged %q, want only the other warning", r.lines)
	}

	t.Setenv("KRYPTON_TEST_LOG", "info")
	r = &recorder{TB: t}
	NewLogger(r).Warn(file.DevWarning, "op", "seal")
	if len(r.lines) != 1 || !strings.Contains(r.lines[0], "development only") {
		t.Fatalf("at info level logged %q, want the warning", r.lines)
	}
}
