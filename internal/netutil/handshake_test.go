package netutil

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// acceptor serves a HandshakeListener on loopback and keeps what Accept handed out.
type acceptor struct {
	t   *testing.T
	hl  *HandshakeListener
	reg *prometheus.Registry
	got chan net.Conn
}

func newAcceptor(t *testing.T, lim HandshakeLimits) *acceptor {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptor{t: t, reg: prometheus.NewRegistry(), got: make(chan net.Conn, 1024)}
	lim.Listener, lim.Registerer = "test", a.reg
	a.hl = LimitHandshakes(l, lim)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := a.hl.Accept()
			if err != nil {
				return
			}
			a.got <- c
		}
	}()
	t.Cleanup(func() {
		a.hl.Close()
		<-done
		close(a.got)
		for c := range a.got {
			c.Close()
		}
	})
	return a
}

// dial connects from the loopback address src (127.0.0.x: every one of them is local on Linux).
func (a *acceptor) dial(src string) net.Conn {
	a.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", a.hl.Addr().String())
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { c.Close() })
	return c
}

// accepted waits for the next connection Accept handed out.
func (a *acceptor) accepted() net.Conn {
	a.t.Helper()
	select {
	case c := <-a.got:
		return c
	case <-time.After(10 * time.Second):
		a.t.Fatal("no connection accepted within 10 s")
		return nil
	}
}

// closedByServer reports whether the server closed c, waiting up to 10 s.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err == io.EOF || err != nil && strings.Contains(err.Error(), "reset")
}

func (a *acceptor) refused(reason string) float64 {
	return testutil.ToFloat64(a.hl.refused.WithLabelValues("test", reason))
}

// waitRefused waits until the listener has refused n connections for reason.
func (a *acceptor) waitRefused(reason string, n float64) {
	a.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for a.refused(reason) < n {
		if time.Now().After(deadline) {
			a.t.Fatalf("refused %s = %v, want %v", reason, a.refused(reason), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHandshakeLimitPerSource: one source cannot hold more than MaxPendingPerSource connections
// that have not authenticated; the excess is closed at once and counted, another source is
// still accepted, and a slot comes back when a pending connection authenticates or closes.
func TestHandshakeLimitPerSource(t *testing.T) {
	a := newAcceptor(t, HandshakeLimits{MaxPendingPerSource: 3, HandshakeTimeout: time.Minute})
	var held []net.Conn
	for range 3 {
		a.dial("127.0.0.2")
		held = append(held, a.accepted())
	}
	for range 5 {
		if c := a.dial("127.0.0.2"); !closedByServer(t, c) {
			t.Fatal("a connection over the per-source limit was not closed")
		}
	}
	a.waitRefused(ReasonSourceLimit, 5)
	if p, _ := a.hl.Counts(); p != 3 {
		t.Fatalf("pending = %d, want 3", p)
	}
	// Another source is served while 127.0.0.2 is at its limit.
	a.dial("127.0.0.3")
	other := a.accepted()
	if !Authenticated(other) {
		t.Fatal("Authenticated refused a connection with no MaxConns")
	}
	// An authenticated connection leaves the pending budget; so does a closed one.
	if !Authenticated(held[0]) {
		t.Fatal("Authenticated refused a pending connection")
	}
	held[1].Close()
	if p, n := a.hl.Counts(); p != 1 || n != 2 {
		t.Fatalf("pending, authenticated = %d, %d, want 1, 2", p, n)
	}
	for range 2 {
		a.dial("127.0.0.2")
		a.accepted()
	}
	if got := testutil.ToFloat64(a.hl.pending); got != 3 {
		t.Fatalf("krypton_handshakes_pending = %v, want 3", got)
	}
	if got := a.refused(ReasonSourceLimit); got != 5 {
		t.Fatalf("refused source_limit = %v, want 5 (no more)", got)
	}
}

// TestHandshakeLimitTotal: MaxPending bounds pending connections over all sources.
func TestHandshakeLimitTotal(t *testing.T) {
	a := newAcceptor(t, HandshakeLimits{MaxPending: 4, MaxPendingPerSource: 2, HandshakeTimeout: time.Minute})
	for _, src := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"} {
		a.dial(src)
		a.accepted()
	}
	if c := a.dial("127.0.0.4"); !closedByServer(t, c) {
		t.Fatal("a connection over the total pending limit was not closed")
	}
	a.waitRefused(ReasonPendingLimit, 1)
	// The metric is exported under its name, with the listener's label.
	n, err := testutil.GatherAndCount(a.reg, "krypton_handshakes_refused_total")
	if err != nil || n == 0 {
		t.Fatalf("krypton_handshakes_refused_total not gathered: %d, %v", n, err)
	}
}

// TestHandshakeTimeout: a connection that never authenticates is closed after HandshakeTimeout,
// counted, and its slot returns; Authenticated on it then reports false.
func TestHandshakeTimeout(t *testing.T) {
	a := newAcceptor(t, HandshakeLimits{MaxPendingPerSource: 1, HandshakeTimeout: 200 * time.Millisecond})
	c := a.dial("127.0.0.2")
	sc := a.accepted()
	if !closedByServer(t, c) {
		t.Fatal("a connection that never authenticated was not closed")
	}
	a.waitRefused(ReasonTimeout, 1)
	if Authenticated(sc) {
		t.Fatal("Authenticated accepted a connection whose handshake time ran out")
	}
	if p, n := a.hl.Counts(); p != 0 || n != 0 {
		t.Fatalf("pending, authenticated = %d, %d, want 0, 0", p, n)
	}
	a.dial("127.0.0.2")
	if !Authenticated(a.accepted()) {
		t.Fatal("the source's slot did not come back")
	}
}

// TestHandshakeConnLimit: MaxConns counts authenticated connections only.
func TestHandshakeConnLimit(t *testing.T) {
	a := newAcceptor(t, HandshakeLimits{MaxConns: 2, HandshakeTimeout: time.Minute})
	var conns []net.Conn
	for range 4 { // more pending than MaxConns: they take no connection slot
		a.dial("127.0.0.2")
		conns = append(conns, a.accepted())
	}
	if !Authenticated(conns[0]) || !Authenticated(conns[1]) {
		t.Fatal("Authenticated refused within MaxConns")
	}
	if Authenticated(conns[2]) {
		t.Fatal("Authenticated accepted beyond MaxConns")
	}
	if got := a.refused(ReasonConnLimit); got != 1 {
		t.Fatalf("refused conn_limit = %v, want 1", got)
	}
	conns[2].Close()
	conns[0].Close()
	if !Authenticated(conns[3]) {
		t.Fatal("a closed authenticated connection did not free its slot")
	}
	if p, n := a.hl.Counts(); p != 0 || n != 2 {
		t.Fatalf("pending, authenticated = %d, %d, want 0, 2", p, n)
	}
}

// TestHandshakeNoTimeout: a negative HandshakeTimeout sets no timer (the server's own deadlines
// bound its connections, as for plain HTTP); the counts still hold, and Close frees the slot.
func TestHandshakeNoTimeout(t *testing.T) {
	a := newAcceptor(t, HandshakeLimits{MaxPendingPerSource: 1, HandshakeTimeout: -1})
	a.dial("127.0.0.2")
	sc := a.accepted()
	if pc := sc.(*pendingConn); pc.timer != nil {
		t.Fatal("a timer was set with a negative HandshakeTimeout")
	}
	if c := a.dial("127.0.0.2"); !closedByServer(t, c) {
		t.Fatal("a connection over the per-source limit was not closed")
	}
	sc.Close()
	if p, n := a.hl.Counts(); p != 0 || n != 0 {
		t.Fatalf("pending, authenticated = %d, %d, want 0, 0", p, n)
	}
	a.dial("127.0.0.2")
	a.accepted()
}
