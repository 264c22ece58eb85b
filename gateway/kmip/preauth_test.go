package kmip

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/pki"
)

// raiseNoFile makes sure the process may hold n more descriptors, raising RLIMIT_NOFILE's soft
// limit up to the hard one if needed.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Fatalf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test needs: raise it (ulimit -Hn)", lim.Max, n)
	}
	old := lim.Cur
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lim.Cur = old
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}

// counterValue is the value of the counter name{labels} in reg, 0 if absent.
func counterValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestPreAuthFlood: more raw TCP connections than the old connection limit (1024), none of
// which ever starts a TLS handshake, do not lock legitimate clients out. Before, every accepted
// connection took a slot for the 10 s handshake timeout, and from the 1,025th on every client
// was refused. Now the flood's source holds at most MaxPendingPerSource handshake slots, the
// rest is closed at once and counted, and a client from another address connects and runs Get
// and Encrypt throughout (an established client too).
func TestPreAuthFlood(t *testing.T) {
	const flood = 1100
	raiseNoFile(t, 3*flood)
	e := newEnv(t, nil)
	cert, err := e.ca.IssueService("acme", "db", 0)
	if err != nil {
		t.Fatal(err)
	}
	established := e.dial("acme", "db")
	id := established.create(v14, "flood")
	established.ok(v14, ttlv.OpActivate, uidItem(id))
	serve := func(c *client) {
		t.Helper()
		c.ok(v14, ttlv.OpGet, uidItem(id))
		c.ok(v14, ttlv.OpEncrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, []byte("still here")))
	}
	// fresh connects from 127.0.0.1 with a new TLS connection, as a new client does.
	fresh := func() {
		t.Helper()
		d := &net.Dialer{Timeout: 10 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", e.addr, pki.ClientTLSConfig(e.ca.Pool(), cert.TLSCertificate(), "127.0.0.1"))
		if err != nil {
			t.Fatalf("a legitimate client could not connect during the flood: %v", err)
		}
		defer conn.Close()
		serve(&client{t: t, conn: conn})
	}

	// The flood comes from 127.0.0.2 (any 127/8 address is local on Linux), the client from
	// 127.0.0.1: what one source holds cannot lock out another.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	var raw []net.Conn
	t.Cleanup(func() {
		for _, c := range raw {
			c.Close()
		}
	})
	for i := range flood {
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		raw = append(raw, c)
		if i%100 == 99 {
			fresh()
			serve(established)
		}
	}
	fresh()
	serve(established)

	// Every flood connection beyond the source's pending budget was refused and counted.
	want := float64(flood - DefaultConfig().MaxPendingPerSource)
	labels := map[string]string{"listener": "kmip", "reason": "source_limit"}
	deadline := time.Now().Add(20 * time.Second)
	for counterValue(t, e.reg, "krypton_handshakes_refused_total", labels) < want {
		if time.Now().After(deadline) {
			t.Fatalf("krypton_handshakes_refused_total%v = %v, want >= %v", labels,
				counterValue(t, e.reg, "krypton_handshakes_refused_total", labels), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fresh()
}

// TestDeclaredLengthNotAllocated: an authenticated client that declares a message of nearly
// MaxMessageSize (1 MiB) and sends a few bytes of it makes the server allocate about what
// arrived. Before, each such connection allocated (and, while waiting, pinned) the declared
// size: conns of them allocated conns MiB.
func TestDeclaredLengthNotAllocated(t *testing.T) {
	const conns = 48
	e := newEnv(t, nil)
	cert, err := e.ca.IssueService("acme", "db", 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs []*tls.Conn
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	for range conns {
		c, err := tls.Dial("tcp", e.addr, pki.ClientTLSConfig(e.ca.Pool(), cert.TLSCertificate(), "127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	// Every handshake is done (tls.Dial returns after it); what is allocated from here is the
	// messages' doing.
	declared := uint32(DefaultConfig().MaxMessageSize - ttlv.HeaderSize)
	msg := make([]byte, ttlv.HeaderSize+16)
	msg[0], msg[1], msg[2], msg[3] = 0x42, 0x00, 0x78, byte(ttlv.TypeStructure)
	binary.BigEndian.PutUint32(msg[4:], declared)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, c := range cs {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		// The rest never comes: the server reads to the end of the stream and gives up.
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cs {
		// The server closes each connection once it has read what there was.
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	runtime.ReadMemStats(&after)
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(conns)<<20/4; got > limit {
		t.Fatalf("%d connections declaring %d bytes and sending 16 made the process allocate %d bytes (limit %d)",
			conns, declared, got, limit)
	}
}
