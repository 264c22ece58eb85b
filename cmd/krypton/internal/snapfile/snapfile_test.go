package snapfile

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

var modTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// archive writes a snapshot of data in chunks of 7 bytes.
func archive(t testing.TB, data []byte) ([]byte, *kv1.SnapshotMeta) {
	t.Helper()
	meta := &kv1.SnapshotMeta{Region: "eu-1", Index: 42, Term: 3, Size: uint64(len(data)), CreatedAt: timestamppb.New(modTime)}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, meta, modTime)
	if err != nil {
		t.Fatal(err)
	}
	for rest := data; len(rest) > 0; {
		n := min(7, len(rest))
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), meta
}

// TestRoundTrip: what Writer writes, Check accepts with the same metadata and the data's SHA-256,
// Open reads the same data back, and the archive is the three entries docs/operations.md lists.
func TestRoundTrip(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("KRYSNAP1 a state machine's snapshot, of any bytes \x00\xff")} {
		b, meta := archive(t, data)
		got, sum, err := Check(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(data); !proto.Equal(got, meta) || !bytes.Equal(sum, want[:]) {
			t.Fatalf("Check: got %v, %x; want %v, %x", got, sum, meta, want)
		}
		got, r, err := Open(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if back, err := io.ReadAll(r); err != nil || !bytes.Equal(back, data) || !proto.Equal(got, meta) {
			t.Fatalf("Open: got %q, %v, %v; want %q", back, got, err, data)
		}

		tr := tar.NewReader(bytes.NewReader(b))
		for _, name := range []string{MetaName, StateName, SumsName} {
			hdr, err := tr.Next()
			if err != nil || hdr.Name != name || hdr.Typeflag != tar.TypeReg || hdr.Mode != 0o600 || !hdr.ModTime.Equal(modTime) {
				t.Fatalf("entry %s: got %+v, %v", name, hdr, err)
			}
			if name == SumsName {
				s, _ := io.ReadAll(tr)
				if want := sha256.Sum256(data); string(s) != hexSum(want[:])+"  state.bin\n" {
					t.Fatalf("SHA256SUMS is %q", s)
				}
			}
		}
		if _, err := tr.Next(); err != io.EOF {
			t.Fatalf("an entry after SHA256SUMS: %v", err)
		}
	}
}

func hexSum(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

// TestWriterKeepsToTheSize: a Writer takes no more than the size announced, and Close refuses a
// short state.bin, so no archive it completes disagrees with its meta.json.
func TestWriterKeepsToTheSize(t *testing.T) {
	meta := &kv1.SnapshotMeta{Size: 4}
	w, err := NewWriter(io.Discard, meta, modTime)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("12345")); err == nil {
		t.Fatal("5 bytes of 4 accepted")
	}
	if _, err := w.Write([]byte("123")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "got 3 bytes of the 4") {
		t.Fatalf("a short state.bin: Close returned %v", err)
	}
}

// TestRefusesDamage: a truncated archive (cut anywhere before its end-of-archive blocks), changed
// data, and archives that are not as Writer writes them are refused, each with ErrNotSnapshot or
// ErrDamaged, whose messages name what is wrong and what file to give.
func TestRefusesDamage(t *testing.T) {
	data := bytes.Repeat([]byte("state "), 200)
	good, _ := archive(t, data)

	refused := func(what string, b []byte, want error) {
		t.Helper()
		_, _, err := Check(bytes.NewReader(b))
		if !errors.Is(err, want) {
			t.Errorf("%s: Check returned %v, want %v", what, err, want)
		}
	}
	// Every cut that loses a byte of an entry is refused. (A cut after SHA256SUMS's last byte loses
	// only tar's padding and end-of-archive blocks: every entry is whole and checked, so either
	// answer is sound.)
	sumsEnd := bytes.Index(good, []byte("  state.bin\n")) + len("  state.bin\n")
	for n := 0; n < sumsEnd; n++ {
		_, _, err := Check(bytes.NewReader(good[:n]))
		if !errors.Is(err, ErrNotSnapshot) {
			t.Fatalf("truncated to %d of %d bytes: Check returned %v", n, len(good), err)
		}
	}

	stateAt := bytes.Index(good, data)
	bad := bytes.Clone(good)
	bad[stateAt+100] ^= 1
	refused("a flipped bit in state.bin", bad, ErrDamaged)
	if _, _, err := Check(bytes.NewReader(bad)); !strings.Contains(err.Error(), "intact copy") {
		t.Errorf("the damage error does not name the fix: %v", err)
	}

	sumsAt := bytes.Index(good, []byte("  state.bin\n")) - 64
	bad = bytes.Clone(good)
	bad[sumsAt] = 'x'
	refused("a SHA256SUMS that is not hex", bad, ErrNotSnapshot)

	build := func(entries ...[2]string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			tw.WriteHeader(&tar.Header{Name: e[0], Mode: 0o600, Size: int64(len(e[1])), Typeflag: tar.TypeReg})
			io.WriteString(tw, e[1])
		}
		tw.Close()
		return buf.Bytes()
	}
	metaJSON := `{"region":"eu-1","size":"4"}`
	sum := sha256.Sum256([]byte("abcd"))
	sums := hexSum(sum[:]) + "  state.bin\n"
	if _, _, err := Check(bytes.NewReader(build([2]string{MetaName, metaJSON}, [2]string{StateName, "abcd"}, [2]string{SumsName, sums}))); err != nil {
		t.Fatalf("a hand-built archive: %v", err)
	}
	for what, b := range map[string][]byte{
		"not tar":                        []byte("hello\n"),
		"entries out of order":           build([2]string{StateName, "abcd"}, [2]string{MetaName, metaJSON}, [2]string{SumsName, sums}),
		"meta.json not a SnapshotMeta":   build([2]string{MetaName, `{"no":1}`}, [2]string{StateName, "abcd"}, [2]string{SumsName, sums}),
		"state.bin of another size":      build([2]string{MetaName, metaJSON}, [2]string{StateName, "abc"}, [2]string{SumsName, sums}),
		"no SHA256SUMS":                  build([2]string{MetaName, metaJSON}, [2]string{StateName, "abcd"}),
		"SHA256SUMS naming another file": build([2]string{MetaName, metaJSON}, [2]string{StateName, "abcd"}, [2]string{SumsName, hexSum(sum[:]) + "  other\n"}),
		"an entry after SHA256SUMS":      build([2]string{MetaName, metaJSON}, [2]string{StateName, "abcd"}, [2]string{SumsName, sums}, [2]string{"extra", ""}),
		"a huge meta.json":               build([2]string{MetaName, strings.Repeat(" ", MaxMetaSize+1)}, [2]string{StateName, "abcd"}, [2]string{SumsName, sums}),
	} {
		refused(what, b, ErrNotSnapshot)
	}
	// A sparse state.bin: a few bytes of PAX records that a tar reader expands into 1 GiB of zeros
	// (or an exabyte) for Check to hash and restore to send.
	sparse := sparseArchive(t, 1<<30)
	if _, r, err := Open(bytes.NewReader(sparse)); !errors.Is(err, ErrNotSnapshot) {
		n, _ := io.Copy(io.Discard, r)
		t.Errorf("a sparse state.bin: Open returned %v and %d bytes from a %d-byte file", err, n, len(sparse))
	}
	refused("a sparse state.bin", sparse, ErrNotSnapshot)

	if _, _, err := Open(bytes.NewReader([]byte("hello\n"))); !errors.Is(err, ErrNotSnapshot) {
		t.Errorf("Open of a non-archive: %v", err)
	}
}

// sparseArchive is meta.json and a state.bin of size zeros stored as a GNU sparse file (PAX format
// 0.1) of no data. archive/tar writes no sparse files, so the PAX records of a placeholder
// "comment" are swapped for the sparse ones of the same length.
func sparseArchive(t *testing.T, size int) []byte {
	t.Helper()
	rec := func(k, v string) string {
		for l := len(k) + len(v) + 3; ; {
			s := fmt.Sprintf("%d %s=%s\n", l, k, v)
			if len(s) == l {
				return s
			}
			l = len(s)
		}
	}
	records := rec("GNU.sparse.major", "0") + rec("GNU.sparse.minor", "1") + rec("GNU.sparse.realsize", strconv.Itoa(size)) +
		rec("GNU.sparse.numblocks", "1") + rec("GNU.sparse.map", "0,0")
	placeholder := strings.Repeat("p", 200)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	metaJSON := fmt.Sprintf(`{"size":"%d"}`, size)
	tw.WriteHeader(&tar.Header{Name: MetaName, Mode: 0o600, Size: int64(len(metaJSON)), Typeflag: tar.TypeReg})
	io.WriteString(tw, metaJSON)
	tw.WriteHeader(&tar.Header{Name: StateName, Mode: 0o600, Typeflag: tar.TypeReg, PAXRecords: map[string]string{"comment": placeholder}})
	tw.Close()
	b := buf.Bytes()
	old := rec("comment", placeholder)
	at := bytes.Index(b, []byte(old))
	for pad := 1; ; pad++ {
		if swapped := records + rec("comment", strings.Repeat("p", pad)); len(swapped) == len(old) {
			copy(b[at:], swapped)
			return b
		} else if len(swapped) > len(old) {
			t.Fatal("no padding fits")
		}
	}
}
