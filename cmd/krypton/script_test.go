package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
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
			"httpget":    cmdHTTPGet,
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

// cmdHTTPGet fetches a URL and checks the status code:
//
//	httpget http://127.0.0.1:$H/debug/pprof/cmdline 404
//	httpget -ca pki/ca.pem -cert pki/operator-admin.pem -key pki/operator-admin-key.pem https://127.0.0.1:$P/debug/pprof/heap 200
//	! httpget https://127.0.0.1:$P/debug/pprof/cmdline
//
// Negated, the request must get no answer at all (a refused TLS handshake, a closed connection):
// "refused" means the server said nothing, not an error page. Without -ca an https server is not
// verified (what is checked is whether the server refuses the client).
func cmdHTTPGet(ts *testscript.TestScript, neg bool, args []string) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	var certFile, keyFile string
	for len(args) >= 2 && (args[0] == "-ca" || args[0] == "-cert" || args[0] == "-key") {
		switch args[0] {
		case "-ca":
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(ts.ReadFile(args[1]))) {
				ts.Fatalf("httpget: no certificate in %s", args[1])
			}
			tc.RootCAs = pool
		case "-cert":
			certFile = ts.MkAbs(args[1])
		case "-key":
			keyFile = ts.MkAbs(args[1])
		}
		args = args[2:]
	}
	if tc.RootCAs == nil {
		tc.InsecureSkipVerify = true
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		ts.Check(err)
		tc.Certificates = []tls.Certificate{c}
	}
	if (neg && len(args) != 1) || (!neg && len(args) != 2) {
		ts.Fatalf("usage: httpget [-ca F] [-cert F -key F] URL STATUS, or ! httpget [...] URL")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	resp, err := c.Get(args[0])
	if neg {
		if err == nil {
			resp.Body.Close()
			ts.Fatalf("GET %s answered %d, want no answer", args[0], resp.StatusCode)
		}
		ts.Logf("GET %s: %v", args[0], err)
		return
	}
	ts.Check(err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if strconv.Itoa(resp.StatusCode) != args[1] {
		ts.Fatalf("GET %s answered %d, want %s", args[0], resp.StatusCode, args[1])
	}
}
