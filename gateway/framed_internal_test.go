package gateway

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/kryptonkms/krypton/internal/rawio"

	"github.com/kryptonkms/krypton/wrap"
)

// TestFramedAnswerBufferWipedWhenGrown: queued answers hold data keys; when the queue's buffer
// grows, the old one is wiped rather than left to the collector with the keys in it.
func TestFramedAnswerBufferWipedWhenGrown(t *testing.T) {
	fc := &framedConn{room: make(chan struct{}, 1), pending: 2}
	key := bytes.Repeat([]byte{0xA7}, wrap.KeySize)
	fc.answer(1, bytes.Clone(key), []byte("blob"), wrap.KeyID{Tenant: "t", Service: "s", Version: 1}, nil)
	old := fc.out[:cap(fc.out)]
	if !bytes.Contains(old, key) {
		t.Fatal("the first answer does not hold its key: the test proves nothing")
	}
	big := make([]byte, 4*cap(old)) // forces the buffer to grow
	fc.answer(2, bytes.Clone(key), big, wrap.KeyID{Tenant: "t", Service: "s", Version: 1}, nil)
	if &fc.out[0] == &old[0] {
		t.Fatal("the buffer did not grow: the test proves nothing")
	}
	if bytes.Contains(old, key) {
		t.Fatal("the old answer buffer still holds a data key after it grew")
	}
	if n := bytes.Count(fc.out, key); n != 2 {
		t.Fatalf("the grown buffer holds %d keys, want both answers'", n)
	}
}

// TestFramedConnectionsAreRaw: the Unix socket's connections and DialFramed's read and write with
// raw system calls (internal/rawio), which the framed protocol's speed depends on.
func TestFramedConnectionsAreRaw(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw system calls are Linux's")
	}
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan net.Conn, 1)
	sl := newSniffListener(ln, func(c net.Conn, _ *bufio.Reader) {
		served <- c
		c.Close()
	})
	defer func() { sl.Close(); sl.wait() }()
	fc, err := DialFramed(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if !rawio.Wrapped(fc.c) {
		t.Errorf("DialFramed's connection is a %T, not raw", fc.c)
	}
	if c := <-served; !rawio.Wrapped(c) {
		t.Errorf("the socket's framed connection is a %T, not raw", c)
	}
}
