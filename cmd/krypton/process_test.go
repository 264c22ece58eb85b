package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/netutil"
)

// These tests run krypton as a real process: the test binary itself, which TestMain (script_test.go)
// puts on PATH as "krypton", so that signals, pipes and process exit are the real ones.

// kryptonPath is the krypton command testscript.Main put on PATH.
func kryptonPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("krypton")
	if err != nil {
		t.Fatalf("krypton is not on PATH (testscript.Main puts it there): %v", err)
	}
	return p
}

// kryptonIn runs one krypton command line in dir and returns stdout, stderr and its error.
func kryptonIn(t *testing.T, dir string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kryptonPath(t), args...)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func kryptonOK(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, err := kryptonIn(t, dir, args...)
	if err != nil {
		t.Fatalf("krypton %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a started krypton process; it is killed at the end of the test if still running.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait has returned err
	err  error
}

func startProcess(t *testing.T, cmd *exec.Cmd) *process {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // a no-op error once it has exited
		<-p.done
	})
	return p
}

// exited waits for the process to exit, up to limit, and returns how it exited; it fails the test
// if the process is still running then.
func (p *process) exited(t *testing.T, limit time.Duration, why string) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(limit):
		t.Fatalf("the krypton process was still running %s after %s", limit, why)
		return nil
	}
}

// TestServerExitsAfterLeave starts a real single-node `krypton server` without -dev-anchor, checks
// that a file:// anchor is refused with an error naming -dev-anchor before any file is touched,
// then runs `krypton leave` against it: the server process must exit by itself, with code 0, after
// a clean shutdown (the node stopped: Raft and bolt closed, keys wiped).
func TestServerExitsAfterLeave(t *testing.T) {
	dir := t.TempDir()
	kryptonOK(t, dir, "certs", "ca", "-dir", "pki")
	kryptonOK(t, dir, "certs", "node", "-dir", "pki", "-region", "dev", "node-1")
	kryptonOK(t, dir, "certs", "operator", "-dir", "pki", "admin")
	addr := func(udp bool) string {
		port, err := netutil.FreePort(udp)
		if err != nil {
			t.Fatal(err)
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	api, raftAddr, gossip := addr(false), addr(false), addr(true)
	server := exec.Command(kryptonPath(t), "server", "-node-id", "node-1", "-data-dir", "n1", "-bootstrap-expect", "1",
		"-api-addr", api, "-raft-addr", raftAddr, "-gossip-addr", gossip,
		"-ca-cert", "pki/ca.pem", "-cert", "pki/node-node-1.pem", "-key", "pki/node-node-1-key.pem")
	server.Dir = dir
	server.Env = append(os.Environ(), "KRYPTON_GOSSIP_KEY=MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=") // never on argv
	var logs lockedBuffer
	server.Stdout, server.Stderr = &logs, &logs
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server output:\n%s", logs.String())
		}
	})
	proc := startProcess(t, server)
	conn := []string{"-addr", api, "-ca-cert", "pki/ca.pem", "-client-cert", "pki/operator-admin.pem", "-client-key", "pki/operator-admin-key.pem"}
	with := func(cmd ...string) []string {
		// flags after the command words, arguments last
		words, rest := cmd, []string(nil)
		for i, w := range cmd {
			if strings.HasPrefix(w, "-") {
				words, rest = cmd[:i], cmd[i:]
				break
			}
		}
		args := append(append([]string{}, words...), conn...)
		return append(args, rest...)
	}

	// Wait until the node leads and serves.
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _, err := kryptonIn(t, dir, with("status", "-format", "json")...)
		if err == nil && strings.Contains(out, `"leader_id": "node-1"`) && strings.Contains(out, "LEASE_STATE_SERVING") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node did not lead and serve within 90s; last status: %s (%v)", out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A file:// anchor on a node without -dev-anchor: the first answer names the flag, whether the
	// key file is missing, too open, or to be created, and nothing is created.
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	created := filepath.Join(dir, "new", "root.key")
	for i, uri := range []string{"file://" + filepath.Join(dir, "missing.key"), "file://" + open, "file://" + created + "?create=1"} {
		tenant := "t" + strconv.Itoa(i)
		_, errOut, err := kryptonIn(t, dir, with("tenant", "create", "-anchor", uri, tenant)...)
		if err == nil || !strings.Contains(errOut, "file:// is for development only; pass -dev-anchor") {
			t.Errorf("tenant create -anchor %s: %v, stderr %q; want a refusal naming -dev-anchor", uri, err, errOut)
		}
		for _, wrong := range []string{"destroyed", "unusable"} {
			if strings.Contains(errOut, wrong) {
				t.Errorf("tenant create -anchor %s says %q: %s", uri, wrong, errOut)
			}
		}
	}
	if _, err := os.Lstat(filepath.Dir(created)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused file://...?create=1 created %s on a node without -dev-anchor (%v)", filepath.Dir(created), err)
	}

	out := kryptonOK(t, dir, with("leave")...)
	if !strings.Contains(out, "left the region") {
		t.Errorf("leave printed %q", out)
	}
	if err := proc.exited(t, 30*time.Second, "krypton leave"); err != nil {
		t.Fatalf("the server exited with %v after leave, want code 0\n%s", err, logs.String())
	}
	for _, want := range []string{"left the cluster", "region node stopped", "the node has left the region; exiting"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the server's log lacks %q", want)
		}
	}
}
