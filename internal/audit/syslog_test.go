package audit_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/leaktest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/wrap"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }

// syslogMsg is one RFC 5424 message as the test receiver parsed it.
type syslogMsg struct {
	pri, version                        int
	timestamp, host, app, procid, msgid string
	sdID                                string
	params                              map[string]string
	msg                                 []byte // after the BOM
	frame                               []byte // the whole message, for the key-material check
	clientIdentity                      string // the client certificate's identity, if any
}

// receiver is an in-process syslog-over-TLS receiver (RFC 5425) that
// parses octet-counted frames strictly and hands each message to msgs.
type receiver struct {
	ln   net.Listener
	msgs chan syslogMsg
	errs chan error
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
}

type pkiFix struct {
	ca     *pki.CA
	server tls.Certificate
	client tls.Certificate
}

func newPKI(t *testing.T) pkiFix {
	t.Helper()
	ca, err := pki.NewCA("syslog test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueNode("siem", pki.NodeOptions{Region: "test"})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ca.IssueNode("n1", pki.NodeOptions{Region: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return pkiFix{ca: ca, server: srv.TLSCertificate(), client: cl.TLSCertificate()}
}

// startReceiver listens on addr ("127.0.0.1:0" for any port) and requires
// a client certificate of fix's CA.
func startReceiver(t *testing.T, fix pkiFix, addr string, msgs chan syslogMsg) *receiver {
	t.Helper()
	cfg := pki.ServerTLSConfig(fix.ca.Pool(), fix.server)
	cfg.MinVersion = tls.VersionTLS12
	ln, err := tls.Listen("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{ln: ln, msgs: msgs, errs: make(chan error, 16)}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *receiver) addr() string { return r.ln.Addr().String() }

func (r *receiver) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c.(*tls.Conn))
	}
}

// close stops listening, drops every connection and waits for its
// goroutines: the receiver going down.
func (r *receiver) close() {
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *receiver) serve(c *tls.Conn) {
	defer r.wg.Done()
	defer c.Close()
	if err := c.Handshake(); err != nil {
		return
	}
	var who string
	if pc := c.ConnectionState().PeerCertificates; len(pc) > 0 {
		if id, err := pki.IdentityFromCertificate(pc[0]); err == nil {
			who = id.String()
		}
	}
	br := bufio.NewReader(c)
	for {
		m, err := readFrame(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				select {
				case r.errs <- err:
				default:
				}
			}
			return
		}
		m.clientIdentity = who
		r.msgs <- m
	}
}

// readFrame reads "MSG-LEN SP SYSLOG-MSG" (RFC 6587 octet counting) and
// parses the message (RFC 5424).
func readFrame(br *bufio.Reader) (syslogMsg, error) {
	lenStr, err := br.ReadString(' ')
	if err != nil {
		return syslogMsg{}, err
	}
	n, err := strconv.Atoi(strings.TrimSuffix(lenStr, " "))
	if err != nil || n <= 0 || lenStr[0] == '0' {
		return syslogMsg{}, fmt.Errorf("bad MSG-LEN %q", lenStr)
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(br, frame); err != nil {
		return syslogMsg{}, err
	}
	m, err := parse5424(frame)
	m.frame = frame
	return m, err
}

func parse5424(b []byte) (syslogMsg, error) {
	var m syslogMsg
	if len(b) == 0 || b[0] != '<' {
		return m, errors.New("no PRI")
	}
	end := bytes.IndexByte(b, '>')
	if end < 2 || end > 4 {
		return m, errors.New("bad PRI")
	}
	var err error
	if m.pri, err = strconv.Atoi(string(b[1:end])); err != nil {
		return m, err
	}
	fields := strings.SplitN(string(b[end+1:]), " ", 7)
	if len(fields) != 7 {
		return m, errors.New("short header")
	}
	if m.version, err = strconv.Atoi(fields[0]); err != nil || m.version != 1 {
		return m, fmt.Errorf("VERSION %q", fields[0])
	}
	m.timestamp, m.host, m.app, m.procid, m.msgid = fields[1], fields[2], fields[3], fields[4], fields[5]
	if _, err := time.Parse(time.RFC3339Nano, m.timestamp); err != nil {
		return m, fmt.Errorf("TIMESTAMP: %v", err)
	}
	if frac := strings.IndexByte(m.timestamp, '.'); frac >= 0 && strings.IndexByte(m.timestamp, 'Z')-frac-1 > 6 {
		return m, errors.New("TIMESTAMP has more than 6 fraction digits")
	}
	rest := []byte(fields[6])
	if rest[0] == '-' {
		rest = rest[1:]
	} else {
		if rest, err = m.parseSD(rest); err != nil {
			return m, err
		}
	}
	if !bytes.HasPrefix(rest, []byte(" \xef\xbb\xbf")) {
		return m, errors.New("MSG does not start with SP BOM")
	}
	m.msg = rest[4:]
	return m, nil
}

// parseSD parses one SD-ELEMENT with its escapes and returns what follows.
func (m *syslogMsg) parseSD(b []byte) ([]byte, error) {
	if b[0] != '[' {
		return nil, errors.New("SD does not start with [")
	}
	i := 1
	for i < len(b) && b[i] != ' ' && b[i] != ']' {
		i++
	}
	m.sdID = string(b[1:i])
	m.params = map[string]string{}
	for i < len(b) && b[i] == ' ' {
		i++
		j := i
		for j < len(b) && b[j] != '=' {
			if b[j] == ' ' || b[j] == ']' || b[j] == '"' || b[j] < 33 || b[j] > 126 {
				return nil, fmt.Errorf("bad PARAM-NAME byte %q", b[j])
			}
			j++
		}
		name := string(b[i:j])
		if len(name) == 0 || len(name) > 32 || j+1 >= len(b) || b[j+1] != '"' {
			return nil, fmt.Errorf("bad SD-PARAM %q", name)
		}
		j += 2
		var v []byte
		for ; j < len(b) && b[j] != '"'; j++ {
			if b[j] == '\\' && j+1 < len(b) && (b[j+1] == '"' || b[j+1] == '\\' || b[j+1] == ']') {
				j++
			} else if b[j] == ']' {
				return nil, errors.New("unescaped ] in PARAM-VALUE")
			}
			v = append(v, b[j])
		}
		if j >= len(b) {
			return nil, errors.New("unterminated PARAM-VALUE")
		}
		if _, dup := m.params[name]; dup {
			return nil, fmt.Errorf("duplicate SD-PARAM %q", name)
		}
		m.params[name] = string(v)
		i = j + 1
	}
	if i >= len(b) || b[i] != ']' {
		return nil, errors.New("SD-ELEMENT not closed")
	}
	return b[i+1:], nil
}

// next waits for the next message (or fails the test after a minute:
// generous, the machine may be loaded).
func next(t *testing.T, r *receiver, msgs chan syslogMsg) syslogMsg {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case err := <-r.errs:
		t.Fatalf("receiver: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("no syslog message within a minute")
	}
	panic("unreachable")
}

func newSink(t *testing.T, fix pkiFix, addr string, edit func(*audit.SyslogConfig)) *audit.Syslog {
	t.Helper()
	cfg := audit.SyslogConfig{
		Addr:       addr,
		TLS:        &tls.Config{RootCAs: fix.ca.Pool(), Certificates: []tls.Certificate{fix.client}},
		Hostname:   "node-1.example",
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := audit.NewSyslog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSyslogFields(t *testing.T) {
	fix := newPKI(t)
	msgs := make(chan syslogMsg, 64)
	r := startReceiver(t, fix, "127.0.0.1:0", msgs)
	reg := prometheus.NewRegistry()
	sink := newSink(t, fix, r.addr(), func(c *audit.SyslogConfig) { c.Registerer = reg })

	var file bytes.Buffer
	l, err := audit.New(&file, audit.Options{Node: "n1", Forward: sink.Forward})
	if err != nil {
		t.Fatal(err)
	}
	events := []audit.Event{
		{Kind: audit.KindKeyRotate, Actor: "spiffe://krypton/operator/alice", Tenant: "acme", Service: "payments", Version: 3, RequestID: "r-1"},
		{Kind: audit.KindCallRefused, Actor: "oidc:https://idp.example.com#bob", Code: "PermissionDenied",
			Reason: `quote " backslash \ bracket ] done`, Detail: map[string]string{"method": "/krypton.v1.AdminService/CreateTenant", "odd key=]": "é"}},
		{Kind: audit.KindKeyRevoke, Tenant: "acme", Service: "payments", Version: 2},
	}
	for _, e := range events {
		if err := l.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	lines := bytes.SplitAfter(file.Bytes(), []byte("\n"))
	for i, e := range events {
		m := next(t, r, msgs)
		line := bytes.TrimSuffix(lines[i], []byte("\n"))
		wantSev := map[string]int{audit.KindKeyRotate: 6, audit.KindCallRefused: 4, audit.KindKeyRevoke: 5}[e.Kind]
		if m.pri != 10*8+wantSev {
			t.Errorf("event %d: PRI %d, want %d", i, m.pri, 10*8+wantSev)
		}
		if m.host != "node-1.example" || m.app != "krypton" || m.msgid != e.Kind || m.sdID != audit.SyslogSDID {
			t.Errorf("event %d: header %q %q %q, SD-ID %q", i, m.host, m.app, m.msgid, m.sdID)
		}
		if m.clientIdentity != "spiffe://krypton/region/test/node/n1" {
			t.Errorf("receiver saw client %q, want the sink's certificate", m.clientIdentity)
		}
		// The message is the audit line byte for byte: the SIEM can verify it.
		if !bytes.Equal(m.msg, line) {
			t.Errorf("event %d: MSG\n %s\nwant the audit line\n %s", i, m.msg, line)
		}
		var hash string
		if j := bytes.LastIndex(line, []byte(`"hash":"`)); j >= 0 {
			hash = string(line[j+8 : j+8+64])
		}
		want := map[string]string{"seq": strconv.Itoa(i + 1), "node": "n1", "kind": e.Kind, "hash": hash}
		for k, v := range map[string]string{"actor": e.Actor, "tenant": e.Tenant, "service": e.Service,
			"code": e.Code, "reason": e.Reason, "request-id": e.RequestID} {
			if v != "" {
				want[k] = v
			}
		}
		if e.Version != 0 {
			want["version"] = strconv.Itoa(int(e.Version))
		}
		for k, v := range want {
			if m.params[k] != v {
				t.Errorf("event %d: SD-PARAM %s = %q, want %q", i, k, m.params[k], v)
			}
		}
		if len(m.params["prev"]) != 64 || m.params["prev"] == hash {
			t.Errorf("event %d: prev %q", i, m.params["prev"])
		}
		if e.Detail != nil {
			if m.params["detail.method"] != e.Detail["method"] || m.params["detail.odd_key__"] != "é" {
				t.Errorf("event %d: detail params %v", i, m.params)
			}
		}
	}
	waitFor(t, "sent_total to reach 3", func() bool { return metricValue(t, reg, "krypton_audit_syslog_sent_total") == 3 })
}

// metricValue reads the value of the counter or gauge name from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestSyslogReconnects(t *testing.T) {
	fix := newPKI(t)
	msgs := make(chan syslogMsg, 64)
	r := startReceiver(t, fix, "127.0.0.1:0", msgs)
	addr := r.addr()
	// Every line sent is held for a resend (however slow the machine).
	sink := newSink(t, fix, addr, func(c *audit.SyslogConfig) { c.ResendWindow = time.Hour })

	var file bytes.Buffer
	l, err := audit.New(&file, audit.Options{Node: "n1", Forward: sink.Forward})
	if err != nil {
		t.Fatal(err)
	}
	record := func(i int) {
		t.Helper()
		if err := l.Record(audit.Event{Kind: audit.KindKeyCreate, Tenant: "acme", Version: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	record(1)
	if m := next(t, r, msgs); m.params["seq"] != "1" {
		t.Fatalf("first message seq %q", m.params["seq"])
	}

	// The receiver goes down. The sink notices (its reader sees the close);
	// lines recorded meanwhile wait in the queue; Record never blocks.
	r.close()
	waitFor(t, "the sink to notice the receiver is gone", func() bool { return !sink.Stats().Connected })
	for i := 2; i <= 4; i++ {
		record(i)
	}
	if q := sink.Stats().Queued; q == 0 {
		t.Fatal("lines recorded while the receiver is down are not queued")
	}

	// It comes back on the same address: the line sent before the break is
	// sent again (the receiver may not have read it: syslog has no
	// acknowledgements), then the queued lines, in order.
	r2 := startReceiver(t, fix, addr, msgs)
	for want := 1; want <= 4; want++ {
		if m := next(t, r2, msgs); m.params["seq"] != strconv.Itoa(want) {
			t.Fatalf("after reconnection got seq %q, want %d", m.params["seq"], want)
		}
	}
	record(5)
	if m := next(t, r2, msgs); m.params["seq"] != "5" {
		t.Fatalf("got seq %q, want 5", m.params["seq"])
	}
	if st := sink.Stats(); st.Resent != 1 {
		t.Fatalf("stats %+v, want 1 line resent", st)
	}
}

// TestSyslogResendWindow: a line sent longer than ResendWindow before the
// connection broke is not sent again; one within it is. The window runs on
// a test clock.
func TestSyslogResendWindow(t *testing.T) {
	fix := newPKI(t)
	msgs := make(chan syslogMsg, 64)
	r := startReceiver(t, fix, "127.0.0.1:0", msgs)
	addr := r.addr()
	var clock atomic.Int64 // seconds
	sink, err := audit.NewSyslogClock(audit.SyslogConfig{
		Addr:         addr,
		TLS:          &tls.Config{RootCAs: fix.ca.Pool(), Certificates: []tls.Certificate{fix.client}},
		MinBackoff:   5 * time.Millisecond,
		MaxBackoff:   50 * time.Millisecond,
		ResendWindow: 10 * time.Second,
	}, func() time.Time { return time.Unix(clock.Load(), 0) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	var file bytes.Buffer
	l, err := audit.New(&file, audit.Options{Node: "n1", Forward: sink.Forward})
	if err != nil {
		t.Fatal(err)
	}
	record := func() {
		t.Helper()
		if err := l.Record(audit.Event{Kind: audit.KindKeyCreate}); err != nil {
			t.Fatal(err)
		}
	}
	record()
	next(t, r, msgs)
	waitFor(t, "line 1 sent", func() bool { return sink.Stats().Sent == 1 })
	clock.Store(11) // line 1 is now older than the window
	record()
	next(t, r, msgs)
	waitFor(t, "line 2 sent", func() bool { return sink.Stats().Sent == 2 })
	clock.Store(15) // line 2 is 4 s old, within the window
	r.close()
	waitFor(t, "the sink to notice the receiver is gone", func() bool { return !sink.Stats().Connected })
	r2 := startReceiver(t, fix, addr, msgs)
	record()
	for _, want := range []string{"2", "3"} {
		if m := next(t, r2, msgs); m.params["seq"] != want {
			t.Fatalf("after the reconnection got seq %q, want %s (line 2 resent, line 1 not)", m.params["seq"], want)
		}
	}
	if st := sink.Stats(); st.Resent != 1 {
		t.Fatalf("stats %+v, want 1 line resent", st)
	}
}

// waitFor waits (generously: the machine may be loaded) until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	clustertest.Eventually(t, time.Minute, what, cond)
}

func TestSyslogDropsOldestWhenFull(t *testing.T) {
	fix := newPKI(t)
	// Nobody listens here: every line stays queued.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	reg := prometheus.NewRegistry()
	sink := newSink(t, fix, addr, func(c *audit.SyslogConfig) { c.QueueSize = 4; c.Registerer = reg })
	var file bytes.Buffer
	l, err := audit.New(&file, audit.Options{Forward: sink.Forward})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := l.Record(audit.Event{Kind: audit.KindKeyCreate, Version: uint32(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	st := sink.Stats()
	if st.Queued != 4 || st.Dropped != 6 {
		t.Fatalf("stats %+v, want 4 queued and 6 dropped", st)
	}
	if got := metricValue(t, reg, "krypton_audit_syslog_dropped_total"); got != 6 {
		t.Fatalf("dropped_total = %v", got)
	}
	// The file has every line.
	if res, err := audit.Verify(&file); err != nil || res.Lines != 10 {
		t.Fatalf("file: %+v %v", res, err)
	}
	// The newest lines are the ones kept: start a receiver there and see.
	msgs := make(chan syslogMsg, 16)
	r := startReceiver(t, fix, addr, msgs)
	for want := 7; want <= 10; want++ {
		if m := next(t, r, msgs); m.params["seq"] != strconv.Itoa(want) {
			t.Fatalf("got seq %q, want %d", m.params["seq"], want)
		}
	}
}

func TestSyslogCloseWhileUnreachable(t *testing.T) {
	fix := newPKI(t)
	sink := newSink(t, fix, "127.0.0.1:1", func(c *audit.SyslogConfig) { c.MinBackoff = time.Hour; c.MaxBackoff = time.Hour })
	sink.Forward([]byte(`{"kind":"x"}` + "\n"))
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	sink.Forward([]byte("after close\n")) // ignored, no panic
}

func TestSyslogConfigValidate(t *testing.T) {
	good := audit.SyslogConfig{Addr: "siem:6514", TLS: &tls.Config{}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*audit.SyslogConfig){
		"Addr":      func(c *audit.SyslogConfig) { c.Addr = "siem" },
		"TLS":       func(c *audit.SyslogConfig) { c.TLS = nil },
		"Facility":  func(c *audit.SyslogConfig) { c.Facility = 24 },
		"QueueSize": func(c *audit.SyslogConfig) { c.QueueSize = -1 },
		"AppName":   func(c *audit.SyslogConfig) { c.AppName = "has space" },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Validate() = %v", name, err)
		}
	}
}

// TestSyslogNoKeyMaterial records the events a region writes about a key
// while that key exists, and checks that no encoding of its bytes reaches
// the SIEM; and that Event has no field that could hold raw bytes.
func TestSyslogNoKeyMaterial(t *testing.T) {
	for i, ft := 0, reflect.TypeFor[audit.Event](); i < ft.NumField(); i++ {
		f := ft.Field(i)
		switch f.Type.Kind() {
		case reflect.String, reflect.Uint32, reflect.Uint64:
		case reflect.Map:
			if f.Type.Key().Kind() != reflect.String || f.Type.Elem().Kind() != reflect.String {
				t.Errorf("Event.%s is %v", f.Name, f.Type)
			}
		case reflect.Struct:
			if f.Type != reflect.TypeFor[time.Time]() {
				t.Errorf("Event.%s is %v", f.Name, f.Type)
			}
		default:
			t.Errorf("Event.%s is %v: an audit event holds names and numbers, never bytes", f.Name, f.Type)
		}
	}

	fix := newPKI(t)
	msgs := make(chan syslogMsg, 64)
	r := startReceiver(t, fix, "127.0.0.1:0", msgs)
	sink := newSink(t, fix, r.addr(), nil)
	var file bytes.Buffer
	l, err := audit.New(&file, audit.Options{Node: "n1", Forward: sink.Forward})
	if err != nil {
		t.Fatal(err)
	}
	key := wrap.NewDataKey()
	defer key.Destroy()
	raw := key.Bytes()
	encodings := []string{hex.EncodeToString(raw), strings.ToUpper(hex.EncodeToString(raw)),
		base64.StdEncoding.EncodeToString(raw), base64.RawStdEncoding.EncodeToString(raw),
		base64.URLEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw)}
	evs := []audit.Event{
		{Kind: audit.KindKeyCreate, Tenant: "acme", Service: "payments", Version: 1, Detail: map[string]string{"key": fmt.Sprint(key)}},
		{Kind: audit.KindKeyRotate, Tenant: "acme", Service: "payments", Version: 2, Reason: fmt.Sprintf("%v", key)},
	}
	for _, e := range evs {
		if err := l.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	for range evs {
		m := next(t, r, msgs)
		if bytes.Contains(m.frame, raw) {
			t.Fatal("raw key bytes in a syslog frame")
		}
		for _, enc := range encodings {
			if bytes.Contains(m.frame, []byte(enc)) {
				t.Fatalf("an encoding of the key's bytes reached the SIEM: %.8s...", enc)
			}
		}
	}
}
