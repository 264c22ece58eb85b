package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorLineHasOnePrefix checks the printer every error leaves the process through: whatever a
// wrapped error brought along, the line starts with exactly one "krypton: ".
func TestErrorLineHasOnePrefix(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("boom"), "krypton: boom"},
		{errors.New("krypton: boom"), "krypton: boom"},
		{fmt.Errorf("krypton: %w", errors.New("krypton: boom")), "krypton: boom"},
		{fmt.Errorf("krypton:%w", errors.New(" krypton: boom")), "krypton: boom"},
		{usagef("server: -data-dir is required"), "krypton: server: -data-dir is required"},
		// "krypton" inside the message is not a prefix
		{errors.New("not a krypton snapshot"), "krypton: not a krypton snapshot"},
	} {
		if got := errorLine(tc.err); got != tc.want {
			t.Errorf("errorLine(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestEveryErrorPathHasOnePrefix runs every command of the tree the way a newcomer gets it wrong
// (an unknown flag for a command, an unknown subcommand for a group) through run, the function main
// calls, and checks that stderr never says "krypton: krypton".
func TestEveryErrorPathHasOnePrefix(t *testing.T) {
	dir := t.TempDir()
	var lines [][]string
	var walk func(c *command, path []string)
	walk = func(c *command, path []string) {
		if len(c.sub) > 0 {
			lines = append(lines, append(append([]string{}, path...), "frobnicate"))
			for _, sub := range c.sub {
				walk(sub, append(append([]string{}, path...), sub.name))
			}
			return
		}
		lines = append(lines, append(append([]string{}, path...), "-no-such-flag"))
	}
	walk(rootCommand(), nil)
	lines = append(lines,
		[]string{"wrap", "an-argument"},
		[]string{"server"},
		[]string{"status", "-ca-cert", filepath.Join(dir, "missing.pem")},
	)
	if len(lines) < 40 {
		t.Fatalf("walked only %d command lines; the tree is bigger than that", len(lines))
	}
	for i, args := range lines {
		stdout, err := os.Create(filepath.Join(dir, fmt.Sprintf("stdout-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		stderr, err := os.Create(filepath.Join(dir, fmt.Sprintf("stderr-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		code := run(context.Background(), args, stdout, stderr)
		stdout.Close()
		stderr.Close()
		b, err := os.ReadFile(stderr.Name())
		if err != nil {
			t.Fatal(err)
		}
		errOut := string(b)
		if code == 0 {
			t.Errorf("krypton %s: exit 0, want a failure", strings.Join(args, " "))
			continue
		}
		if strings.Contains(errOut, "krypton: krypton") {
			t.Errorf("krypton %s: double prefix:\n%s", strings.Join(args, " "), errOut)
		}
		last := lastLine(errOut)
		if !strings.HasPrefix(last, "krypton: ") || strings.HasPrefix(strings.TrimPrefix(last, "krypton: "), "krypton") {
			t.Errorf("krypton %s: the error line %q does not start with exactly one \"krypton: \"", strings.Join(args, " "), last)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
