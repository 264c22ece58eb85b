package jepsen

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotter"
)

// fakeRegion is a cluster of n nodes whose data directories hold the given files (name ->
// content), under dir.
func fakeRegion(t *testing.T, dir, region, prefix string, n int, files map[string]string) *cluster {
	t.Helper()
	c := &cluster{dir: dir, region: region, prefix: prefix}
	for i := range n {
		id := prefix + string(rune('1'+i))
		nd := &node{id: id, dir: filepath.Join(dir, "nodes", id, "data")}
		for name, content := range files {
			p := filepath.Join(nd.dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c.nodes = append(c.nodes, nd)
	}
	return c
}

// TestCheckResidency: the scan of the second region passes when only the first holds the
// resident tenant, fails naming the file when a Raft store or a snapshot of the second names it,
// ignores the audit log, and fails when its control (the first region) finds nothing.
func TestCheckResidency(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := fakeRegion(t, dir, regionA, "a", 3, map[string]string{"raft/raft.db": "..." + residentTenant + "...", "revocations.db": "x"})
	clean := map[string]string{"raft/raft.db": "..." + sharedTenant + "...", "audit.log": "refused " + residentTenant}
	if v := checkResidency(a, fakeRegion(t, dir, regionB, "b", 3, clean), residentTenant); v.Result != OK {
		t.Fatalf("a clean region fails: %v", v.Problems)
	}
	leaked := map[string]string{"raft/raft.db": "x", "raft/snapshots/2-10-1/state.bin": "\x00" + residentTenant + "\x00"}
	v := checkResidency(a, fakeRegion(t, dir, regionB, "c", 3, leaked), residentTenant)
	if v.Result != Fail || len(v.Problems) != 3 || !strings.Contains(v.Problems[0], filepath.Join("snapshots", "2-10-1", "state.bin")) {
		t.Fatalf("a snapshot naming the tenant in each node: %s %v", v.Result, v.Problems)
	}
	blind := fakeRegion(t, dir, regionA, "d", 3, map[string]string{"raft/raft.db": "x"})
	if v := checkResidency(blind, fakeRegion(t, dir, regionB, "e", 3, clean), residentTenant); v.Result != Fail || !strings.Contains(v.Problems[0], "control") {
		t.Fatalf("a control that finds nothing passes: %s %v", v.Result, v.Problems)
	}
}

// TestCheckResidentOps: an operation on the resident tenant that succeeded on a node of the
// other region fails the check; refused ones pass; none at all fails (nothing was checked).
func TestCheckResidentOps(t *testing.T) {
	t.Parallel()
	b := &cluster{region: regionB, nodes: []*node{{id: "b1"}, {id: "b2"}}}
	ops := []Op{
		{ID: 1, Type: OpUnwrap, Key: residentTenant + "/s1", Node: "a1", Outcome: OK},
		{ID: 2, Type: OpUnwrap, Key: residentTenant + "/s1", Node: "b1", Outcome: Fail, Code: "NotFound"},
		{ID: 3, Type: OpUnwrap, Key: sharedTenant + "/s2", Node: "b2", Outcome: OK},
	}
	if v := checkResidentOps(ops, b); v.Result != OK {
		t.Fatalf("refusals fail: %v", v.Problems)
	}
	ops = append(ops, Op{ID: 4, Type: OpUnwrap, Key: residentTenant + "/s1", Node: "b2", Outcome: OK})
	if v := checkResidentOps(ops, b); v.Result != Fail || !strings.Contains(v.Problems[0], "op 4") {
		t.Fatalf("a use outside the residency passes: %v", v)
	}
	if v := checkResidentOps(ops[:1], b); v.Result != Fail {
		t.Fatal("no operation sent outside passes")
	}
}

// TestThinPoints: a long series keeps at most n fast and n slow points, every slow one when they
// are few, and its first point; a short one is unchanged.
func TestThinPoints(t *testing.T) {
	t.Parallel()
	var pts plotter.XYs
	for i := range 10000 {
		y := 1.0
		if i%1000 == 0 {
			y = 500
		}
		pts = append(pts, plotter.XY{X: float64(i), Y: y})
	}
	got := thinPoints(pts, 300)
	slow := 0
	for _, p := range got {
		if p.Y >= 100 {
			slow++
		}
	}
	if len(got) != 310 || slow != 10 {
		t.Fatalf("got %d points, %d slow; want 310, 10", len(got), slow)
	}
	if short := thinPoints(pts[:200], 300); len(short) != 200 {
		t.Fatalf("a short series lost points: %d", len(short))
	}
}
