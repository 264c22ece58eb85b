package docstest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Deadlines, generous: CI runs on a shared 2-core machine while other packages' tests run.
const (
	buildTimeout   = 15 * time.Minute // a cold cgo build of cmd/krypton takes minutes there
	startTimeout   = 3 * time.Minute  // krypton dev: three nodes, governance, a gateway
	commandTimeout = 90 * time.Second // a -wait command waits up to 30 s by default
	stopTimeout    = time.Minute
)

var (
	buildOnce sync.Once
	binDir    string // holds the test-built krypton
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// repoRoot is the module root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at the repository root %s: %v", root, err)
	}
	return root
}

// kryptonBin builds cmd/krypton once for the package's tests and returns the directory holding it:
// the binary of this checkout, never one found on PATH. -trimpath as `make build` does, so that
// `make test` (which builds first) finds the packages in the build cache.
func kryptonBin(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "krypton-docstest-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, "krypton"), "./cmd/krypton")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/krypton: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// devProcess is `krypton dev` running as a child process.
type devProcess struct {
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	mu      sync.Mutex
	stdout  strings.Builder
	ready   chan struct{} // closed when the welcome text is complete
	exited  chan struct{} // closed when the process has exited
	waitErr error
}

// welcomeEnd is the last line of the welcome text.
const welcomeEnd = "Ctrl-C stops the region"

func startDev(t *testing.T, krypton string, r *Runner, dir string) *devProcess {
	t.Helper()
	d := &devProcess{ready: make(chan struct{}), exited: make(chan struct{})}
	d.cmd = exec.Command(krypton, "dev", "-port-base", "0", "-dir", dir)
	d.cmd.Dir, d.cmd.Env = r.Dir, r.Environ()
	d.cmd.Stderr = &d.stderr
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		readyClosed := false
		for sc.Scan() {
			d.mu.Lock()
			d.stdout.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
			if !readyClosed && strings.HasPrefix(sc.Text(), welcomeEnd) {
				close(d.ready)
				readyClosed = true
			}
		}
		io.Copy(io.Discard, stdout)
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() { d.stop(t) })
	select {
	case <-d.ready:
	case <-d.exited:
		t.Fatalf("krypton dev exited before printing its welcome: %v\nstdout:\n%s\nstderr:\n%s%s", d.waitErr, d.output(), d.stderr.String(), devLog(dir))
	case <-time.After(startTimeout):
		t.Fatalf("krypton dev did not print its welcome within %v\nstdout:\n%s%s", startTimeout, d.output(), devLog(dir))
	}
	return d
}

func (d *devProcess) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stdout.String()
}

// stop presses Ctrl-C and waits for the region to stop.
func (d *devProcess) stop(t *testing.T) {
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		d.cmd.Process.Kill()
		<-d.exited
		t.Errorf("krypton dev did not stop within %v of Ctrl-C", stopTimeout)
	}
}

// devLog is the tail of the node logs, for a failure message.
func devLog(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "krypton.log"))
	if err != nil {
		return ""
	}
	return "\nkrypton.log (tail):\n" + tail(string(b), 8192)
}

// TestNewcomerPath runs what a newcomer types against `krypton dev`: every command its welcome
// prints, then every runnable block of README.md and docs/*.md (see the package documentation).
// A failure names the command's source (the welcome's line, or the doc's file:line); every
// failing command is reported, not only the first.
func TestNewcomerPath(t *testing.T) {
	root := repoRoot(t)
	docCmds, err := DocCommands(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(docCmds) == 0 {
		t.Fatalf("no runnable block in README.md or docs/*.md: is the marker %q still used?", Marker)
	}
	bin := kryptonBin(t)
	work := t.TempDir()
	// The newcomer's shell, where krypton is not on PATH until the welcome's export puts it there.
	r := NewRunner(work, "", commandTimeout)
	devDir := filepath.Join(t.TempDir(), "dev")
	d := startDev(t, filepath.Join(bin, "krypton"), r, devDir)

	welcome := WelcomeCommands(d.output())
	var krypton int
	exports := map[string]bool{}
	for _, c := range welcome {
		if m := exportLine.FindStringSubmatch(c.Text); m != nil {
			exports[m[1]] = true
		} else {
			krypton++
		}
	}
	// The parser must keep up with the welcome text: a change that hides its commands from it
	// would otherwise pass with nothing run.
	for _, v := range []string{"KRYPTON_ADDR", "KRYPTON_CA_CERT", "KRYPTON_CLIENT_CERT", "KRYPTON_CLIENT_KEY", "KRYPTON_GOVERNANCE_ADDR"} {
		if !exports[v] {
			t.Errorf("the welcome text exports no %s; found %v in:\n%s", v, exports, d.output())
		}
	}
	if krypton < 10 {
		t.Fatalf("found %d krypton commands in the welcome text, want at least 10:\n%s", krypton, d.output())
	}

	ctx := t.Context()
	checked := false
	for _, c := range append(welcome, docCmds...) {
		if !checked && !exportLine.MatchString(c.Text) {
			// The exports are done: krypton must now be the binary under test, found through
			// the PATH the welcome printed.
			checked = true
			out, err := r.Run(ctx, Command{"the welcome's exports", "command -v krypton"})
			if want := filepath.Join(bin, "krypton"); err != nil || strings.TrimSpace(out) != want {
				t.Fatalf("after the welcome's exports, krypton on PATH is %q (%v), want %s: the welcome must print export PATH=... when PATH does not find it", strings.TrimSpace(out), err, want)
			}
		}
		out, err := r.Run(ctx, c)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		t.Logf("%s: %s\n%s", c.Source, c.Text, indent(tail(out, 1024)))
	}
	select {
	case <-d.exited:
		t.Fatalf("krypton dev exited while the commands ran: %v\nstderr:\n%s%s", d.waitErr, d.stderr.String(), devLog(devDir))
	default:
	}
}

// TestWelcomeCommands reads the commands out of a welcome text: exports, krypton lines with
// comments and continuations, variables set before krypton; prose is left alone.
func TestWelcomeCommands(t *testing.T) {
	const welcome = `==> Krypton development region is running.

    node-1  api 127.0.0.1:7400  raft 127.0.0.1:7410  (leader)

Talk to it as an operator:
    export PATH="/src/krypton/bin:$PATH"
    export KRYPTON_ADDR=127.0.0.1:7400

    krypton members
    krypton tenant delete-anchor -reason "demo" -wait acme      # the kill switch
Wrap and unwrap:
    KRYPTON_CLIENT_CERT=/d/svc.pem KRYPTON_CLIENT_KEY=/d/svc-key.pem \
      krypton datakey -key demo/app

Applications encrypt through the gateway (Go: client.DialGatewayUnix("/d/gateway.sock")); krypton
Pull the plug:  touch /d/root.key.disabled
`
	got := WelcomeCommands(welcome)
	want := []Command{
		{"krypton dev output:6", `export PATH="/src/krypton/bin:$PATH"`},
		{"krypton dev output:7", "export KRYPTON_ADDR=127.0.0.1:7400"},
		{"krypton dev output:9", "krypton members"},
		{"krypton dev output:10", `krypton tenant delete-anchor -reason "demo" -wait acme      # the kill switch`},
		{"krypton dev output:12", "KRYPTON_CLIENT_CERT=/d/svc.pem KRYPTON_CLIENT_KEY=/d/svc-key.pem krypton datakey -key demo/app"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("WelcomeCommands:\n got %q\nwant %q", got, want)
	}
}

// TestRunnableBlocks reads only the marked blocks, skipping comments and blank lines, joining
// continuations, with the line each command starts on; a marker without a block is an error.
func TestRunnableBlocks(t *testing.T) {
	dir := t.TempDir()
	doc := "# Title\n" + // 1
		"```sh\n" + // 2
		"krypton not-marked\n" + // 3
		"```\n" + // 4
		"<!-- runnable -->\n" + // 5
		"```sh\n" + // 6
		"# a comment\n" + // 7
		"krypton policy set \\\n" + // 8
		"  -rule 'caller=x,service=*,ops=all' acme\n" + // 9
		"\n" + // 10
		"krypton policy get acme > policy.json   # then edit\n" + // 11
		"```\n" + // 12
		"1. In a list:\n" + // 13
		"   <!-- runnable -->\n" + // 14
		"   ```sh\n" + // 15
		"   krypton members\n" + // 16
		"   ```\n" // 17
	p := filepath.Join(dir, "doc.md")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := RunnableBlocks(p, "docs/doc.md")
	if err != nil {
		t.Fatal(err)
	}
	want := []Command{
		{"docs/doc.md:8", "krypton policy set -rule 'caller=x,service=*,ops=all' acme"},
		{"docs/doc.md:11", "krypton policy get acme > policy.json   # then edit"},
		{"docs/doc.md:16", "krypton members"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("RunnableBlocks:\n got %q\nwant %q", got, want)
	}

	for name, bad := range map[string]string{
		"no fence":   "text\n<!-- runnable -->\nkrypton members\n",
		"not closed": "text\n<!-- runnable -->\n```sh\nkrypton members\n",
	} {
		p := filepath.Join(dir, "bad.md")
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := RunnableBlocks(p, "docs/bad.md"); err == nil || !strings.Contains(err.Error(), "docs/bad.md:2:") {
			t.Errorf("%s: got error %v, want one naming docs/bad.md:2", name, err)
		}
	}
}

// TestRunnerReportsBrokenCommand shows that the newcomer test can fail: a doc whose commands drift
// from the binary (flags after the tenant, as docs/governance.md had them; an unknown flag) fails
// with the doc's file and line, the command and krypton's complaint, while a good command passes.
// None of these commands reaches a server: the binary refuses them first.
func TestRunnerReportsBrokenCommand(t *testing.T) {
	bin := kryptonBin(t)
	dir := t.TempDir()
	doc := "# Broken\n" +
		"<!-- runnable -->\n" +
		"```sh\n" +
		"krypton version\n" + // 4
		"krypton policy set acme -rule 'caller=spiffe://krypton/tenant/acme/service/*,service=*,ops=all'\n" + // 5
		"krypton members -no-such-flag\n" + // 6
		"```\n"
	p := filepath.Join(dir, "broken.md")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmds, err := RunnableBlocks(p, "docs/broken.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 3 {
		t.Fatalf("got %d commands, want 3: %q", len(cmds), cmds)
	}
	r := NewRunner(dir, bin, commandTimeout)
	if _, err := r.Run(t.Context(), cmds[0]); err != nil {
		t.Errorf("krypton version: %v", err)
	}
	for i, want := range []string{"want (-rule <rule>... | -file <policy.json>) <tenant>", "flag provided but not defined: -no-such-flag"} {
		c := cmds[i+1]
		_, err := r.Run(t.Context(), c)
		if err == nil {
			t.Errorf("%s: %s succeeded; want it to fail", c.Source, c.Text)
			continue
		}
		for _, s := range []string{fmt.Sprintf("docs/broken.md:%d: ", i+5), c.Text, "exit status 2", want} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("the report of %s does not contain %q:\n%v", c.Source, s, err)
			}
		}
	}
}

// TestRunnerExportsAndTimeout: an export changes the environment of the next commands (with $VARs
// expanded), an export with shell syntax is refused rather than half-run, and a command that
// hangs is ended at the deadline and reported.
func TestRunnerExportsAndTimeout(t *testing.T) {
	dir := t.TempDir()
	r := NewRunner(dir, dir, 500*time.Millisecond)
	ctx := t.Context()
	for _, c := range []Command{
		{"a:1", "export KRYPTON_X=one"},
		{"a:2", `export KRYPTON_Y="$KRYPTON_X/two"`},
	} {
		if _, err := r.Run(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	out, err := r.Run(ctx, Command{"a:3", `echo "$KRYPTON_Y"`})
	if err != nil || out != "one/two\n" {
		t.Errorf("echo $KRYPTON_Y: %q, %v; want one/two", out, err)
	}
	if _, err := r.Run(ctx, Command{"a:4", "export KRYPTON_Z=$(date)"}); err == nil || !strings.Contains(err.Error(), "a:4: ") {
		t.Errorf("export with command substitution: %v; want an error naming a:4", err)
	}
	start := time.Now()
	_, err = r.Run(ctx, Command{"a:5", "sleep 60 | cat"})
	if err == nil || !strings.Contains(err.Error(), "a:5: ") || !strings.Contains(err.Error(), "did not finish within") {
		t.Errorf("sleep 60: %v; want a timeout naming a:5", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the timed-out pipeline took %v to end", d)
	}
}

// TestDocCommandsExist checks every krypton command line README.md and docs/*.md show, runnable
// or not (a production `krypton server ...`, a command in the prose), against the binary's help:
// the command exists and takes every flag the line gives it.
func TestDocCommandsExist(t *testing.T) {
	root := repoRoot(t)
	f := &FlagChecker{Krypton: filepath.Join(kryptonBin(t), "krypton")}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		rel, _ := filepath.Rel(root, p)
		cmds, err := Invocations(p, filepath.ToSlash(rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			n++
			if err := f.Check(c); err != nil {
				t.Error(err)
			}
		}
	}
	t.Logf("%d krypton command lines checked", n)
	if n < 50 {
		t.Errorf("found %d krypton command lines in README.md and docs/*.md, want at least 50: is Invocations still reading them?", n)
	}
}

// TestFlagCheckerReportsDrift: a doc line with a flag the command lacks, a command that does not
// exist, or a flag given to a group fails naming its file:line; synopses with [-flag] and \|, pipes,
// comments, help and a group named in prose pass. Checking runs only help, never the command.
func TestFlagCheckerReportsDrift(t *testing.T) {
	dir := t.TempDir()
	doc := "Use `krypton tenant delete-anchor -reason TEXT [-wait] acme` or `krypton tenant` or `krypton help`.\n" + // 1
		"| `krypton policy set (-rule R… \\| -file F) acme` | policy |\n" + // 2
		"`krypton dev -oidc-issuer URL`\n" + // 3
		"```sh\n" + // 4
		"$ krypton revoke -tenant acme -dry-run | head -1   # -not-a-flag in a comment\n" + // 5
		"krypton key rotate demo app \\\n" + // 6
		"  -addr 127.0.0.1:1 -no-such-flag\n" + // 7
		"krypton tenants list\n" + // 8
		"krypton tenant -reason x\n" + // 9
		"```\n"
	p := filepath.Join(dir, "drift.md")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmds, err := Invocations(p, "docs/drift.md")
	if err != nil {
		t.Fatal(err)
	}
	f := &FlagChecker{Krypton: filepath.Join(kryptonBin(t), "krypton")}
	want := map[string]string{ // source -> the error it must contain; absent: passes
		"docs/drift.md:3": "`krypton dev` has no flag -oidc-issuer",
		"docs/drift.md:6": "`krypton key rotate` has no flag -no-such-flag",
		"docs/drift.md:8": "`krypton tenants` is not a krypton command",
		"docs/drift.md:9": "`krypton tenant` is a group of commands",
	}
	seen := map[string]bool{}
	for _, c := range cmds {
		seen[c.Source] = true
		err := f.Check(c)
		w, bad := want[c.Source]
		switch {
		case !bad && err != nil:
			t.Errorf("%s: %s: %v; want it to pass", c.Source, c.Text, err)
		case bad && (err == nil || !strings.Contains(err.Error(), c.Source+": ") || !strings.Contains(err.Error(), w)):
			t.Errorf("%s: %s: got %v, want an error naming %s and saying %s", c.Source, c.Text, err, c.Source, w)
		}
	}
	if len(cmds) != 9 {
		t.Errorf("got %d command lines, want 9: %q", len(cmds), cmds)
	}
	for src := range want {
		if !seen[src] {
			t.Errorf("no command line read from %s", src)
		}
	}
}
