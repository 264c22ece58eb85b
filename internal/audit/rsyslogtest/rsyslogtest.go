// Package rsyslogtest runs Debian's real rsyslogd as a syslog-over-TLS receiver (RFC 5425) for
// tests of the audit log's SIEM sink: imtcp with the gtls stream driver, mutual TLS with
// certificates of a test CA, every message from APP-NAME "krypton" written by omfile to a file
// the test reads. rsyslogd runs unprivileged-port, in the foreground (-n), with its own config
// (-f) and pid file (-i) in a temporary directory, and is stopped when the test ends.
//
// API:
//
//	s := rsyslogtest.Start(t, ca)   // skips without rsyslogd/rsyslog-gnutls; fails if KRYPTON_REQUIRE_PEERS is set
//	s.Addr                          // 127.0.0.1:port, stable across restarts
//	s.ClientTLS(cert)               // *tls.Config for a sink: trusts ca, presents cert
//	s.Stop()                        // SIGTERM, wait for the process to exit
//	s.Start()                       // a new rsyslogd on the same port and output file
//	s.Messages()                    // every message received so far, as rsyslog parsed it
//
// The main queue is Direct: a message rsyslog has read from a connection is in the output
// file before it reads the next batch, so what the file holds is what rsyslog accepted, and a
// loss the test sees is the sender's, not rsyslog's own queue discarding on shutdown.
package rsyslogtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// Server is one rsyslogd receiver, restartable on the same port.
type Server struct {
	t    testing.TB
	Addr string
	// Dir holds the config, certificates, pid file, output and rsyslog's own log.
	Dir string
	// Out is the file omfile writes the received messages to, one JSON object a line.
	Out string

	bin  string
	ca   *pki.CA
	conf string
	pid  string

	mu     sync.Mutex // guards cmd, exited and starts
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd's Wait returns
	starts int
}

// Required reports whether a missing rsyslogd fails the test instead of skipping it
// (KRYPTON_REQUIRE_PEERS, set by .ci/run, which installs rsyslog and rsyslog-gnutls).
func Required() bool { return os.Getenv("KRYPTON_REQUIRE_PEERS") != "" }

func missing(t testing.TB, msg string) {
	t.Helper()
	msg += " (Debian packages rsyslog and rsyslog-gnutls: apt-get install --no-install-recommends rsyslog rsyslog-gnutls)"
	if Required() {
		t.Fatal(msg + " and KRYPTON_REQUIRE_PEERS is set")
	}
	t.Skip(msg)
}

// find returns rsyslogd's path: on PATH, or in /usr/sbin (not on every user's PATH).
func find() (string, error) {
	if p, err := exec.LookPath("rsyslogd"); err == nil {
		return p, nil
	}
	const sbin = "/usr/sbin/rsyslogd"
	if _, err := os.Stat(sbin); err != nil {
		return "", errors.New("rsyslogd is not installed")
	}
	return sbin, nil
}

// Start writes a config and certificates (the server's issued by ca) to a temporary directory
// and starts rsyslogd, waiting until it completes a TLS handshake. It skips the test when
// rsyslogd or its gtls driver is missing, or fails it when KRYPTON_REQUIRE_PEERS is set.
func Start(t testing.TB, ca *pki.CA) *Server {
	t.Helper()
	bin, err := find()
	if err != nil {
		missing(t, err.Error())
	}
	// rsyslogd loads the driver only when a listener starts (a config check does not), so look
	// for it where rsyslog's packages put their modules.
	if gtls, _ := filepath.Glob("/usr/lib*/*/rsyslog/lmnsd_gtls.so"); len(gtls) == 0 {
		if gtls, _ = filepath.Glob("/usr/lib*/rsyslog/lmnsd_gtls.so"); len(gtls) == 0 {
			missing(t, "rsyslogd's gtls stream driver (lmnsd_gtls.so) is not installed")
		}
	}
	port, err := netutil.FreePort(false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{t: t, Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir, Out: filepath.Join(dir, "received.jsonl"),
		bin: bin, ca: ca, conf: filepath.Join(dir, "rsyslog.conf"), pid: filepath.Join(dir, "rsyslogd.pid")}

	srv, err := ca.IssueNode("siem", pki.NodeOptions{Region: "siem"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteFiles(filepath.Join(dir, "siem.pem"), filepath.Join(dir, "siem-key.pem")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.conf, []byte(s.config(port)), 0o644); err != nil {
		t.Fatal(err)
	}
	// A config check first: a config this rsyslogd does not take fails here, clearly.
	if out, err := exec.Command(bin, "-N1", "-f", s.conf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 -f %s: %v\n%s", s.conf, err, out)
	}
	t.Cleanup(s.kill)
	s.Start()
	return s
}

// config is rsyslog's configuration: one TLS listener on port requiring a client certificate
// of the CA (x509/certvalid), a Direct main queue, krypton's messages to Out as JSON lines with
// the fields rsyslog parsed, and rsyslog's own messages to internal.log.
func (s *Server) config(port int) string {
	q := strconv.Quote
	return fmt.Sprintf(`# Generated by rsyslogtest for one test.
global(workDirectory=%s
       DefaultNetstreamDriverCAFile=%s
       DefaultNetstreamDriverCertFile=%s
       DefaultNetstreamDriverKeyFile=%s)
main_queue(queue.type="Direct")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.Authmode="x509/certvalid")
input(type="imtcp" address="127.0.0.1" port="%d")
template(name="krypton-json" type="list" option.jsonf="on") {
  property(outname="pri" name="pri" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app-name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured-data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}
if $app-name == "krypton" then {
  action(type="omfile" file=%s template="krypton-json")
} else {
  action(type="omfile" file=%s)
}
`, q(s.Dir), q(filepath.Join(s.Dir, "ca.pem")), q(filepath.Join(s.Dir, "siem.pem")), q(filepath.Join(s.Dir, "siem-key.pem")),
		port, q(s.Out), q(filepath.Join(s.Dir, "internal.log")))
}

// ClientTLS returns a TLS configuration for a sink sending to s: it trusts the CA and presents
// cert (rsyslog requires a client certificate of the CA).
func (s *Server) ClientTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: s.ca.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// Start starts a new rsyslogd (after Stop) on the same port and output file, and waits until it
// completes a TLS handshake with a client certificate.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		s.t.Fatal("rsyslogtest: Start while rsyslogd runs")
	}
	s.starts++
	stderr, err := os.Create(filepath.Join(s.Dir, "stderr."+strconv.Itoa(s.starts)))
	if err != nil {
		s.mu.Unlock()
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "-n", "-f", s.conf, "-i", s.pid)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		stderr.Close()
		s.mu.Unlock()
		s.t.Fatalf("starting rsyslogd: %v", err)
	}
	exited := make(chan struct{})
	go func() { // owned by the Server: Stop and kill wait for it
		cmd.Wait()
		stderr.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	probe, err := s.ca.IssueOperator("rsyslogtest-probe", time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	cfg := s.ClientTLS(probe.TLSCertificate())
	deadline := time.Now().Add(time.Minute) // generous: the machine may be loaded
	for {
		d := tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := d.DialContext(ctx, "tcp", s.Addr)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			s.t.Fatalf("rsyslogd exited at start: %s\n%s", cmd.ProcessState, s.Logs())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("rsyslogd does not accept TLS on %s within a minute: %v\n%s", s.Addr, err, s.Logs())
		}
		time.Sleep(20 * time.Millisecond) // polling for the listener, bounded by the deadline above
	}
}

// Stop sends rsyslogd SIGTERM and waits for it to exit (a minute, then SIGKILL and a failure).
func (s *Server) Stop() {
	s.t.Helper()
	if err := s.signal(syscall.SIGTERM, time.Minute); err != nil {
		s.t.Fatal(err)
	}
}

// kill stops rsyslogd at the end of the test, if it runs.
func (s *Server) kill() {
	if err := s.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		s.t.Error(err)
	}
}

func (s *Server) signal(sig syscall.Signal, wait time.Duration) error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd, s.exited = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
		return nil
	case <-time.After(wait):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("rsyslogd did not exit within %v of %v; killed", wait, sig)
	}
}

// Logs returns rsyslogd's standard error of every start and its internal messages, for a
// failure message.
func (s *Server) Logs() string {
	var b strings.Builder
	paths, _ := filepath.Glob(filepath.Join(s.Dir, "stderr.*"))
	paths = append(paths, filepath.Join(s.Dir, "internal.log"))
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "--- %s\n%s", filepath.Base(p), data)
		}
	}
	return b.String()
}

// Message is one received message, as rsyslog parsed it.
type Message struct {
	Pri            string `json:"pri"`
	Hostname       string `json:"hostname"`
	AppName        string `json:"app-name"`
	ProcID         string `json:"procid"`
	MsgID          string `json:"msgid"`
	StructuredData string `json:"structured-data"`
	// Msg is the MSG part (for krypton: a UTF-8 BOM, which rsyslog keeps, and the audit line).
	Msg string `json:"msg"`
}

// Line returns the message without the BOM that starts it: the audit line.
func (m Message) Line() string { return strings.TrimPrefix(m.Msg, "\ufeff") }

// Messages returns every message in the output file so far. A last line without its newline
// (omfile mid-write) is left for the next call.
func (s *Server) Messages() ([]Message, error) {
	data, err := os.ReadFile(s.Out)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		data = nil
	}
	var out []Message
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("%s: %v: %q", s.Out, err, sc.Text())
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// Delivery is what WaitDelivered found.
type Delivery struct {
	Lines      int // lines of the audit files, each received at least once
	Received   int // krypton messages rsyslog wrote, copies included
	Duplicates int // messages beyond the first copy of a line
	MaxCopies  int // the most copies of one line
}

// WaitDelivered waits (up to timeout) until rsyslog has received every line of the audit files
// (each node's audit.log, read once now), then checks every received message: rsyslog parsed it
// as RFC 5424 with APP-NAME krypton, MSGID the event's kind and the event's seq and hash in its
// structured data; its MSG is, byte for byte, the line of that node and seq in the file (a
// duplicate is an exact copy); and each node's lines, one copy each in seq order, verify as a
// hash chain ending at the file's last hash. It fails the test on any difference.
func (s *Server) WaitDelivered(t testing.TB, timeout time.Duration, auditFiles ...string) Delivery {
	t.Helper()
	type key struct {
		node string
		seq  uint64
	}
	want := map[key]string{}
	nodes := map[string][]string{} // node: its lines in seq order
	for _, p := range auditFiles {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			data = data[:i+1]
		}
		for _, l := range strings.SplitAfter(string(data), "\n") {
			if l == "" {
				continue
			}
			line := strings.TrimSuffix(l, "\n")
			var e struct {
				Seq  uint64 `json:"seq"`
				Node string `json:"node"`
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			want[key{e.Node, e.Seq}] = line
			nodes[e.Node] = append(nodes[e.Node], line)
		}
	}
	var msgs []Message
	var missingKeys []key
	deadline := time.Now().Add(timeout)
	for {
		var err error
		if msgs, err = s.Messages(); err != nil {
			t.Fatal(err)
		}
		got := map[key]bool{}
		for _, m := range msgs {
			var e struct {
				Seq  uint64 `json:"seq"`
				Node string `json:"node"`
			}
			if json.Unmarshal([]byte(m.Line()), &e) == nil {
				got[key{e.Node, e.Seq}] = true
			}
		}
		missingKeys = missingKeys[:0]
		for k := range want {
			if !got[k] {
				missingKeys = append(missingKeys, k)
			}
		}
		if len(missingKeys) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v rsyslog has %d messages and lacks %d of the %d audit lines, e.g. %+v\n%s",
				timeout, len(msgs), len(missingKeys), len(want), missingKeys[0], s.Logs())
		}
		time.Sleep(50 * time.Millisecond) // polling the output file, bounded by the deadline above
	}

	d := Delivery{Lines: len(want)}
	copies := map[key]int{}
	firstCopy := map[key]string{}
	for _, m := range msgs {
		line := m.Line()
		var e struct {
			Seq  uint64 `json:"seq"`
			Node string `json:"node"`
			Kind string `json:"kind"`
			Hash string `json:"hash"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("rsyslog received a message whose MSG is not an audit line: %v: %+v", err, m)
		}
		k := key{e.Node, e.Seq}
		if w, ok := want[k]; !ok {
			// A line written after the files were read: not checked here.
			continue
		} else if line != w {
			t.Fatalf("node %s seq %d: rsyslog's MSG\n %s\nis not the audit line\n %s", e.Node, e.Seq, line, w)
		}
		if m.AppName != "krypton" || m.MsgID != e.Kind || !strings.HasPrefix(m.Msg, "\ufeff") ||
			!strings.Contains(m.StructuredData, fmt.Sprintf(`seq="%d"`, e.Seq)) ||
			!strings.Contains(m.StructuredData, `hash="`+e.Hash+`"`) {
			t.Fatalf("node %s seq %d: rsyslog parsed app-name %q msgid %q structured-data %q (want krypton, %s, seq and hash)",
				e.Node, e.Seq, m.AppName, m.MsgID, m.StructuredData, e.Kind)
		}
		d.Received++
		if copies[k] == 0 {
			firstCopy[k] = line
		}
		copies[k]++
		if copies[k] > 1 {
			d.Duplicates++
		}
		d.MaxCopies = max(d.MaxCopies, copies[k])
	}
	// What the SIEM holds, one copy of each line in seq order, is each node's chain: it
	// verifies and ends at the file's last line.
	for node, lines := range nodes {
		var received strings.Builder
		for seq := uint64(1); seq <= uint64(len(lines)); seq++ {
			received.WriteString(firstCopy[key{node, seq}] + "\n")
		}
		res, err := audit.Verify(strings.NewReader(received.String()))
		if err != nil {
			t.Fatalf("node %s: the lines rsyslog received do not verify: %v", node, err)
		}
		var last struct {
			Hash string `json:"hash"`
		}
		json.Unmarshal([]byte(lines[len(lines)-1]), &last)
		if res.Lines != len(lines) || res.LastHash != last.Hash {
			t.Fatalf("node %s: %d received lines verified, ending at hash %s; the file has %d ending at %s",
				node, res.Lines, res.LastHash, len(lines), last.Hash)
		}
	}
	return d
}
