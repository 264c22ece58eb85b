package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevCleansUpOnSignal runs `krypton dev` as `make dev 2>&1 | tee log` does when Ctrl-C ends
// tee too, or a closed terminal sends SIGHUP: stdout is a pipe whose reader is gone, then the
// signal comes. The development directory (root.key, the CA's private key) must be removed.
func TestDevCleansUpOnSignal(t *testing.T) {
	for i, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			tmp := t.TempDir()
			cmd := exec.Command(kryptonPath(t), "dev", "-port-base", "0")
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdout = w
			var errOut lockedBuffer
			cmd.Stderr = &errOut
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("krypton dev stderr:\n%s", errOut.String())
				}
			})
			proc := startProcess(t, cmd)
			w.Close()
			defer r.Close()

			// Read the welcome up to its last line, within a deadline.
			welcome := make(chan string, 1)
			go func() {
				var b strings.Builder
				sc := bufio.NewScanner(r)
				for sc.Scan() {
					b.WriteString(sc.Text() + "\n")
					if strings.Contains(sc.Text(), "Ctrl-C stops the region") {
						break
					}
				}
				welcome <- b.String()
			}()
			var text string
			select {
			case text = <-welcome:
			case <-time.After(180 * time.Second):
				t.Fatal("krypton dev printed no welcome within 180s")
			}
			m := regexp.MustCompile(`data, certificates and root key: (\S+)`).FindStringSubmatch(text)
			if m == nil {
				t.Fatalf("the welcome names no directory:\n%s", text)
			}
			devDir := m[1]
			if _, err := os.Stat(filepath.Join(devDir, "anchor", "root.key")); err != nil {
				t.Fatalf("no root key in %s while dev runs: %v", devDir, err)
			}
			if i == 0 {
				runPrintedKillSwitch(t, text)
			}

			r.Close() // the reader goes away, as tee does on Ctrl-C
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := proc.exited(t, 60*time.Second, sig.String()); err != nil {
				t.Errorf("krypton dev exited with %v after %s", err, sig)
			}
			if _, err := os.Lstat(devDir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("after %s with stdout's reader gone, %s is still there (%v): root.key and the CA key left on disk", sig, devDir, err)
			}
			left, _ := filepath.Glob(filepath.Join(tmp, "krypton-dev-*"))
			if len(left) != 0 {
				t.Fatalf("left behind: %v", left)
			}
		})
	}
}

// runPrintedKillSwitch runs, in a shell, the welcome's export lines and its tenant create and
// delete-anchor commands exactly as printed: the kill switch command must work as shown.
func runPrintedKillSwitch(t *testing.T, welcome string) {
	t.Helper()
	var script []string
	for _, l := range strings.Split(welcome, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "export KRYPTON_") || strings.HasPrefix(l, "krypton tenant create ") || strings.HasPrefix(l, "krypton tenant delete-anchor ") {
			script = append(script, l)
		}
	}
	if len(script) < 3 || !strings.HasPrefix(script[len(script)-1], "krypton tenant delete-anchor ") {
		t.Fatalf("the welcome lacks the exports, tenant create or the kill switch:\n%s", welcome)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sh := exec.CommandContext(ctx, "sh", "-e", "-c", strings.Join(script, "\n"))
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("the printed commands failed: %v\n%s\n%s", err, strings.Join(script, "\n"), out)
	}
	if !strings.Contains(string(out), "Deleted the anchor of tenant acme") {
		t.Fatalf("the printed kill switch did not report the anchor deleted:\n%s", out)
	}
}
