// Package docstest keeps what a newcomer types in agreement with the binary. Its test,
// TestNewcomerPath, builds cmd/krypton, starts `krypton dev` as a real process, and runs as a
// shell would:
//
//   - every command the welcome text prints, in the order printed: the `export KRYPTON_...=...`
//     lines set the environment of the commands after them, and each `krypton ...` line (with `\`
//     continuations joined, and an optional `NAME=value ...` prefix) must exit 0. As after
//     `make dev`, the test-built krypton is not on PATH: the welcome's `export PATH=...` line must
//     put it there, and the test checks that `krypton` then is that binary;
//   - then every shell block of README.md and docs/*.md marked runnable, in file order (README.md
//     first, then docs/ by name), against the same deployment and in the same working directory,
//     so that one block may write a file the next reads.
//
// A block is marked runnable by an HTML comment alone on the line before its opening fence, which
// renders as nothing:
//
//	<!-- runnable -->
//	```sh
//	krypton policy get acme
//	```
//
// A marker not followed by a fence fails the test, so a typo cannot silently drop a block. Only
// mark blocks that run against `krypton dev` as they stand: a block that starts a server or names
// production hosts stays unmarked. Blank lines and lines starting with `#` are skipped; every other
// line (with its continuations) is one command, run by `bash -o pipefail -c` with the test-built
// krypton first on PATH, and a failure names the file and line of the command, its exit status and
// its output.
//
// TestDocCommandsExist reads every other krypton command line of README.md and docs/*.md too (the
// unmarked blocks, inline code such as `krypton tenant lock -reason TEXT acme`) and checks against
// the binary's own help that the command exists and takes each flag the line gives it, without
// running it.
package docstest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Marker is the line that makes the fenced block after it runnable.
const Marker = "<!-- runnable -->"

// Command is one command line as a shell runs it.
type Command struct {
	Source string // where it came from: "docs/governance.md:140" or "krypton dev output:27"
	Text   string // continuations joined
}

// exportLine is `export NAME=VALUE`, the value optionally in double quotes.
var exportLine = regexp.MustCompile(`^export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)

// assignment is a NAME=value word before a command.
var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// WelcomeCommands returns the commands in the welcome text of `krypton dev`: the lines, indented
// as the welcome indents them, that export a variable or run krypton (directly or with variables
// set before it). Prose lines that mention a command (`touch ...`, a Go call) are not commands.
func WelcomeCommands(out string) []Command {
	var cmds []Command
	lines := strings.Split(out, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if !strings.HasPrefix(line, "    ") {
			continue
		}
		text, start := strings.TrimSpace(line), i
		for strings.HasSuffix(text, `\`) && i+1 < len(lines) {
			i++
			text = strings.TrimSpace(strings.TrimSuffix(text, `\`)) + " " + strings.TrimSpace(lines[i])
		}
		if isCommand(text) {
			cmds = append(cmds, Command{Source: fmt.Sprintf("krypton dev output:%d", start+1), Text: text})
		}
	}
	return cmds
}

// isCommand says whether a welcome line is one to run: an export, or krypton after any number of
// NAME=value assignments.
func isCommand(text string) bool {
	if exportLine.MatchString(text) {
		return true
	}
	for _, f := range strings.Fields(text) {
		if f == "krypton" {
			return true
		}
		if !assignment.MatchString(f) {
			return false
		}
	}
	return false
}

// RunnableBlocks returns the commands of the blocks marked runnable in a Markdown file; name is
// how sources are reported (the path relative to the repository).
func RunnableBlocks(path, name string) ([]Command, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	var cmds []Command
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != Marker {
			continue
		}
		markerLine := i + 1
		i++
		if i >= len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[i]), "```") {
			return nil, fmt.Errorf("%s:%d: %s is not followed by a fenced block on the next line", name, markerLine, Marker)
		}
		closed := false
		for i++; i < len(lines); i++ {
			text := strings.TrimSpace(lines[i])
			if strings.HasPrefix(text, "```") {
				closed = true
				break
			}
			if text == "" || strings.HasPrefix(text, "#") {
				continue
			}
			start := i
			for strings.HasSuffix(text, `\`) && i+1 < len(lines) {
				i++
				text = strings.TrimSpace(strings.TrimSuffix(text, `\`)) + " " + strings.TrimSpace(lines[i])
			}
			cmds = append(cmds, Command{Source: fmt.Sprintf("%s:%d", name, start+1), Text: text})
		}
		if !closed {
			return nil, fmt.Errorf("%s:%d: the runnable block is not closed", name, markerLine)
		}
	}
	return cmds, nil
}

// DocCommands returns the runnable commands of README.md and docs/*.md under root, README first.
func DocCommands(root string) ([]Command, error) {
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	sort.Strings(docs)
	var cmds []Command
	for _, p := range append([]string{filepath.Join(root, "README.md")}, docs...) {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return nil, err
		}
		c, err := RunnableBlocks(p, filepath.ToSlash(rel))
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, c...)
	}
	return cmds, nil
}

// Runner runs commands as a newcomer's shell would, one at a time.
type Runner struct {
	Dir     string            // working directory
	BinDir  string            // if set, holds the krypton to run and goes first on PATH
	Env     map[string]string // the environment; exports change it
	Timeout time.Duration     // for each command
}

// NewRunner returns a runner whose environment is this process's without any KRYPTON_ variable
// (the tester's own settings must not leak in), with binDir, unless empty, first on PATH.
func NewRunner(dir, binDir string, timeout time.Duration) *Runner {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "KRYPTON_") {
			env[k] = v
		}
	}
	if binDir != "" {
		env["PATH"] = binDir + string(os.PathListSeparator) + env["PATH"]
	}
	env["PWD"] = dir
	return &Runner{Dir: dir, BinDir: binDir, Env: env, Timeout: timeout}
}

// Environ is the environment in os/exec's form.
func (r *Runner) Environ() []string {
	var env []string
	for k, v := range r.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// Run runs one command. An `export NAME=VALUE` line sets NAME for the commands after it ($VARs in
// the value expanded, surrounding double quotes removed; no other shell syntax); anything else runs in bash and must exit
// 0 within the timeout. The error names the command's source and text, and holds its output.
func (r *Runner) Run(ctx context.Context, c Command) (output string, err error) {
	if m := exportLine.FindStringSubmatch(c.Text); m != nil {
		if strings.ContainsAny(m[2], "`'();|&<> ") {
			return "", fmt.Errorf("%s: %s\n    the runner sets only plain exports (NAME=value or NAME=\"...$VAR...\"); keep shell syntax out of them", c.Source, c.Text)
		}
		v := strings.TrimSuffix(strings.TrimPrefix(m[2], `"`), `"`)
		r.Env[m[1]] = os.Expand(v, func(k string) string { return r.Env[k] })
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", c.Text)
	cmd.Dir, cmd.Env = r.Dir, r.Environ()
	// Its own process group, so that the timeout ends a pipeline's every process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	output = out.String()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("did not finish within %v", r.Timeout)
	}
	if err != nil {
		return output, fmt.Errorf("%s: %s\n    failed: %v\n%s", c.Source, c.Text, err, indent(tail(output, 4096)))
	}
	return output, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func indent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		b.WriteString("    | " + sc.Text() + "\n")
	}
	return b.String()
}

// codeSpan is one inline code span of Markdown (single backticks).
var codeSpan = regexp.MustCompile("`([^`]+)`")

// Invocations returns every krypton command line a Markdown file shows, marked runnable or not:
// the inline code spans that start with `krypton `, and the lines of fenced blocks that do (after
// an optional `$ ` prompt), with continuations joined. FlagsDefined checks them against the binary.
func Invocations(path, name string) ([]Command, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	var cmds []Command
	inBlock := false
	for i := 0; i < len(lines); i++ {
		text := strings.TrimSpace(lines[i])
		if strings.HasPrefix(text, "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			for _, m := range codeSpan.FindAllStringSubmatch(lines[i], -1) {
				if strings.HasPrefix(m[1], "krypton ") {
					cmds = append(cmds, Command{Source: fmt.Sprintf("%s:%d", name, i+1), Text: m[1]})
				}
			}
			continue
		}
		text = strings.TrimPrefix(text, "$ ")
		if !strings.HasPrefix(text, "krypton ") {
			continue
		}
		start := i
		for strings.HasSuffix(text, `\`) && i+1 < len(lines) {
			i++
			text = strings.TrimSpace(strings.TrimSuffix(text, `\`)) + " " + strings.TrimSpace(lines[i])
		}
		cmds = append(cmds, Command{Source: fmt.Sprintf("%s:%d", name, start+1), Text: text})
	}
	return cmds, nil
}

var (
	// word is a command or subcommand name.
	word = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	// flagToken is a flag as a command line or a usage synopsis writes it: -name, --name,
	// -name=value, [-name.
	flagToken = regexp.MustCompile(`^[\[(]?--?([a-z][a-z0-9-]*)`)
	// helpFlag is a flag line of the flag package's usage output.
	helpFlag = regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`)
	// helpCommand is a line of a command group's list.
	helpCommand = regexp.MustCompile(`(?m)^  ([a-z][a-z0-9-]*)  `)
)

// helpNode is what `krypton <path> -h` says: a group of commands, or a command and its flags.
type helpNode struct {
	subs  map[string]bool // a group's commands
	flags map[string]bool // a command's flags
}

// FlagChecker says whether the commands and flags a command line uses exist in the binary, from
// the binary's own help. It only ever runs `krypton help` and `krypton <command>... -h` for
// commands the help listed, so that checking a line never runs it.
type FlagChecker struct {
	Krypton string // the binary
	nodes   map[string]*helpNode
}

func (f *FlagChecker) node(path string) (*helpNode, error) {
	if n, ok := f.nodes[path]; ok {
		return n, nil
	}
	args := append(strings.Fields(path), "-h")
	if path == "" {
		args = []string{"help"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, f.Krypton, args...).CombinedOutput()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("krypton %s did not finish: %v", strings.Join(args, " "), ctx.Err())
	}
	first, _, _ := strings.Cut(string(out), "\n")
	want := strings.TrimSpace("Usage: krypton " + path)
	if !strings.HasPrefix(first, want+" ") {
		return nil, fmt.Errorf("krypton %s printed no usage: %s", strings.Join(args, " "), tail(string(out), 512))
	}
	n := &helpNode{}
	if strings.HasPrefix(first, want+" <command>") {
		n.subs = map[string]bool{}
		for _, m := range helpCommand.FindAllStringSubmatch(string(out), -1) {
			n.subs[m[1]] = true
		}
	} else {
		n.flags = map[string]bool{"h": true, "help": true}
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			n.flags[m[1]] = true
		}
	}
	if f.nodes == nil {
		f.nodes = map[string]*helpNode{}
	}
	f.nodes[path] = n
	return n, nil
}

// Check returns an error naming the command's source when it names no krypton command, or uses a
// flag that command does not define. It reads only up to the end of the krypton command (a pipe,
// a redirection, a comment). A group alone (`krypton tenant`) is fine.
func (f *FlagChecker) Check(c Command) error {
	text := strings.ReplaceAll(c.Text, `\|`, " ")
	if i := strings.IndexAny(text, "|#>;&"); i >= 0 {
		text = text[:i]
	}
	fields := strings.Fields(text)
	if len(fields) == 0 || fields[0] != "krypton" {
		return fmt.Errorf("%s: %s: not a krypton command", c.Source, c.Text)
	}
	path := ""
	n, err := f.node(path)
	if err != nil {
		return fmt.Errorf("%s: %v", c.Source, err)
	}
	rest := fields[1:]
	for n.subs != nil && len(rest) > 0 && word.MatchString(rest[0]) {
		if rest[0] == "help" {
			return nil // `krypton help`, `krypton tenant help`: help on any group
		}
		if !n.subs[rest[0]] {
			return fmt.Errorf("%s: %s: `krypton %s` is not a krypton command (`%s` lists them)", c.Source, c.Text,
				strings.TrimSpace(path+" "+rest[0]), strings.TrimSpace("krypton "+path+" -h"))
		}
		path = strings.TrimSpace(path + " " + rest[0])
		rest = rest[1:]
		if n, err = f.node(path); err != nil {
			return fmt.Errorf("%s: %v", c.Source, err)
		}
	}
	for _, t := range rest {
		m := flagToken.FindStringSubmatch(t)
		if m == nil {
			continue
		}
		if n.flags == nil {
			return fmt.Errorf("%s: %s: `krypton %s` is a group of commands: name one before %s", c.Source, c.Text, path, t)
		}
		if !n.flags[m[1]] {
			return fmt.Errorf("%s: %s: `krypton %s` has no flag -%s (krypton %s -h lists its flags)", c.Source, c.Text, path, m[1], path)
		}
	}
	return nil
}
