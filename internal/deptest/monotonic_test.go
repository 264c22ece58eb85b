package deptest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLeaseAndFenceUseMonotonicTime enforces docs/architecture.md's rule for leases and fences:
// they measure time on the monotonic clock only, so that a wall clock stepped by hours (NTP, an
// operator's `date -s`; jepsen's clock-jump nemesis) moves no lease and no fence. A time.Time from
// time.Now carries a monotonic reading, and Go compares and subtracts two such values by it; every
// call below builds or returns a time without one (or a wall-clock number), so one of them in the
// lease or fence code would bring the wall clock into a comparison.
//
// Checked: region/lease.go, region/fence.go and every non-test file of cluster/ (Raft, membership,
// the leader's lease), except what is allowed below with its reason. The check is syntactic (a
// method of that name on any value): Duration.Round and Truncate would be caught too, and should
// be written otherwise (or allowed here with a reason).
func TestLeaseAndFenceUseMonotonicTime(t *testing.T) {
	root := moduleRoot(t)
	files := []string{filepath.Join(root, "region", "lease.go"), filepath.Join(root, "region", "fence.go")}
	cl, err := filepath.Glob(filepath.Join(root, "cluster", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range cl {
		if !strings.HasSuffix(f, "_test.go") {
			files = append(files, f)
		}
	}
	// Wall-clock stamps that are shown to people and never compared, with their reason.
	allowed := map[string]string{
		"cluster/tombstone.go:UnixMilli": "a tombstone's RemovedAt: the leader's wall clock when it proposed the removal, in the replicated state for `krypton members`; never compared",
		"cluster/tombstone.go:UTC":       "the same stamp, shown in UTC",
	}
	wallFuncs := map[string]bool{"Unix": true, "UnixMilli": true, "UnixMicro": true, "Date": true, "Parse": true, "ParseInLocation": true}
	wallMethods := map[string]bool{"Unix": true, "UnixNano": true, "UnixMilli": true, "UnixMicro": true, "UTC": true, "Local": true, "In": true, "Round": true, "Truncate": true}
	fset := token.NewFileSet()
	used := map[string]bool{}
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			name := sel.Sel.Name
			pkg, isPkg := sel.X.(*ast.Ident)
			wall := (isPkg && pkg.Name == "time" && wallFuncs[name]) || (!(isPkg && pkg.Name == "time") && wallMethods[name])
			if !wall {
				return true
			}
			key := rel + ":" + name
			if _, ok := allowed[key]; ok {
				used[key] = true
				return true
			}
			t.Errorf("%s: %s uses the wall clock (.%s): lease and fence code must compare monotonic readings only (time.Now, time.Since, Sub, Add, Before, After)", fset.Position(call.Pos()), rel, name)
			return true
		})
	}
	for key := range allowed {
		if !used[key] {
			t.Errorf("allowed wall-clock use %s is no longer there: remove it from the list", key)
		}
	}
}

// moduleRoot is the directory of go.mod, two levels above this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(wd, "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found from %s: %v", wd, err)
	}
	return root
}
