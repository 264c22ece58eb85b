package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/internal/docstest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// kryptonBinary builds cmd/krypton once for the package's tests, as `make build` does (cgo,
// -trimpath: the compiled packages come from the build cache `make build` filled), and returns its path.
func kryptonBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "krypton-deploy-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "krypton")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./cmd/krypton")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = err
			binPath = string(out)
		}
	})
	if binErr != nil {
		t.Fatalf("go build ./cmd/krypton: %v\n%s", binErr, binPath)
	}
	return binPath
}

// flagChecker checks command lines against the built binary's own help (docstest.FlagChecker, the
// checker of the docs' command lines).
func flagChecker(t *testing.T) *docstest.FlagChecker {
	return &docstest.FlagChecker{Krypton: kryptonBinary(t)}
}

// requireTool finds a program the test needs; without it the test skips on a developer's machine
// and fails in CI (KRYPTON_REQUIRE_PEERS, set by .ci/run, which installs the package).
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " is not installed (Debian package " + pkg + ": apt-get install --no-install-recommends " + pkg + ")"
	if os.Getenv("KRYPTON_REQUIRE_PEERS") != "" || os.Getenv("CI") == "true" {
		t.Fatal(msg + " and KRYPTON_REQUIRE_PEERS or CI is set")
	}
	t.Skip(msg)
	return ""
}
