package jepsen

import (
	"encoding/base64"
	"encoding/hex"
	"testing"
	"time"
)

// TestNeedles: the plaintext scan finds a data key raw, in hex and in base64, anywhere in a file,
// and nothing in a file without one.
func TestNeedles(t *testing.T) {
	h := &history{start: time.Now(), data: map[int]*opData{}}
	key := []byte("0123456789abcdef0123456789abcdef")
	h.data[1] = &opData{plaintext: key}
	n := plaintextIndex(h)
	for name, enc := range map[string][]byte{
		"raw":    key,
		"hex":    []byte(hex.EncodeToString(key)),
		"base64": []byte(base64.StdEncoding.EncodeToString(key)),
		"url64":  []byte(base64.RawURLEncoding.EncodeToString(key)),
	} {
		hay := append(append([]byte("some log line: "), enc...), " and more\n"...)
		if off, ok := n.find(hay); !ok || off != len("some log line: ") {
			t.Errorf("%s: got %d, %v", name, off, ok)
		}
	}
	if _, ok := n.find([]byte("0123456789abcdef0123456789abcdeX and nothing else")); ok {
		t.Error("found a key that is not there")
	}
}
