package main

import (
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/kryptonkms/krypton/internal/netutil"
)

// TestMain lets the test binary act as the krypton command inside script tests, as age does.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"krypton": func() { os.Exit(runMain()) },
	})
}

// TestScripts runs the CLI behaviour written down in testdata/script/*.txtar.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"freeport":   cmdFreeport,
			"eventually": cmdEventually,
		},
	})
}

// cmdFreeport sets each named variable to a port free on 127.0.0.1 for TCP and UDP (memberlist
// binds both), so that scripts can start real servers side by side.
func cmdFreeport(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: freeport VAR...")
	}
	seen := map[int]bool{}
	for _, name := range args {
		for {
			port, err := netutil.FreePort(true)
			ts.Check(err)
			if !seen[port] {
				seen[port] = true
				ts.Setenv(name, strconv.Itoa(port))
				break
			}
		}
	}
}

// cmdEventually runs a program again every 200 ms until it succeeds with stdout matching a
// regular expression, or the seconds run out:
//
//	eventually 30 '"leader_id": "node-' krypton status -format json
//
// Its last output is what the following stdout and stderr lines check.
func cmdEventually(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: eventually SECONDS REGEXP program [args...]")
	}
	secs, err := strconv.Atoi(args[0])
	ts.Check(err)
	re, err := regexp.Compile(args[1])
	ts.Check(err)
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		err := ts.Exec(args[2], args[3:]...)
		if err == nil && re.MatchString(ts.ReadFile("stdout")) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s did not succeed with output matching %q within %ds (last error: %v)", args[2], args[1], secs, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
