package file

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
)

// FuzzUnseal feeds Unseal arbitrary blobs: it must never panic and never
// return plaintext for anything but a blob Seal made.
func FuzzUnseal(f *testing.F) {
	path := filepath.Join(f.TempDir(), "root.key")
	p, err := Open(context.Background(), &anchor.FileURI{Path: path}, anchor.Options{Create: true, Logger: discard})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	pt := bytes.Repeat([]byte{0x42}, 32)
	good, err := p.Seal(context.Background(), pt, ac)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("KFA\x01"))
	f.Fuzz(func(t *testing.T, blob []byte) {
		got, err := p.Unseal(context.Background(), blob, ac)
		if bytes.Equal(blob, good) {
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("the good blob: %v", err)
			}
			return
		}
		if err == nil || got != nil {
			t.Fatal("a blob Seal did not make opened")
		}
		if !anchor.IsDenied(err) {
			t.Fatalf("%v: want a denial", err)
		}
	})
}
