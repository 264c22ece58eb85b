package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// shellSplit splits a command line as a POSIX shell would for the words a governed region's
// refusal prints: plain words and single-quoted strings, a quote inside being closed, escaped and reopened.
func shellSplit(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\'':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '\'':
			quoted, inWord = true, true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case c == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestGovernedRegionNamesAWorkingCommand: a region that follows governance refuses `tenant
// create`, `key create`, `key revoke`, `tenant lock`, `tenant unlock` and `tenant set-quota` given at -addr, and the
// command its refusal names, run as printed (with the same certificate flags), makes the change
// at governance, which the region then applies from the feed.
func TestGovernedRegionNamesAWorkingCommand(t *testing.T) {
	g := governancetest.Start(t, 1, governancetest.WithHeartbeat(100*time.Millisecond))
	r := regiontest.Start(t, 1, regiontest.WithCA(g.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...))
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, r.CA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	op, err := r.CA.IssueOperator("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "op.pem"), filepath.Join(dir, "op-key.pem")
	if err := op.WriteFiles(cert, key); err != nil {
		t.Fatal(err)
	}
	conn := []string{"-ca-cert", ca, "-client-cert", cert, "-client-key", key, "-timeout", "20s"}
	krypton := func(words []string, flags ...string) (string, string, int) {
		t.Helper()
		i := 0
		for i < len(words) && !strings.HasPrefix(words[i], "-") && isCommandWord(words[:i+1]) {
			i++
		}
		full := append(append(append(append([]string{}, words[:i]...), conn...), flags...), words[i:]...)
		stdout, stderr := filepath.Join(dir, "stdout"), filepath.Join(dir, "stderr")
		o, _ := os.Create(stdout)
		e, _ := os.Create(stderr)
		code := run(context.Background(), full, o, e)
		o.Close()
		e.Close()
		out, _ := os.ReadFile(stdout)
		errOut, _ := os.ReadFile(stderr)
		t.Logf("krypton %s -> %d\n%s%s", strings.Join(full, " "), code, out, errOut)
		return string(out), string(errOut), code
	}
	st := r.Nodes[0].State()
	steps := []struct {
		region []string // the region-level command, refused
		hint   string   // the start of the command it names
		done   func() bool
	}{
		{[]string{"tenant", "create", "-anchor", r.Anchor, "acme"}, "krypton tenant create -governance ", func() bool {
			_, err := st.Tenant("acme")
			return err == nil
		}},
		{[]string{"key", "create", "acme", "payments"}, "krypton service create -governance ", func() bool {
			_, err := st.Service("acme", "payments")
			return err == nil
		}},
		{[]string{"tenant", "lock", "-reason", "incident 7: it's $HOME", "acme"}, "krypton tenant lock -governance ", func() bool {
			t, err := st.Tenant("acme")
			return err == nil && t.Status == fsm.StatusLocked && strings.Contains(t.LockReason, "incident 7: it's $HOME")
		}},
		{[]string{"tenant", "unlock", "acme"}, "krypton tenant unlock -governance ", func() bool {
			t, err := st.Tenant("acme")
			return err == nil && t.Status == fsm.StatusActive
		}},
		{[]string{"tenant", "set-quota", "-rate", "5", "-concurrency", "3", "acme", "payments"}, "krypton tenant set-quota -governance ", func() bool {
			s, err := st.Service("acme", "payments")
			return err == nil && s.Quota == fsm.Quota{Rate: 5, Concurrency: 3}
		}},
		{[]string{"key", "revoke", "-reason", "leaked", "acme", "payments", "1"}, "krypton revoke -governance ", func() bool {
			kv, err := st.KeyVersion("acme", "payments", 1)
			return err == nil && kv.Status == fsm.StatusRevoked
		}},
	}
	for _, s := range steps {
		_, errOut, code := krypton(s.region, "-addr", r.Cfgs[0].RPCAddr)
		start := strings.Index(errOut, "`krypton ")
		end := strings.LastIndex(errOut, "`")
		if code != 1 || !strings.Contains(errOut, "FailedPrecondition") || start < 0 || end <= start {
			t.Fatalf("krypton %s on a governed region: exit %d, %q; want FailedPrecondition naming a command", strings.Join(s.region, " "), code, errOut)
		}
		hint := errOut[start+1 : end]
		if !strings.HasPrefix(hint, s.hint) || strings.Contains(hint, "<") {
			t.Fatalf("the refusal names %q, want a complete %q...", hint, s.hint)
		}
		words := shellSplit(t, hint)
		if _, errOut, code := krypton(words[1:]); code != 0 {
			t.Fatalf("the named command %q: exit %d: %s", hint, code, errOut)
		}
		clustertest.Eventually(t, 30*time.Second, "the region applying "+hint, s.done)
	}

	// The operator's reset of the region's learned voters: governance forgets them, and the
	// region's own reports (each with its commit index) teach them again.
	voters := func() []string {
		st, err := g.Client(0).Status(g.Context(10*time.Second), &kv1.GovernanceStatusRequest{})
		if err != nil {
			return nil
		}
		for _, l := range st.GetRegions() {
			if l.GetCursor().GetRegion() == "eu" {
				return l.GetCursor().GetVoters()
			}
		}
		return nil
	}
	clustertest.Eventually(t, 30*time.Second, "governance learning eu's voters", func() bool { return len(voters()) == 1 })
	out, errOut, code := krypton([]string{"governance", "region", "reset-voters", "-governance", g.Addr(0), "-reason", "test", "eu"})
	if code != 0 || !strings.Contains(out, "forgot eu's voters") {
		t.Fatalf("governance region reset-voters: exit %d: %s%s", code, out, errOut)
	}
	clustertest.Eventually(t, 30*time.Second, "eu's reports teaching its voters again", func() bool { return len(voters()) == 1 })
}
