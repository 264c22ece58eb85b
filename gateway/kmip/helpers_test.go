package kmip

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/gateway/kmip/kmiptest"
	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/leaktest"
	"github.com/kryptonkms/krypton/internal/logtest"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }

var (
	v14 = version{1, 4}
	v20 = version{2, 0}
)

// env is a running server with its CA, for one test.
type env struct {
	t    testing.TB
	ca   *pki.CA
	keys *kmiptest.Keys
	srv  *Server
	addr string
	reg  *prometheus.Registry
	done chan error
	cfg  Config
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logtest.New(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newEnv starts a server on 127.0.0.1 with a throwaway CA. mod may change
// the configuration before New.
func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	ca, err := pki.NewCA("kmip test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueGateway("acme", "gateway-1", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ca: ca, keys: kmiptest.NewKeys()}
	e.cfg = Config{
		ClientCAs:   ca.Pool(),
		Certificate: srvCert.TLSCertificate(),
		Logger:      testLogger(t),
	}
	if mod != nil {
		mod(&e.cfg)
	}
	e.start()
	t.Cleanup(func() {
		e.stop()
		e.keys.Close()
	})
	return e
}

func (e *env) start() {
	e.t.Helper()
	port, err := netutil.FreePort(false)
	if err != nil {
		e.t.Fatal(err)
	}
	e.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg = prometheus.NewRegistry()
	e.cfg.Registerer = e.reg
	e.srv, err = New(e.cfg, e.keys)
	if err != nil {
		l.Close()
		e.t.Fatal(err)
	}
	e.done = make(chan error, 1)
	go func() { e.done <- e.srv.Serve(l) }()
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	e.srv.Close()
	if err := <-e.done; !errors.Is(err, ErrShutdown) {
		e.t.Errorf("Serve returned %v", err)
	}
	e.srv = nil
}

// client is a bare KMIP client over TLS, built on package ttlv.
type client struct {
	t    testing.TB
	conn *tls.Conn
}

func (e *env) dial(tenant, service string) *client {
	e.t.Helper()
	cert, err := e.ca.IssueService(tenant, service, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", e.addr, pki.ClientTLSConfig(e.ca.Pool(), cert.TLSCertificate(), "127.0.0.1"))
	if err != nil {
		e.t.Fatal(err)
	}
	c := &client{t: e.t, conn: conn}
	e.t.Cleanup(func() { conn.Close() })
	return c
}

// batchItem is one request batch item.
func batchItem(op uint32, payload ...ttlv.Item) ttlv.Item {
	return ttlv.Struct(ttlv.TagBatchItem, ttlv.Enum(ttlv.TagOperation, op), ttlv.Struct(ttlv.TagRequestPayload, payload...))
}

func requestMessage(v version, items ...ttlv.Item) ttlv.Item {
	hdr := ttlv.Struct(ttlv.TagRequestHeader, v.item(), ttlv.Int(ttlv.TagBatchCount, int32(len(items))))
	return ttlv.Struct(ttlv.TagRequestMessage, append([]ttlv.Item{hdr}, items...)...)
}

// roundTrip sends raw bytes and reads one response message.
func (c *client) roundTrip(raw []byte) (ttlv.Item, error) {
	c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.conn.Write(raw); err != nil {
		return ttlv.Item{}, err
	}
	resp, err := ttlv.ReadMessage(c.conn, 1<<22)
	if err != nil {
		return ttlv.Item{}, err
	}
	return ttlv.Decode(resp, ttlv.DefaultLimits())
}

// send sends a request of items and returns the response's batch items.
func (c *client) send(v version, items ...ttlv.Item) []ttlv.Item {
	c.t.Helper()
	out, err := c.sendErr(v, items...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// sendErr is send for goroutines other than the test's: it returns errors.
func (c *client) sendErr(v version, items ...ttlv.Item) ([]ttlv.Item, error) {
	resp, err := c.roundTrip(ttlv.Marshal(requestMessage(v, items...)))
	if err != nil {
		return nil, err
	}
	if resp.Tag != ttlv.TagResponseMessage {
		return nil, fmt.Errorf("response tag %v", resp.Tag)
	}
	var out []ttlv.Item
	for _, bi := range resp.All(ttlv.TagBatchItem) {
		out = append(out, *bi)
	}
	if n := resp.Child(ttlv.TagResponseHeader).Child(ttlv.TagBatchCount).Int; n != int64(len(out)) {
		return nil, fmt.Errorf("batch count %d for %d items", n, len(out))
	}
	return out, nil
}

// do runs one operation and returns its batch item.
func (c *client) do(v version, op uint32, payload ...ttlv.Item) ttlv.Item {
	c.t.Helper()
	items := c.send(v, batchItem(op, payload...))
	if len(items) != 1 {
		c.t.Fatalf("%d batch items", len(items))
	}
	return items[0]
}

// ok runs one operation that must succeed and returns its response payload.
func (c *client) ok(v version, op uint32, payload ...ttlv.Item) ttlv.Item {
	c.t.Helper()
	bi := c.do(v, op, payload...)
	if st := bi.Child(ttlv.TagResultStatus); st == nil || st.Int != int64(ttlv.StatusSuccess) {
		c.t.Fatalf("operation %s failed: %s", opName(op), describeFailure(bi))
	}
	p := bi.Child(ttlv.TagResponsePayload)
	if p == nil {
		return ttlv.Struct(ttlv.TagResponsePayload)
	}
	return *p
}

// failure runs one operation that must fail with reason.
func (c *client) failure(v version, reason uint32, op uint32, payload ...ttlv.Item) {
	c.t.Helper()
	bi := c.do(v, op, payload...)
	checkFailure(c.t, bi, reason)
}

func checkFailure(t testing.TB, bi ttlv.Item, reason uint32) {
	t.Helper()
	st := bi.Child(ttlv.TagResultStatus)
	if st == nil || st.Int != int64(ttlv.StatusOperationFailed) {
		t.Fatalf("want failure %s, got %s", reasonName(reason), describeFailure(bi))
	}
	if r := bi.Child(ttlv.TagResultReason); r == nil || r.Int != int64(reason) {
		t.Fatalf("want reason %s, got %s", reasonName(reason), describeFailure(bi))
	}
}

func describeFailure(bi ttlv.Item) string {
	st := bi.Child(ttlv.TagResultStatus)
	if st == nil {
		return "no result status"
	}
	if st.Int == int64(ttlv.StatusSuccess) {
		return "success"
	}
	s := "failed"
	if r := bi.Child(ttlv.TagResultReason); r != nil {
		s += " " + reasonName(uint32(r.Int))
	}
	if m := bi.Child(ttlv.TagResultMessage); m != nil {
		s += ": " + m.Text()
	}
	return s
}

// aesAttrs are Create's attributes for an AES key of bits, named name, in
// the encoding of v.
func keyAttrs(v version, bits int32, name string) []ttlv.Item {
	values := []ttlv.Item{
		ttlv.Enum(ttlv.TagCryptographicAlgorithm, ttlv.AlgorithmAES),
		ttlv.Int(ttlv.TagCryptographicLength, bits),
		ttlv.Int(ttlv.TagCryptographicUsageMask, int32(ttlv.UsageEncrypt|ttlv.UsageDecrypt)),
	}
	if name != "" {
		values = append(values, ttlv.Struct(ttlv.TagName,
			ttlv.Text(ttlv.TagNameValue, name), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText)))
	}
	if v.v2() {
		return []ttlv.Item{ttlv.Struct(ttlv.TagAttributes, values...)}
	}
	return []ttlv.Item{ttlv.Struct(ttlv.TagTemplateAttribute, encodeAttrs(values, false)...)}
}

func (c *client) create(v version, name string) string {
	c.t.Helper()
	p := c.ok(v, ttlv.OpCreate, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)}, keyAttrs(v, 256, name)...)...)
	return p.Child(ttlv.TagUniqueIdentifier).Text()
}

func uidItem(id string) ttlv.Item { return ttlv.Text(ttlv.TagUniqueIdentifier, id) }

// closedByServer drains c and reports whether the server closed it (rather
// than the read timing out).
func (c *client) closedByServer() bool {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c.conn)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}
