package gateway

import (
	"bytes"
	"testing"

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
