package snapfile

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzCheck feeds arbitrary files to the reader (a snapshot file is whatever the operator hands
// `krypton snapshot restore`): it never panics, and whatever Check accepts is a snapshot as Writer
// writes it, whose data Open reads back with the SHA-256 Check returned and which Writer writes
// again into an archive Check accepts alike. The seed corpus (testdata/fuzz/FuzzCheck) holds a
// valid archive, a truncated one and a damaged one.
func FuzzCheck(f *testing.F) {
	good, _ := archive(f, []byte("KRYSNAP1 state"))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		meta, sum, err := Check(bytes.NewReader(b))
		m2, r, oerr := Open(bytes.NewReader(b))
		if err != nil {
			if oerr == nil {
				io.Copy(io.Discard, r)
			}
			return
		}
		if oerr != nil {
			t.Fatalf("Check accepted what Open refuses: %v", oerr)
		}
		data, rerr := io.ReadAll(r)
		if rerr != nil || !proto.Equal(meta, m2) || uint64(len(data)) != meta.GetSize() {
			t.Fatalf("Open: %d bytes, %v, %v; Check: %v", len(data), rerr, m2, meta)
		}
		if s := sha256.Sum256(data); !bytes.Equal(s[:], sum) {
			t.Fatal("Check's SHA-256 is not the data's")
		}
		var again bytes.Buffer
		w, err := NewWriter(&again, meta, modTime)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		meta3, sum3, err := Check(&again)
		if err != nil || !proto.Equal(meta3, meta) || !bytes.Equal(sum3, sum) {
			t.Fatalf("rewritten: %v, %v", meta3, err)
		}
	})
}
