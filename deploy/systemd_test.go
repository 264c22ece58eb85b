package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/internal/docstest"
)

// unit is one systemd unit of deploy/systemd and the krypton command it runs.
type unit struct {
	file    string
	command string // the krypton subcommand ExecStart runs
	dataDir bool   // whether it keeps state in -data-dir
}

var units = []unit{
	{"systemd/krypton-node.service", "server", true},
	{"systemd/krypton-governance.service", "governance server", true},
	{"systemd/krypton-gateway.service", "gateway", false},
}

// unitSettings returns the unit's Key=Value lines of [Service] (continuations joined), each key's
// values in order.
func unitSettings(t *testing.T, text string) map[string][]string {
	t.Helper()
	settings := map[string][]string{}
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		for strings.HasSuffix(l, `\`) && i+1 < len(lines) {
			i++
			l = strings.TrimSpace(strings.TrimSuffix(l, `\`)) + " " + strings.TrimSpace(lines[i])
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "[") {
			section = l
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("not a setting: %q", l)
		}
		if section == "[Service]" {
			settings[k] = append(settings[k], v)
		}
	}
	return settings
}

var kryptonEnv = regexp.MustCompile(`\bKRYPTON_[A-Z0-9_]+\b`)

// TestSystemdUnits: each unit runs a real krypton command with flags the binary defines (and
// names in its comments only KRYPTON_ variables that are flags of that command), is hardened
// (NoNewPrivileges, ProtectSystem=strict, no capabilities, LimitMEMLOCK, LimitCORE=0, an
// EnvironmentFile for secrets, writable only where it keeps -data-dir), and passes
// `systemd-analyze verify` with no warning at all.
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	bin := kryptonBinary(t)
	fc := flagChecker(t)
	for _, u := range units {
		data, err := os.ReadFile(u.file)
		if err != nil {
			t.Fatal(err)
		}
		s := unitSettings(t, string(data))
		want := map[string]string{
			"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
			"LimitCORE": "0", "CapabilityBoundingSet": "", "User": "krypton", "MemoryDenyWriteExecute": "yes",
		}
		for k, v := range want {
			if got := s[k]; len(got) != 1 || got[0] != v {
				t.Errorf("%s: %s=%q, want %s=%s", u.file, k, got, k, v)
			}
		}
		for _, k := range []string{"LimitMEMLOCK", "EnvironmentFile", "ExecReload"} {
			if len(s[k]) != 1 || s[k][0] == "" {
				t.Errorf("%s: no %s", u.file, k)
			}
		}
		if len(s["ExecStart"]) != 1 {
			t.Fatalf("%s: want one ExecStart, got %q", u.file, s["ExecStart"])
		}
		execStart := s["ExecStart"][0]
		cmd := strings.Replace(execStart, "/usr/local/bin/krypton ", "krypton ", 1)
		if !strings.HasPrefix(cmd, "krypton "+u.command+" ") {
			t.Errorf("%s: ExecStart=%s, want /usr/local/bin/krypton %s ...", u.file, execStart, u.command)
		}
		if err := fc.Check(docstest.Command{Source: u.file, Text: cmd}); err != nil {
			t.Error(err)
		}
		for _, v := range kryptonEnv.FindAllString(string(data), -1) {
			flag := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "KRYPTON_")), "_", "-")
			if err := fc.Check(docstest.Command{Source: u.file, Text: "krypton " + u.command + " -" + flag}); err != nil {
				t.Errorf("%s names %s: %v", u.file, v, err)
			}
		}
		if strings.Contains(execStart, "-gossip-key ") || strings.Contains(execStart, "pin-value") {
			t.Errorf("%s: a secret on the command line: %s", u.file, execStart)
		}
		if u.dataDir {
			f := strings.Fields(execStart)
			dir := ""
			for i := range f[:len(f)-1] {
				if f[i] == "-data-dir" {
					dir = f[i+1]
				}
			}
			if dir == "" || len(s["ReadWritePaths"]) != 1 || s["ReadWritePaths"][0] != dir ||
				len(s["StateDirectory"]) != 1 || "/var/lib/"+s["StateDirectory"][0] != dir {
				t.Errorf("%s: -data-dir %q, ReadWritePaths=%q, StateDirectory=%q: want the same directory", u.file, dir, s["ReadWritePaths"], s["StateDirectory"])
			}
		}
	}

	analyze := requireTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	for _, u := range units {
		data, err := os.ReadFile(u.file)
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart's program exists: point it at the test's build.
		p := filepath.Join(dir, filepath.Base(u.file))
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/krypton", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", p).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u.file, err, out)
		}
	}
}
