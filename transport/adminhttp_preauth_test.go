package transport

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/internal/netutil"
)

// floodConn opens a connection from src to addr, sends one keep-alive request and reads its
// answer: it reports whether the server answered, and leaves the connection open (idle), as an
// attacker holding connections would.
func floodConn(t *testing.T, src net.IP, addr string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("flood connection to %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: flood\r\n\r\n"); err != nil {
		return c, false // closed by the server before the request went out
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("flood connection: no answer and not closed within 10 s")
		}
		return c, false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c, resp.StatusCode == http.StatusOK
}

// refusedConns is krypton_handshakes_refused_total{listener, reason}.
func refusedConns(t *testing.T, reg prometheus.Gatherer, listener, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "krypton_handshakes_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["listener"] == listener && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestAdminHTTPFlood: the plain-HTTP admin port (/metrics, /healthz) has no authentication, so
// anyone who reaches it could open connections, send one request each and keep them idle: the
// server kept every one of them (no IdleTimeout, no connection cap), exhausting its descriptors.
// Now one source holds at most MaxConnsPerSource connections; more are closed at accept and
// counted in krypton_handshakes_refused_total{listener="http"}, and a scrape from another
// address succeeds throughout the flood.
func TestAdminHTTPFlood(t *testing.T) {
	const flood = 400
	reg := prometheus.NewRegistry()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ServeAdminHTTP(ln, AdminHTTPConfig{Gatherer: reg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// No test logger: the server logs the flood's closed connections from goroutines that may
	// outlive the test.
	t.Cleanup(func() { a.srv.Close() })
	addr := ln.Addr().String()
	scrape := func(what string) {
		t.Helper()
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape %s: %v", what, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "krypton_handshakes_refused_total") {
			t.Fatalf("scrape %s: %d\n%s", what, resp.StatusCode, b)
		}
	}
	scrape("before the flood")

	// The flood comes from 127.0.0.2 (every 127/8 address is local on Linux); the scraper uses
	// 127.0.0.1.
	fdsBefore := openFDs(t)
	served := 0
	for i := range flood {
		c, ok := floodConn(t, net.IPv4(127, 0, 0, 2), addr)
		t.Cleanup(func() { c.Close() })
		if ok {
			served++
		}
		if i%100 == 99 {
			scrape("during the flood")
		}
	}
	per := DefaultAdminMaxConnsPerSource
	if served > per {
		t.Fatalf("the server answered and kept %d idle connections from one source, want at most %d", served, per)
	}
	if served == 0 {
		t.Fatal("no flood connection was served: the per-source cap is not what refused them")
	}
	refused := refusedConns(t, reg, "http", "source_limit")
	if refused < float64(flood-per) {
		t.Fatalf("refused source_limit = %v, want at least %d", refused, flood-per)
	}
	// The server holds at most the per-source budget: the process's descriptors grew by the
	// flood's own client ends, not by as many again on the server's side.
	if grown, limit := openFDs(t)-fdsBefore, flood+per+50; grown > limit {
		t.Fatalf("descriptors grew by %d during a flood of %d connections (limit %d): the server keeps them",
			grown, flood, limit)
	}
	scrape("after the flood")
}

// TestAdminHTTPIdleTimeout: an idle keep-alive connection is closed after IdleTimeout (it was
// kept for ever before, so a per-source cap would have been held by the first connections for
// good).
func TestAdminHTTPIdleTimeout(t *testing.T) {
	reg := prometheus.NewRegistry()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ServeAdminHTTP(ln, AdminHTTPConfig{Gatherer: reg, IdleTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// No test logger: the server logs the flood's closed connections from goroutines that may
	// outlive the test.
	t.Cleanup(func() { a.srv.Close() })
	c, ok := floodConn(t, net.IPv4(127, 0, 0, 1), ln.Addr().String())
	defer c.Close()
	if !ok {
		t.Fatal("/healthz not served")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %v, want EOF (closed by the server)", err)
	}
	if p, _ := a.conns.Counts(); p != 0 {
		t.Fatalf("the closed connection still holds a slot: %d open", p)
	}
}

// TestPprofPreAuthFlood: the profiler's TLS listener has the pre-authentication limits of every
// TLS listener. Before, connections that never started their handshake were kept until the
// server's handshake timeout, without bound. Now one source holds at most
// netutil.DefaultMaxPendingPerSource; the rest are closed at once and counted, an operator is
// served throughout, and an operator's connection leaves the pending budget once its handshake
// completed.
func TestPprofPreAuthFlood(t *testing.T) {
	const flood = 300
	f := testPKI(t)
	reg := prometheus.NewRegistry()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ServePprof(ln, PprofConfig{Roots: f.ca.Pool(), Certificate: f.server, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// No test logger: the server logs the flood's closed connections from goroutines that may
	// outlive the test.
	t.Cleanup(func() { a.srv.Close() })
	addr := ln.Addr().String()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	for i := range flood {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	per := netutil.DefaultMaxPendingPerSource
	deadline := time.Now().Add(20 * time.Second)
	for refusedConns(t, reg, "pprof", "source_limit") < float64(flood-per) {
		if time.Now().After(deadline) {
			t.Fatalf("refused source_limit = %v after a flood of %d, want at least %d",
				refusedConns(t, reg, "pprof", "source_limit"), flood, flood-per)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// An operator is served during the flood, on a keep-alive connection that then counts as
	// authenticated, not pending.
	tc := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{f.operator}}
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Timeout: 20 * time.Second, Transport: tr}).Get("https://" + addr + "/debug/pprof/heap")
	if err != nil {
		t.Fatalf("operator GET /debug/pprof/heap during the flood: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("operator GET /debug/pprof/heap during the flood: %d", resp.StatusCode)
	}
	if p, n := a.conns.Counts(); p > per || n != 1 {
		t.Fatalf("pending, authenticated = %d, %d, want at most %d, and 1 (the operator's)", p, n, per)
	}
}
