// Package snapfile is the file format of `krypton snapshot save` and `krypton snapshot restore`:
// the region's backups. docs/operations.md ("Backups: the snapshot file") describes it field by
// field; this comment is the short form.
//
// A snapshot file is a tar archive, as consul's are, of exactly three regular files, in this order:
//
//  1. meta.json: the kryptonv1.SnapshotMeta the node sent (region, index, term, size, created_at),
//     as protojson with the proto field names; at most MaxMetaSize bytes.
//  2. state.bin: the snapshot's data bytes as the node streamed them (cluster.Snapshot's output:
//     "KRYSNAP1", index, term, size, the state machine's snapshot, SHA-256), exactly meta.size
//     bytes. The CLI never looks inside; the node checks it on restore.
//  3. SHA256SUMS: one line, "<hex SHA-256 of state.bin>  state.bin\n", as sha256sum writes it; at
//     most MaxSumsSize bytes.
//
// `tar tf` lists the parts and `tar xf FILE && sha256sum -c SHA256SUMS` checks the data by hand.
// A reader refuses anything else (another entry, order, type or size, or an entry after
// SHA256SUMS) with ErrNotSnapshot, and data that does not match SHA256SUMS with ErrDamaged. The
// archive container is the standard library's archive/tar, rather than a hand-written framing, so
// that the file opens with the usual tools.
package snapfile

import (
	"archive/tar"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The archive's entries, in order.
const (
	MetaName  = "meta.json"
	StateName = "state.bin"
	SumsName  = "SHA256SUMS"
)

// Bounds on the small entries, so that a reader never holds more than this of an untrusted file.
const (
	MaxMetaSize = 64 << 10
	MaxSumsSize = 1024
)

// ErrNotSnapshot is a file that is not a snapshot archive as Writer writes it: the fix is to give
// the file `krypton snapshot save` wrote.
var ErrNotSnapshot = errors.New("not a krypton snapshot (want a tar archive of " + MetaName + ", " + StateName + ", " + SumsName + " as `krypton snapshot save` writes)")

// ErrDamaged is a snapshot whose data does not match its SHA256SUMS: the fix is an intact copy.
var ErrDamaged = errors.New("SHA-256 mismatch: the snapshot is damaged (restore an intact copy); nothing was restored")

func notSnapshot(why string) error { return fmt.Errorf("%w: %s", ErrNotSnapshot, why) }

// Writer writes a snapshot archive. NewWriter writes meta.json and the header of state.bin; Write
// takes the state's bytes, at most meta.Size in all; Close, once exactly meta.Size bytes were
// written, writes SHA256SUMS and ends the archive. A Writer whose Close failed or was never called
// leaves an incomplete archive, which every reader refuses.
type Writer struct {
	tw      *tar.Writer
	size, n uint64
	h       hash.Hash
	modTime time.Time
}

// NewWriter starts an archive of the snapshot described by meta on w. modTime is the entries'
// modification time (`tar tvf` shows it).
func NewWriter(w io.Writer, meta *kv1.SnapshotMeta, modTime time.Time) (*Writer, error) {
	metaJSON, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(metaJSON) > MaxMetaSize {
		return nil, fmt.Errorf("snapshot: %s of %d bytes exceeds %d", MetaName, len(metaJSON), MaxMetaSize)
	}
	if meta.GetSize() > 1<<62 {
		return nil, fmt.Errorf("snapshot: size %d is out of range", meta.GetSize())
	}
	sw := &Writer{tw: tar.NewWriter(w), size: meta.GetSize(), h: sha256.New(), modTime: modTime}
	if err := sw.tw.WriteHeader(sw.header(MetaName, len(metaJSON))); err != nil {
		return nil, err
	}
	if _, err := sw.tw.Write(metaJSON); err != nil {
		return nil, err
	}
	if err := sw.tw.WriteHeader(sw.header(StateName, int(sw.size))); err != nil {
		return nil, err
	}
	return sw, nil
}

func (w *Writer) header(name string, size int) *tar.Header {
	return &tar.Header{Name: name, Mode: 0o600, Size: int64(size), ModTime: w.modTime, Typeflag: tar.TypeReg}
}

// Write adds p to state.bin; it refuses to go past the size meta announced.
func (w *Writer) Write(p []byte) (int, error) {
	if w.n+uint64(len(p)) > w.size {
		return 0, fmt.Errorf("snapshot: more than the %d bytes announced", w.size)
	}
	n, err := w.tw.Write(p)
	w.h.Write(p[:n])
	w.n += uint64(n)
	return n, err
}

// Written is how many bytes of state.bin were written.
func (w *Writer) Written() uint64 { return w.n }

// Sum is the SHA-256 of the bytes of state.bin written so far.
func (w *Writer) Sum() []byte { return w.h.Sum(nil) }

// Close writes SHA256SUMS and ends the archive; it fails if state.bin is short.
func (w *Writer) Close() error {
	if w.n != w.size {
		return fmt.Errorf("snapshot: got %d bytes of the %d announced", w.n, w.size)
	}
	sums := hex.EncodeToString(w.Sum()) + "  " + StateName + "\n"
	if err := w.tw.WriteHeader(w.header(SumsName, len(sums))); err != nil {
		return err
	}
	if _, err := io.WriteString(w.tw, sums); err != nil {
		return err
	}
	return w.tw.Close()
}

// Check reads a whole archive from r and checks it: the three entries, in order and nothing
// after them; meta.json a SnapshotMeta whose size is state.bin's; SHA256SUMS well formed and
// naming state.bin; and state.bin's SHA-256 equal to the one it holds. It returns the metadata
// and that SHA-256. It reads state.bin as a stream: memory stays bounded whatever the file.
func Check(r io.Reader) (*kv1.SnapshotMeta, []byte, error) {
	tr := tar.NewReader(r)
	meta, err := readMeta(tr)
	if err != nil {
		return nil, nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, tr); err != nil {
		return nil, nil, notSnapshot(StateName + ": " + err.Error())
	}
	if _, err := next(tr, SumsName, MaxSumsSize); err != nil {
		return nil, nil, notSnapshot("no " + SumsName + " after " + StateName)
	}
	sums, err := io.ReadAll(tr)
	if err != nil {
		return nil, nil, notSnapshot(SumsName + ": " + err.Error())
	}
	want, err := parseSums(string(sums))
	if err != nil {
		return nil, nil, err
	}
	if _, err := tr.Next(); err != io.EOF {
		return nil, nil, notSnapshot("an entry after " + SumsName)
	}
	if subtle.ConstantTimeCompare(want, h.Sum(nil)) != 1 {
		return nil, nil, ErrDamaged
	}
	return meta, want, nil
}

// parseSums reads SHA256SUMS: one line, the hex SHA-256 then "  state.bin" (or " *state.bin",
// sha256sum's binary mode), the final newline optional.
func parseSums(s string) ([]byte, error) {
	line := strings.TrimSuffix(s, "\n")
	hexSum, name, ok := strings.Cut(line, " ")
	sum, err := hex.DecodeString(hexSum)
	if !ok || err != nil || len(sum) != sha256.Size || (name != " "+StateName && name != "*"+StateName) {
		return nil, notSnapshot("malformed " + SumsName + " (want one line: the hex SHA-256 of " + StateName + ", two spaces, " + StateName + ")")
	}
	return sum, nil
}

// Open reads meta.json from r and returns the metadata and a reader of state.bin's bytes, which
// ends after meta.Size bytes. It checks neither SHA256SUMS nor the data: Check does, and a caller
// that reads the file a second time (to send it) compares what it reads with Check's SHA-256.
func Open(r io.Reader) (*kv1.SnapshotMeta, io.Reader, error) {
	tr := tar.NewReader(r)
	meta, err := readMeta(tr)
	if err != nil {
		return nil, nil, err
	}
	return meta, tr, nil
}

// readMeta reads meta.json and positions tr at the start of state.bin.
func readMeta(tr *tar.Reader) (*kv1.SnapshotMeta, error) {
	if _, err := next(tr, MetaName, MaxMetaSize); err != nil {
		return nil, notSnapshot("no " + MetaName + " first")
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, notSnapshot(MetaName + ": " + err.Error())
	}
	meta := &kv1.SnapshotMeta{}
	if err := protojson.Unmarshal(b, meta); err != nil {
		return nil, notSnapshot(MetaName + " is not a SnapshotMeta")
	}
	hdr, err := next(tr, StateName, -1)
	if err != nil || uint64(hdr.Size) != meta.GetSize() {
		return nil, notSnapshot("no " + StateName + " of the size " + MetaName + " gives after it")
	}
	return meta, nil
}

// next reads the next entry's header and checks that it is the regular file name, of at most max
// bytes (max < 0: any size). Sparse files are refused: a few bytes of PAX records would make a
// reader hash or send any number of zeros.
func next(tr *tar.Reader, name string, max int64) (*tar.Header, error) {
	hdr, err := tr.Next()
	if err != nil {
		return nil, err
	}
	if hdr.Name != name || hdr.Typeflag != tar.TypeReg || hdr.Size < 0 || (max >= 0 && hdr.Size > max) {
		return nil, ErrNotSnapshot
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, ErrNotSnapshot
		}
	}
	return hdr, nil
}
