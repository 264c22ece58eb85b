package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestFramedSocket: the Unix socket serves the framed protocol beside gRPC. Data keys made over
// it open over gRPC and the other way round, concurrent calls on one connection each get their
// own answer, and the region's and the gateway's refusals come back with their codes.
func TestFramedSocket(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	fc, err := gateway.DialFramed(ctxT(t), g.UnixSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	grpcc := unixClient(t, g) // the same socket, in gRPC

	ctx := []byte("order 7")
	pt, blob, used, err := fc.GenerateDataKey(ctxT(t), wrap.KeyID{}, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pt) != wrap.KeySize || used.Tenant != "acme" || used.Service != "payments" || used.Version == 0 {
		t.Fatalf("GenerateDataKey: %d bytes, key %v", len(pt), used)
	}
	got, err := grpcc.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: blob, Context: ctx})
	if err != nil || !bytes.Equal(got.GetPlaintext(), pt) {
		t.Fatalf("gRPC Unwrap of a framed data key: %v", err)
	}
	dk, err := grpcc.GenerateDataKey(ctxT(t), &kv1.GenerateDataKeyRequest{Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	pt2, used2, err := fc.Unwrap(ctxT(t), dk.GetBlob(), ctx)
	if err != nil || !bytes.Equal(pt2, dk.GetPlaintext()) || used2 != used {
		t.Fatalf("framed Unwrap of a gRPC data key: %v (key %v)", err, used2)
	}

	// Concurrent calls on the one connection.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt, blob, _, err := fc.GenerateDataKey(ctxT(t), wrap.KeyID{}, ctx)
			if err != nil {
				errs <- err
				return
			}
			back, _, err := fc.Unwrap(ctxT(t), blob, ctx)
			if err == nil && !bytes.Equal(back, pt) {
				err = status.Error(codes.DataLoss, "a data key came back different")
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Refusals keep their codes: the wrong context (the region), another tenant's key (the
	// gateway), a blob that is not one.
	if _, _, err := fc.Unwrap(ctxT(t), blob, []byte("other")); status.Code(err) == codes.OK || status.Code(err) == codes.Unavailable {
		t.Fatalf("Unwrap with the wrong context: %v", err)
	}
	if _, _, _, err := fc.GenerateDataKey(ctxT(t), wrap.KeyID{Tenant: "globex"}, nil); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another tenant's key: %v, want PermissionDenied", err)
	}
	if _, _, err := fc.Unwrap(ctxT(t), []byte("junk"), nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a junk blob: %v, want InvalidArgument", err)
	}
}

// TestFramedClosedByGateway: closing the gateway ends framed connections; calls then fail with
// UNAVAILABLE rather than hang.
func TestFramedClosedByGateway(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	fc, err := gateway.DialFramed(ctxT(t), g.UnixSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if _, _, _, err := fc.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
		t.Fatal(err)
	}
	g.Close()
	if _, _, _, err := fc.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("after Close: %v, want Unavailable", err)
	}
}

// TestFramedPipelinedRequestsShareABatch: data keys asked for in one write reach the region in
// one batch, with no goroutine per request in between (framedConn.read submits them together),
// and each gets its own answer; so do the unwraps of their blobs, asked for in one write.
func TestFramedPipelinedRequestsShareABatch(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) {
		c.DelegateWraps = false // the region path's batches are what is counted
	})
	fc, err := gateway.DialFramed(ctxT(t), g.UnixSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	pt0, blob0, _, err := fc.GenerateDataKey(ctxT(t), wrap.KeyID{}, []byte("frame"))
	if err != nil { // the region is found
		t.Fatal(err)
	}
	if _, _, err := fc.Unwrap(ctxT(t), blob0, []byte("frame")); err != nil {
		t.Fatal(err)
	}
	clear(pt0)

	c, err := net.Dial("unix", g.UnixSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("KRF1")); err != nil {
		t.Fatal(err)
	}
	const n = 16
	// roundTrip writes n frames of op in one write, each made by fields from its id, and returns
	// the answers' fields after their code (checked OK), by id.
	roundTrip := func(op byte, fields func(id uint32, f []byte) []byte) [][]byte {
		var msg []byte
		for id := range uint32(n) {
			var f []byte
			f = binary.BigEndian.AppendUint32(f, id)
			f = append(f, op)
			f = binary.BigEndian.AppendUint32(f, 30000) // timeout, ms
			f = fields(id, f)
			msg = binary.BigEndian.AppendUint32(msg, uint32(len(f)))
			msg = append(msg, f...)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		answers := make([][]byte, n)
		for range n {
			var hdr [4]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				t.Fatal(err)
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
			if _, err := io.ReadFull(c, body); err != nil {
				t.Fatal(err)
			}
			id, code := binary.BigEndian.Uint32(body), body[4]
			if code != 0 || id >= n || answers[id] != nil {
				t.Fatalf("op %d: answer to %d: code %d", op, id, code)
			}
			answers[id] = body[5:]
		}
		return answers
	}
	field := func(b []byte) ([]byte, []byte) { // a length-prefixed field and what follows
		l := binary.BigEndian.Uint32(b)
		return b[4 : 4+l], b[4+l:]
	}
	batches := func(op string) float64 {
		return counter(t, g.Registry(), "krypton_gateway_batches_total", map[string]string{"op": op})
	}

	before := batches("wrap") // data keys are wrapped in batches of op "wrap"
	keys := roundTrip(1, func(_ uint32, f []byte) []byte {
		f = binary.BigEndian.AppendUint32(f, 0) // the gateway's tenant
		f = binary.BigEndian.AppendUint32(f, 0) // and service
		f = binary.BigEndian.AppendUint32(f, 0) // the current version
		f = binary.BigEndian.AppendUint32(f, 5)
		return append(f, "frame"...)
	})
	if got := batches("wrap") - before; got != 1 {
		t.Errorf("%d data keys asked for in one write went in %v batches, want 1", n, got)
	}

	before = batches("unwrap")
	opened := roundTrip(2, func(id uint32, f []byte) []byte {
		_, rest := field(keys[id])
		blob, _ := field(rest)
		f = binary.BigEndian.AppendUint32(f, uint32(len(blob)))
		f = append(f, blob...)
		f = binary.BigEndian.AppendUint32(f, 5)
		return append(f, "frame"...)
	})
	if got := batches("unwrap") - before; got != 1 {
		t.Errorf("%d unwraps asked for in one write went in %v batches, want 1", n, got)
	}
	for id := range n {
		pt, _ := field(keys[id])
		back, _ := field(opened[id])
		if len(pt) != wrap.KeySize || !bytes.Equal(back, pt) {
			t.Errorf("data key %d: the unwrap of its blob gave another key", id)
		}
	}
}

// TestFramedClientThatDoesNotRead: a client that pipelines requests and never reads its answers
// cannot make the gateway queue answers without end: once a connection has framedMaxPending
// requests unanswered on the wire, the gateway stops reading it, and the client's writes block.
// The gateway goes on serving other connections.
func TestFramedClientThatDoesNotRead(t *testing.T) {
	defer gateway.SetFramedMaxPending(64)()
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", nil)
	c, err := net.Dial("unix", g.UnixSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 300,000 requests of an unknown operation (each answered at once, with a message): 3.9 MB
	// of requests, over 20 MB of answers, far more than the socket buffers hold.
	req := []byte{0, 0, 0, 9, 0, 0, 0, 1, 99, 0, 0, 0, 0}
	buf := append([]byte("KRF1"), bytes.Repeat(req, 300_000)...)
	c.SetWriteDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Write(buf)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a client that reads nothing wrote %d of %d bytes (%v): the gateway kept reading", n, len(buf), err)
	}
	// Another connection is served.
	fc, err := gateway.DialFramed(ctxT(t), g.UnixSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if _, _, _, err := fc.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
		t.Fatalf("another connection: %v", err)
	}
}

// TestFramedClientWriteHonoursDeadline: a gateway that stops reading cannot hold a caller past
// its deadline (the caller that writes the queued requests would otherwise block in its write for
// as long as the socket stays full), nor does one caller's deadline cut the others' requests or
// close the connection: every request is written whole once the gateway reads again.
func TestFramedClientWriteHonoursDeadline(t *testing.T) {
	path := t.TempDir() + "/stuck.sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // not read until the calls are done
		}
	}()
	fc, err := gateway.DialFramed(ctxT(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	server := <-accepted
	defer server.Close()

	// A call whose context has already ended is refused before it is queued.
	expired, cancel := context.WithTimeout(t.Context(), -time.Second)
	cancel()
	if _, _, _, err := fc.GenerateDataKey(expired, wrap.KeyID{}, nil); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call past its deadline: %v, want DeadlineExceeded", err)
	}

	// 40 calls of 60 KiB: 2.4 MB, far more than the socket buffers hold.
	const calls = 40
	big := bytes.Repeat([]byte("x"), 60<<10)
	for i := range calls {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		done := make(chan error, 1)
		go func() {
			_, _, _, err := fc.GenerateDataKey(ctx, wrap.KeyID{}, big)
			done <- err
		}()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			// The deferred closes end the write, and with it the call.
			t.Fatalf("call %d had not returned 10 s after its 50ms deadline: its write held it", i)
		}
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("call %d: %v, want DeadlineExceeded (the connection must stay up)", i, err)
		}
	}
	// The gateway reads again: the magic, then every request whole.
	server.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(server)
	magic := make([]byte, 4)
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != "KRF1" {
		t.Fatalf("magic %q: %v", magic, err)
	}
	for i := range calls {
		var hdr [4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !bytes.HasSuffix(body, big) {
			t.Fatalf("request %d of %d bytes does not end with its context: cut or mixed", i, len(body))
		}
	}
}
