package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCLIAliases: an older verb runs the same command as the region's verb (`policy get` is
// `policy describe`), the listing names it, and no alias shadows a command of its group.
func TestCLIAliases(t *testing.T) {
	root := rootCommand()
	policy := root.find("policy")
	if policy == nil || policy.find("describe") == nil || policy.find("get") != policy.find("describe") {
		t.Fatal("`krypton policy get` does not run `krypton policy describe`")
	}
	var out bytes.Buffer
	if err := dispatch(context.Background(), root, []string{"policy", "help"}, &streams{out: &out, err: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "describe") || !strings.Contains(out.String(), "(also: get)") {
		t.Errorf("policy help does not list the alias:\n%s", out.String())
	}
	out.Reset()
	if err := dispatch(context.Background(), root, []string{"help", "policy", "get"}, &streams{out: &out, err: &out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Usage: krypton policy describe") {
		t.Errorf("help for the alias:\n%s", out.String())
	}
	var walk func(c *command, path string)
	walk = func(c *command, path string) {
		names := map[string]bool{}
		for _, sub := range c.sub {
			for _, n := range append([]string{sub.name}, sub.aliases...) {
				if names[n] {
					t.Errorf("%s: %q names two commands", path, n)
				}
				names[n] = true
			}
			walk(sub, path+" "+sub.name)
		}
	}
	walk(root, "krypton")
}
