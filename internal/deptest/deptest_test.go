// Package deptest checks the rules docs/architecture.md writes down: the import boundaries, in the
// manner of tailscale's deptest (a package that imports what it must not fails this test), and
// that no file of the repository refers to a file outside it.
package deptest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/kryptonkms/krypton"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// listPackages runs `go list -deps=false -json ./...` from the module root.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// rule forbids a package (and its subpackages, unless exact) from depending on anything with a
// listed prefix, directly (Imports) or through others (Deps).
type rule struct {
	pkg        string
	exact      bool
	transitive bool
	forbidden  []string
	// stdlibOnly forbids everything outside the standard library (an import path whose first
	// element has no dot is the standard library's).
	stdlibOnly bool
	why        string
}

var rules = []rule{
	{pkg: module + "/wrap", exact: true, transitive: true, why: "wrap is pure cryptography: no RPC or consensus",
		forbidden: []string{"google.golang.org/grpc", "github.com/hashicorp/", "net/http", module + "/"}},
	{pkg: module + "/wrap", exact: true, why: "wrap never logs",
		forbidden: []string{"log", "log/slog"}},
	{pkg: module + "/fsm", transitive: false, why: "fsm is deterministic: no I/O, no network, no clocks of its own, no cluster or region",
		forbidden: []string{"os", "net", "net/http", "math/rand", "math/rand/v2", "crypto/rand", "log", "log/slog",
			module + "/cluster", module + "/region", module + "/transport", module + "/governance", module + "/gateway"}},
	{pkg: module + "/policy", exact: true, transitive: true, stdlibOnly: true, why: "policy is the pure key-use policy language and matcher: standard library only, no I/O"},
	{pkg: module + "/policy", exact: true, why: "policy is pure: no I/O, no clocks, no logging",
		forbidden: []string{"os", "net", "net/http", "log", "log/slog", "time", "math/rand", "math/rand/v2", "crypto/rand"}},
	{pkg: module + "/cluster", transitive: true, why: "cluster is generic: it knows no region, governance or API",
		forbidden: []string{module + "/region", module + "/governance", module + "/gateway", module + "/fsm", module + "/transport"}},
	{pkg: module + "/anchor", transitive: true, why: "anchors seal L2 for the region; they know nothing of the region",
		forbidden: []string{module + "/region", module + "/fsm", module + "/cluster", module + "/governance", module + "/gateway"}},
	{pkg: module + "/jepsen", transitive: false, why: "jepsen is black-box: it runs the binary and speaks only the public API",
		forbidden: []string{module + "/region", module + "/fsm", module + "/cluster", module + "/wrap", module + "/governance", module + "/gateway", module + "/anchor"}},
}

// matches reports whether path is prefix or below it; a prefix ending in "/" matches below it only.
func matches(path, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(path, prefix)
	}
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// stdlib reports whether an import path is the standard library's: its first element has no dot
// (as cmd/go decides; "C" and vendored paths do not occur here).
func stdlib(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func TestImportBoundaries(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, r := range rules {
			if !(p.ImportPath == r.pkg || (!r.exact && strings.HasPrefix(p.ImportPath, r.pkg+"/"))) {
				continue
			}
			// A package's own test-support subpackages (e.g. anchor/anchortest) may use more.
			if strings.HasSuffix(p.ImportPath, "test") && p.ImportPath != r.pkg {
				continue
			}
			deps := p.Imports
			if r.transitive {
				deps = p.Deps
			}
			for _, d := range deps {
				if r.stdlibOnly && !stdlib(d) {
					t.Errorf("%s imports %s: %s", p.ImportPath, d, r.why)
				}
				for _, f := range r.forbidden {
					if d == r.pkg || strings.HasPrefix(d, r.pkg+"/") {
						continue // its own subpackages
					}
					if matches(d, f) {
						t.Errorf("%s imports %s: %s", p.ImportPath, d, r.why)
					}
				}
			}
		}
	}
}

// TestNoTestingInProduction fails when a non-test package of ours imports the testing package: test
// support belongs in <pkg>test packages, which production code never imports. (Direct imports only:
// hashicorp/raft itself links testing through its testing.go, which we cannot change.)
func TestNoTestingInProduction(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.HasSuffix(p.ImportPath, "test") || strings.Contains(p.ImportPath, "/internal/deptest") {
			continue
		}
		for _, d := range p.Imports {
			if d == "testing" {
				t.Errorf("%s imports package testing; move test support into a <pkg>test package", p.ImportPath)
			}
		}
	}
}

// TestNothingImportsCmd keeps cmd at the top: it wires everything and nothing depends on it.
func TestNothingImportsCmd(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, d := range p.Imports {
			if strings.HasPrefix(d, module+"/cmd") {
				t.Errorf("%s imports %s: nothing imports cmd", p.ImportPath, d)
			}
		}
	}
}
