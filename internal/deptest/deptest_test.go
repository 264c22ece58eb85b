// Package deptest checks the rules docs/architecture.md writes down: the import boundaries, in the
// manner of tailscale's deptest (a package that imports what it must not fails this test), and
// that no file of the repository refers to a file outside it.
package deptest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
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
// listed prefix, directly (Imports) or through others (Deps). A forbidden entry that starts with
// "=" names one package exactly, not its subpackages.
type rule struct {
	pkg        string
	exact      bool
	transitive bool
	forbidden  []string
	// stdlibOnly forbids everything outside the standard library (an import path whose first
	// element has no dot is the standard library's).
	stdlibOnly bool
	// allowed are the module's packages a stdlibOnly package may still import: each has a
	// stdlibOnly rule of its own, so linking it links no more than the standard library.
	allowed []string
	why     string
}

var rules = []rule{
	{pkg: module + "/wrap", exact: true, transitive: true, why: "wrap is pure cryptography: no RPC or consensus",
		forbidden: []string{"google.golang.org/grpc", "github.com/hashicorp/", "net/http", module + "/"}},
	{pkg: module + "/wrap", exact: true, why: "wrap never logs",
		forbidden: []string{"log", "log/slog"}},
	{pkg: module + "/fsm", transitive: false, why: "fsm is deterministic: no I/O, no network, no clocks of its own, no cluster or region",
		forbidden: []string{"os", "net", "net/http", "math/rand", "math/rand/v2", "crypto/rand", "log", "log/slog",
			module + "/cluster", module + "/region", module + "/transport", module + "/governance", module + "/gateway"}},
	{pkg: module + "/governance/govfsm", why: "governance's state machine is deterministic like fsm: no I/O, no network, no clocks of its own, no logging, no RPC, cluster or API code",
		forbidden: []string{"os", "net", "net/http", "math/rand", "math/rand/v2", "crypto/rand", "log", "log/slog",
			"google.golang.org/grpc", "google.golang.org/protobuf", module + "/cluster", module + "/region", module + "/transport", "=" + module + "/governance", module + "/gateway", module + "/anchor"}},
	{pkg: module + "/policy", exact: true, transitive: true, stdlibOnly: true, why: "policy is the pure key-use policy language and matcher: standard library only, no I/O"},
	{pkg: module + "/policy", exact: true, why: "policy is pure: no I/O, no clocks, no logging",
		forbidden: []string{"os", "net", "net/http", "log", "log/slog", "time", "math/rand", "math/rand/v2", "crypto/rand"}},
	{pkg: module + "/internal/staterr", exact: true, transitive: true, stdlibOnly: true, why: "staterr holds the refusals both state machines share, which are pure: standard library only"},
	{pkg: module + "/internal/staterr", exact: true, why: "staterr is pure: no I/O, no clocks, no logging",
		forbidden: []string{"os", "net", "net/http", "log", "log/slog", "time", "math/rand", "math/rand/v2", "crypto/rand"}},
	{pkg: module + "/cluster", transitive: true, why: "cluster is generic: it knows no region, governance or API",
		forbidden: []string{module + "/region", module + "/governance", module + "/gateway", module + "/fsm", module + "/transport"}},
	{pkg: module + "/anchor", transitive: true, why: "anchors seal L2 for the region; they know nothing of the region",
		forbidden: []string{module + "/region", module + "/fsm", module + "/cluster", module + "/governance", module + "/gateway"}},
	{pkg: module + "/jepsen", transitive: false, why: "jepsen is black-box: it runs the binary and speaks only the public API",
		forbidden: []string{module + "/region", module + "/fsm", module + "/cluster", module + "/wrap", module + "/governance", module + "/gateway", module + "/anchor"}},
	{pkg: module + "/jepsen", transitive: true, why: "jepsen is black-box: not even through another package may it link the code it tests",
		forbidden: []string{module + "/region", module + "/fsm", module + "/cluster", module + "/governance", module + "/gateway", module + "/anchor"}},
	{pkg: module + "/gateway", transitive: true, why: "the gateway runs beside the applications: it links no consensus, region or governance code, so compromising it yields no path into them",
		forbidden: []string{module + "/region", module + "/governance", module + "/cluster"}},
	{pkg: module + "/client", transitive: true, why: "the client library is what applications link: the public API only, no server code",
		forbidden: []string{module + "/region", module + "/governance", module + "/cluster", module + "/gateway"}},
	{pkg: module + "/envelope", exact: true, transitive: true, stdlibOnly: true, allowed: []string{module + "/internal/fipsmode"}, why: "envelope is the ciphertext format client and gateway share: standard library only (and fipsmode's GCM constructions), so linking it links no server code"},
	{pkg: module + "/internal/fipsmode", exact: true, transitive: true, stdlibOnly: true, why: "fipsmode is linked by envelope, which clients link: standard library only"},
	{pkg: module + "/region", transitive: true, why: "a region talks to governance over the API only (the feed); it links none of governance's code",
		forbidden: []string{module + "/governance"}},
	{pkg: module + "/governance", transitive: true, why: "governance talks to regions over the API only; it links none of the region's code",
		forbidden: []string{module + "/region"}},
	{pkg: module + "/cmd/krypton", exact: true, transitive: true, why: "linking gRPC's gzip registers it for the whole process, and every gRPC call then carries a grpc-accept-encoding header the server parses (more allocations per wrap, tracing on or off; internal/tracing/otlpgrpc.go)",
		forbidden: []string{"=google.golang.org/grpc/encoding/gzip"}},
}

// matches reports whether path is prefix or below it; a prefix ending in "/" matches below it only,
// and one starting with "=" matches that one path only.
func matches(path, prefix string) bool {
	if exact, ok := strings.CutPrefix(prefix, "="); ok {
		return path == exact
	}
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

// violations lists every rule a package of pkgs breaks, one line each.
func violations(pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
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
				if r.stdlibOnly && !stdlib(d) && !slices.Contains(r.allowed, d) {
					out = append(out, p.ImportPath+" imports "+d+": "+r.why)
				}
				for _, f := range r.forbidden {
					if d == r.pkg || strings.HasPrefix(d, r.pkg+"/") {
						continue // its own subpackages
					}
					if matches(d, f) {
						out = append(out, p.ImportPath+" imports "+d+": "+r.why)
					}
				}
			}
		}
	}
	return out
}

func TestImportBoundaries(t *testing.T) {
	for _, v := range violations(listPackages(t)) {
		t.Error(v)
	}
}

// TestEachRuleBites feeds every rule a made-up package that breaks it, so a rule that can no
// longer fail (a typo in its path, a prefix that matches nothing) fails here.
func TestEachRuleBites(t *testing.T) {
	for i, r := range rules {
		bad := "github.com/example/notstdlib"
		if len(r.forbidden) > 0 {
			f := r.forbidden[0]
			bad = strings.TrimPrefix(strings.TrimSuffix(f, "/"), "=")
			if strings.HasSuffix(f, "/") {
				bad += "/something"
			}
		}
		p := pkg{ImportPath: r.pkg, Imports: []string{bad}, Deps: []string{bad}}
		if v := violations([]pkg{p}); len(v) == 0 {
			t.Errorf("rule %d (%s: %s) does not refuse an import of %s", i, r.pkg, r.why, bad)
		}
		if r.transitive {
			// Through another package: only Deps carries it.
			p := pkg{ImportPath: r.pkg, Imports: []string{"fmt"}, Deps: []string{"fmt", bad}}
			if v := violations([]pkg{p}); len(v) == 0 {
				t.Errorf("transitive rule %d (%s) misses %s reached through another package", i, r.pkg, bad)
			}
		}
	}
	// client may use envelope (the ciphertext format it shares with the gateway), and nothing of
	// the gateway's, not even through a subpackage.
	ok := pkg{ImportPath: module + "/client", Imports: []string{module + "/envelope"}, Deps: []string{module + "/envelope"}}
	if v := violations([]pkg{ok}); len(v) != 0 {
		t.Errorf("client using envelope refused: %v", v)
	}
	kmip := pkg{ImportPath: module + "/client", Imports: []string{"fmt"}, Deps: []string{module + "/gateway/kmip"}}
	if v := violations([]pkg{kmip}); len(v) == 0 {
		t.Error("client reaching gateway/kmip through another package is not refused")
	}
	// The "=" form names one package, not its subpackages.
	if !matches(module+"/gateway", "="+module+"/gateway") || matches(module+"/gateway/kmip", "="+module+"/gateway") {
		t.Error(`a forbidden entry "=P" must match P and nothing below it`)
	}
}

// TestNoTestKitInProduction fails when a production package depends, directly or not, on a test kit
// of ours (a package whose name ends in "test", such as region/regiontest): test kits make fixed
// keys, open ports and skip checks, and must never be linked into a binary.
func TestNoTestKitInProduction(t *testing.T) {
	for _, p := range listPackages(t) {
		if isTestKit(p.ImportPath) {
			continue
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module+"/") && isTestKit(d) {
				t.Errorf("%s depends on the test kit %s", p.ImportPath, d)
			}
		}
	}
}

func isTestKit(path string) bool { return strings.HasSuffix(path, "test") }

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
		if strings.HasPrefix(p.ImportPath, module+"/cmd/") {
			continue // the command's own internal packages (cmd/krypton/internal/bench)
		}
		for _, d := range p.Imports {
			if strings.HasPrefix(d, module+"/cmd") {
				t.Errorf("%s imports %s: nothing imports cmd", p.ImportPath, d)
			}
		}
	}
}
