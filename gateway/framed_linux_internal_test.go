package gateway

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/kryptonkms/krypton/internal/rawio"
)

// TestFramedConnectionsAreRaw: the Unix socket's connections and DialFramed's read and write with
// raw system calls (internal/rawio), which the framed protocol's speed depends on.
func TestFramedConnectionsAreRaw(t *testing.T) {
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
