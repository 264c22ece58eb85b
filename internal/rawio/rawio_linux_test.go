package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// connPair returns the two ends of a stream connection over a listener on network and address:
// the dialled one and the accepted one, closed when the test ends.
func connPair(t *testing.T, network, address string) (dialled, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	dialled, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if accepted = <-acc; accepted == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { dialled.Close(); accepted.Close() })
	return dialled, accepted
}

// rawPair returns the two ends of a Unix stream connection, the first reading and writing with
// raw system calls.
func rawPair(t *testing.T) (raw, peer net.Conn) {
	t.Helper()
	c, peer := connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
	raw = Wrap(c)
	if _, ok := raw.(*rawIO); !ok {
		t.Fatalf("Wrap gave %T for a Unix connection", raw)
	}
	return raw, peer
}

// TestRawIOCarriesBytesBothWays: what one side writes (more than the socket's buffer holds, so
// that the raw write waits in the poller for room) arrives whole and in order on the other, in
// both directions; the peer's close reads as io.EOF.
func TestRawIOCarriesBytesBothWays(t *testing.T) {
	raw, peer := rawPair(t)
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := raw.Write(big); n != len(big) || err != nil {
		t.Fatalf("raw write: %d of %d bytes, %v", n, len(big), err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not what was written", len(b))
	}
	go func() {
		peer.Write(big)
		peer.Close()
	}()
	raw.SetReadDeadline(time.Now().Add(time.Minute)) // a read that missed the EOF fails, not hangs
	b, err := io.ReadAll(raw)
	if err != nil || !bytes.Equal(b, big) {
		t.Fatalf("raw read: %d bytes (equal %v), %v; want the %d written, then io.EOF", len(b), bytes.Equal(b, big), err, len(big))
	}
	if n, err := raw.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v; want io.EOF", n, err)
	}
	if _, err := raw.Write(make([]byte, 4<<20)); !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write to a closed peer: %v, want EPIPE or ECONNRESET", err)
	}
}

// TestRawIOWritesDoNotInterleave: concurrent Writes each go out whole, and a Read runs beside
// them, as net.Conn promises.
func TestRawIOWritesDoNotInterleave(t *testing.T) {
	raw, peer := rawPair(t)
	const writers, size = 8, 1 << 20
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := raw.Write(bytes.Repeat([]byte{byte('a' + i)}, size)); err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		}()
	}
	echo := make(chan error, 1)
	go func() { // the peer sends while it reads, so that a raw Read runs beside the Writes
		_, err := peer.Write([]byte("ping"))
		echo <- err
	}()
	seen := map[byte]bool{}
	block := make([]byte, size)
	for range writers {
		if _, err := io.ReadFull(peer, block); err != nil {
			t.Fatal(err)
		}
		if c := block[0]; seen[c] || !bytes.Equal(block, bytes.Repeat([]byte{c}, size)) {
			t.Fatalf("a block of %d bytes mixes writes (starts %q)", size, c)
		}
		seen[block[0]] = true
	}
	wg.Wait()
	got := make([]byte, 4)
	raw.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(raw, got); err != nil || string(got) != "ping" || <-echo != nil {
		t.Fatalf("read beside the writes: %q, %v", got, err)
	}
}

// TestRawIOZeroLengthAndClosed: a zero-length Read or Write does nothing on an open connection
// and fails with net.ErrClosed on a closed one, as net's; Close ends a Write waiting for room.
func TestRawIOZeroLengthAndClosed(t *testing.T) {
	raw, _ := rawPair(t)
	if n, err := raw.Read(nil); n != 0 || err != nil {
		t.Fatalf("zero-length read: %d, %v", n, err)
	}
	if n, err := raw.Write(nil); n != 0 || err != nil {
		t.Fatalf("zero-length write: %d, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := raw.Write(make([]byte, 64<<20)) // the peer reads nothing: it waits for room
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the write fill the socket; it is ended either way
	raw.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a write waiting for room")
	}
	if _, err := raw.Read(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("zero-length read on a closed connection: %v, want net.ErrClosed", err)
	}
	if _, err := raw.Write(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("zero-length write on a closed connection: %v, want net.ErrClosed", err)
	}
}

// TestRawIOOrdersWriteBeforeRead: bytes written after a change to memory and read by the peer
// order that change before what the reader does next (the race detector is told, in race
// builds, as net's own reads and writes tell it): a -race run reports no race here.
func TestRawIOOrdersWriteBeforeRead(t *testing.T) {
	raw, peer := rawPair(t)
	var shared int
	go func() {
		shared = 42
		raw.Write([]byte{1})
	}()
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if shared != 42 {
		t.Fatal("the write's bytes arrived before the change made before it")
	}
}

// TestRawIOHonoursDeadlinesAndClose: the raw reads and writes keep net.Conn's contract that the
// framed client and server rely on: a deadline ends a read or a stalled write with a timeout
// (the write reporting what it did write), and Close ends a read waiting in the poller with
// net.ErrClosed.
func TestRawIOHonoursDeadlinesAndClose(t *testing.T) {
	raw, _ := rawPair(t)
	raw.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := raw.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	raw.SetReadDeadline(time.Time{})

	raw.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := raw.Write(make([]byte, 64<<20)) // the peer reads nothing
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write past its deadline: %d bytes, %v; want a timeout", n, err)
	}
	if n <= 0 || n >= 64<<20 {
		t.Fatalf("a stalled write reports %d bytes written, want what the socket took", n)
	}
	raw.SetWriteDeadline(time.Time{})

	done := make(chan error, 1)
	go func() {
		_, err := raw.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the read reach the poller; it is ended either way
	raw.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a read waiting in the poller")
	}
}

// TestRawIOOverTCP: a TCP connection is wrapped too (the gRPC servers'), carries bytes, keeps its
// read deadline and reads the peer's half-close as io.EOF, while writing back still works.
func TestRawIOOverTCP(t *testing.T) {
	peer, c := connPair(t, "tcp", "127.0.0.1:0")
	w := Wrap(c)
	if _, ok := w.(*rawIO); !ok {
		t.Fatalf("Wrap gave %T for a TCP connection", w)
	}
	w.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := w.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	w.SetReadDeadline(time.Now().Add(time.Minute))
	peer.Write([]byte("hello"))
	peer.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(w)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want hello, then io.EOF", b, err)
	}
	if _, err := w.Write([]byte("back")); err != nil {
		t.Fatalf("write after the peer's half-close: %v", err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "back" {
		t.Fatalf("the peer read %q, %v", got, err)
	}
}

// TestWrapLeavesOtherConnections: a connection that is not a bare TCP or Unix socket (here one
// that embeds a *net.TCPConn and reads otherwise, as a peeking or TLS wrapper does) is returned
// as it is, never read under; and wrapping twice wraps once.
func TestWrapLeavesOtherConnections(t *testing.T) {
	raw, _ := rawPair(t)
	if Wrap(raw) != raw {
		t.Fatal("Wrap of a wrapped connection wrapped it again")
	}
	type peeking struct{ *net.UnixConn }
	c, _ := connPair(t, "unix", filepath.Join(t.TempDir(), "p"))
	p := peeking{c.(*net.UnixConn)}
	if got := Wrap(p); got != net.Conn(p) {
		t.Fatalf("Wrap of a connection that embeds a socket gave %T, want it unchanged", got)
	}
}
