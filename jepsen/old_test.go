package jepsen_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// defaultOld is the release the upgrade scenario starts from: the last commit before log entries
// carried their origin (fsm.Entry.Origin), the first addition to the log format a node of the
// previous release cannot decode (region/upgrade.go). A later "previous release" is given with
// -jepsen.old or KRYPTON_UPGRADE_FROM (a commit, a tag or e.g. HEAD~20).
const defaultOld = "77083f77f6f5703c9564c4000373d5a3fe4f1825"

var oldFlag = flag.String("jepsen.old", "", "commit of the previous release the upgrade scenario starts from (default: $KRYPTON_UPGRADE_FROM, else "+defaultOld[:12]+")")

// buildOld builds the krypton binary of the previous release from the repository's history: the
// commit's tree (git archive, so no worktree is registered) built into a cache directory named
// by the commit, so that make test and make jepsen build it once per machine.
func buildOld(t *testing.T) (string, error) {
	t.Helper()
	ref := *oldFlag
	if ref == "" {
		ref = os.Getenv("KRYPTON_UPGRADE_FROM")
	}
	if ref == "" {
		ref = defaultOld
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	cached := func(commit string) string { return filepath.Join(cache, "krypton-jepsen", "old-"+commit, "krypton") }
	if _, err := os.Stat(cached(ref)); err == nil && len(ref) == 40 {
		return cached(ref), nil // a full commit id, built before: no git needed
	}
	out, err := exec.Command("git", "rev-parse", "--verify", ref+"^{commit}").Output()
	if err != nil {
		return "", fmt.Errorf("the upgrade scenario builds the previous release from git history: git rev-parse %s: %v (a checkout with its history is needed, not a shallow one; or name another commit with -jepsen.old)", ref, err)
	}
	commit := strings.TrimSpace(string(out))
	bin := cached(commit)
	dir := filepath.Dir(bin)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	src, err := os.MkdirTemp("", "krypton-old-src-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(src)
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatal(err)
	}
	sh := fmt.Sprintf("git -C %q archive %s | tar -x -C %q", strings.TrimSpace(string(top)), commit, src)
	if b, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
		t.Fatalf("extracting %s: %v\n%s", commit, err, b)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Built to a temporary name and renamed: an interrupted build leaves no binary to trust.
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-o", tmp, "./cmd/krypton")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the previous release %s: %v\n%s", commit[:12], err, b)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the previous release %s into %s", commit[:12], bin)
	return bin, nil
}
