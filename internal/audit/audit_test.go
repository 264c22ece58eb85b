package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/audit"
)

// writeLog records n events to a buffer and returns its lines, newlines
// included.
func writeLog(t *testing.T, n int) [][]byte {
	t.Helper()
	var buf bytes.Buffer
	l, err := audit.New(&buf, audit.Options{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e := audit.Event{Kind: audit.KindKeyRotate, Actor: "op", Tenant: "acme", Version: uint32(i + 1),
			Detail: map[string]string{"i": fmt.Sprint(i), "note": "<&> \u2028 é"}}
		if err := l.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(buf.Bytes(), []byte("\n"))[:n]
}

func join(lines [][]byte) []byte { return bytes.Join(lines, nil) }

// wantChainError fails unless err is a *ChainError for line.
func wantChainError(t *testing.T, err error, line int) {
	t.Helper()
	var ce *audit.ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("Verify error = %v, want a *ChainError for line %d", err, line)
	}
	if !errors.Is(err, audit.ErrCorrupt) {
		t.Errorf("ChainError does not wrap ErrCorrupt")
	}
	if ce.Line != line {
		t.Fatalf("ChainError names line %d (%s), want line %d", ce.Line, ce.Reason, line)
	}
}

func TestVerifyValid(t *testing.T) {
	lines := writeLog(t, 50)
	res, err := audit.Verify(bytes.NewReader(join(lines)))
	if err != nil {
		t.Fatal(err)
	}
	var last audit.Event
	if err := json.Unmarshal(lines[49], &last); err != nil {
		t.Fatal(err)
	}
	if res.Lines != 50 || res.LastHash != last.Hash || last.Seq != 50 {
		t.Fatalf("Verify = %+v, last line seq %d hash %s", res, last.Seq, last.Hash)
	}
}

func TestVerifyEmpty(t *testing.T) {
	res, err := audit.Verify(strings.NewReader(""))
	if err != nil || res.Lines != 0 || res.LastHash != audit.Genesis {
		t.Fatalf("Verify(empty) = %+v, %v", res, err)
	}
}

// TestLineFormat recomputes each hash from the package documentation alone,
// with no code of the package, as a verifier in another language would.
func TestLineFormat(t *testing.T) {
	sum := sha256.Sum256([]byte("krypton/audit/v1 genesis"))
	if got := hex.EncodeToString(sum[:]); got != audit.Genesis {
		t.Fatalf("Genesis = %s, documented as %s", audit.Genesis, got)
	}
	prev := audit.Genesis
	for i, line := range writeLog(t, 5) {
		s := strings.TrimSuffix(string(line), "\n")
		const key = `,"hash":"`
		at := len(s) - len(key) - 64 - 2
		if at < 0 || s[at:at+len(key)] != key || !strings.HasSuffix(s, `"}`) {
			t.Fatalf("line %d does not end with a hash field", i+1)
		}
		h := s[at+len(key) : len(s)-2]
		body := s[:at] + "}"
		sum := sha256.Sum256([]byte(body))
		if hex.EncodeToString(sum[:]) != h {
			t.Fatalf("line %d: hash %s is not SHA-256 of the body", i+1, h)
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatal(err)
		}
		if e["prev"] != prev || e["seq"] != float64(i+1) {
			t.Fatalf("line %d: prev %v seq %v, want %s %d", i+1, e["prev"], e["seq"], prev, i+1)
		}
		if _, ok := e["hash"]; ok {
			t.Fatalf("line %d: body has a hash key", i+1)
		}
		ts, _ := e["time"].(string)
		if tm, err := time.Parse(time.RFC3339Nano, ts); err != nil || !strings.HasSuffix(ts, "Z") || tm.IsZero() {
			t.Fatalf("line %d: time %q is not RFC 3339 UTC", i+1, ts)
		}
		prev = h
	}
}

// TestAlterEveryByte changes each byte of a small log in turn: Verify must
// name the line that holds it.
func TestAlterEveryByte(t *testing.T) {
	lines := writeLog(t, 4)
	log := join(lines)
	pos := 0
	for n, line := range lines {
		for i := range line {
			bad := bytes.Clone(log)
			bad[pos+i] ^= 0x01
			_, err := audit.Verify(bytes.NewReader(bad))
			wantChainError(t, err, n+1)
		}
		pos += len(line)
	}
}

func TestDeleteLine(t *testing.T) {
	lines := writeLog(t, 6)
	for del := range 5 { // every line but the last
		bad := append(append([][]byte{}, lines[:del]...), lines[del+1:]...)
		_, err := audit.Verify(bytes.NewReader(join(bad)))
		wantChainError(t, err, del+1)
	}
}

// TestDeleteLastLine shows the limit of a keyless chain: dropping whole lines
// from the end leaves a valid chain, and only the last hash, kept elsewhere,
// shows it.
func TestDeleteLastLine(t *testing.T) {
	lines := writeLog(t, 6)
	full, err := audit.Verify(bytes.NewReader(join(lines)))
	if err != nil {
		t.Fatal(err)
	}
	short, err := audit.Verify(bytes.NewReader(join(lines[:5])))
	if err != nil {
		t.Fatal(err)
	}
	if short.Lines != 5 || short.LastHash == full.LastHash {
		t.Fatalf("shortened log verifies as %+v, full one as %+v", short, full)
	}
}

func TestSwapLines(t *testing.T) {
	lines := writeLog(t, 6)
	for i := range 6 {
		for j := i + 1; j < 6; j++ {
			bad := append([][]byte{}, lines...)
			bad[i], bad[j] = bad[j], bad[i]
			_, err := audit.Verify(bytes.NewReader(join(bad)))
			wantChainError(t, err, i+1)
		}
	}
}

func TestTruncateLastLine(t *testing.T) {
	log := join(writeLog(t, 3))
	for cut := 1; cut < 40; cut++ {
		_, err := audit.Verify(bytes.NewReader(log[:len(log)-cut]))
		wantChainError(t, err, 3)
	}
}

func TestInsertedAndForeignLines(t *testing.T) {
	lines := writeLog(t, 3)
	other := writeLog(t, 3) // same kinds, other times: another chain
	for name, bad := range map[string][][]byte{
		"empty line":        {lines[0], []byte("\n"), lines[1]},
		"line from a chain": {lines[0], other[1], lines[2]},
		"duplicated line":   {lines[0], lines[1], lines[1], lines[2]},
		"first line gone":   {lines[1], lines[2]},
		"crlf":              {lines[0], append(bytes.TrimSuffix(lines[1], []byte("\n")), "\r\n"...), lines[2]},
	} {
		_, err := audit.Verify(bytes.NewReader(join(bad)))
		var ce *audit.ChainError
		if !errors.As(err, &ce) || ce.Line > 3 {
			t.Errorf("%s: Verify = %v, want a ChainError", name, err)
		}
	}
}

// TestRehashedLinesRefused builds lines with a correct hash but a body
// that a careless verifier could read two ways, or that Record never writes.
func TestRehashedLinesRefused(t *testing.T) {
	line := func(body string) []byte {
		sum := sha256.Sum256([]byte(body))
		return []byte(body[:len(body)-1] + `,"hash":"` + hex.EncodeToString(sum[:]) + "\"}\n")
	}
	const head = `{"time":"2026-01-02T03:04:05Z","seq":1,"kind":"key.create",`
	g := `"prev":"` + audit.Genesis + `"`
	for name, body := range map[string]string{
		"ok":             head + g + `}`,
		"duplicate seq":  head + `"seq":1,` + g + `}`,
		"case-folded":    head + `"Kind":"key.revoke",` + g + `}`,
		"unknown key":    head + `"key":"00",` + g + `}`,
		"hash in body":   head + `"hash":"00",` + g + `}`,
		"detail dup":     head + `"detail":{"a":"1","a":"2"},` + g + `}`,
		"detail nonstr":  head + `"detail":{"a":1},` + g + `}`,
		"seq 2 first":    `{"time":"2026-01-02T03:04:05Z","seq":2,"kind":"key.create",` + g + `}`,
		"no kind":        `{"time":"2026-01-02T03:04:05Z","seq":1,` + g + `}`,
		"prev not hex":   head + `"prev":"` + strings.ToUpper(audit.Genesis) + `"}`,
		"trailing value": head + g + `}{}`,
	} {
		_, err := audit.Verify(bytes.NewReader(line(body)))
		if name == "ok" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		wantChainError(t, err, 1)
	}
}

func TestLongLine(t *testing.T) {
	long := append(bytes.Repeat([]byte("x"), audit.MaxLineSize+10), '\n')
	_, err := audit.Verify(bytes.NewReader(long))
	wantChainError(t, err, 1)
}

func TestRecordRefuses(t *testing.T) {
	var buf bytes.Buffer
	l, err := audit.New(&buf, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("k", audit.MaxDetailValue+1)
	many := map[string]string{}
	for i := range 100 {
		many[fmt.Sprint(i)] = strings.Repeat("v", audit.MaxDetailValue)
	}
	for name, e := range map[string]audit.Event{
		"no kind":           {Tenant: "acme"},
		"long detail":       {Kind: audit.KindKeyCreate, Detail: map[string]string{"blob": secret}},
		"line over maximum": {Kind: audit.KindKeyCreate, Detail: many},
	} {
		err := l.Record(e)
		if !errors.Is(err, audit.ErrInvalidEvent) {
			t.Errorf("%s: Record = %v, want ErrInvalidEvent", name, err)
		}
		if strings.Contains(fmt.Sprint(err), secret) {
			t.Errorf("%s: error echoes the detail value", name)
		}
	}
	if buf.Len() != 0 {
		t.Fatalf("refused events wrote %d bytes", buf.Len())
	}
	// The limit itself is allowed, and the chain goes on after refusals.
	ok := audit.Event{Kind: audit.KindKeyCreate, Detail: map[string]string{"v": secret[1:]}}
	if err := l.Record(ok); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ok); err != nil {
		t.Fatal(err)
	}
	if res, err := audit.Verify(&buf); err != nil || res.Lines != 2 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

func TestCloseTwiceAndRecordAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for _, opts := range []audit.Options{{}, {SyncInterval: time.Millisecond}} {
		l, err := audit.Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Record(audit.Event{Kind: audit.KindOperatorJoin}); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if err := l.Record(audit.Event{Kind: audit.KindOperatorJoin}); !errors.Is(err, audit.ErrClosed) {
			t.Fatalf("Record after Close = %v, want ErrClosed", err)
		}
	}
}

func verifyFile(t *testing.T, path string) audit.Result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := audit.Verify(f)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestReopenContinuesChain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "audit")
	path := filepath.Join(dir, "audit.log")
	var forwarded bytes.Buffer
	for round := range 3 {
		l, err := audit.Open(path, audit.Options{Node: fmt.Sprint("n", round), Forward: func(line []byte) { forwarded.Write(line) }})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for range 4 {
			if err := l.Record(audit.Event{Kind: audit.KindTenantLock, Tenant: "acme"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if res := verifyFile(t, path); res.Lines != 12 {
		t.Fatalf("Verify: %d lines, want 12", res.Lines)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(forwarded.Bytes(), data) {
		t.Fatal("Forward did not receive exactly the lines of the file, in order")
	}
	for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func TestOpenRefusesBadTail(t *testing.T) {
	lines := writeLog(t, 4)
	log := join(lines)
	flip := bytes.Clone(log)
	flip[len(flip)-20] ^= 0x01
	flipBefore := bytes.Clone(log)
	flipBefore[len(log)-len(lines[3])-20] ^= 0x01
	for name, content := range map[string][]byte{
		"truncated last line":   log[:len(log)-1],
		"half a line":           log[:len(log)-len(lines[3])/2],
		"altered last line":     flip,
		"altered line before":   flipBefore,
		"swapped last two":      join([][]byte{lines[0], lines[1], lines[3], lines[2]}),
		"last line deleted gap": join([][]byte{lines[0], lines[1], lines[3]}),
		"lone line not first":   lines[2],
		"garbage":               []byte("not a log\n"),
	} {
		path := filepath.Join(t.TempDir(), "audit.log")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(path, audit.Options{})
		if !errors.Is(err, audit.ErrCorrupt) {
			t.Errorf("%s: Open = %v, want ErrCorrupt", name, err)
		}
		if l != nil {
			l.Close()
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(after, content) {
			t.Errorf("%s: refused Open changed the file", name)
		}
	}
}

func TestOpenRefusesSharedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if l, err := audit.Open(path, audit.Options{}); err == nil {
		l.Close()
		t.Fatal("Open accepted a world-readable log file")
	}
}

func TestOptionsValidate(t *testing.T) {
	if _, err := audit.New(&bytes.Buffer{}, audit.Options{SyncInterval: -1}); err == nil || !strings.Contains(err.Error(), "SyncInterval") {
		t.Fatalf("New with a negative SyncInterval = %v", err)
	}
	if _, err := audit.New(nil, audit.Options{}); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}

func TestConcurrentRecord(t *testing.T) {
	const goroutines, each = 16, 40
	for _, opts := range []audit.Options{{}, {SyncInterval: 5 * time.Millisecond}} {
		path := filepath.Join(t.TempDir(), "audit.log")
		l, err := audit.Open(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					e := audit.Event{Kind: audit.KindCallRefused, Actor: fmt.Sprint("g", g),
						Detail: map[string]string{"i": fmt.Sprint(i)}}
					if err := l.Record(e); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if res := verifyFile(t, path); res.Lines != goroutines*each {
			t.Fatalf("%+v: %d lines, want %d", opts, res.Lines, goroutines*each)
		}
		// Every event is there once.
		data, _ := os.ReadFile(path)
		seen := map[string]bool{}
		for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
			var e audit.Event
			if err := json.Unmarshal(line, &e); err != nil {
				t.Fatal(err)
			}
			seen[e.Actor+"/"+e.Detail["i"]] = true
		}
		if len(seen) != goroutines*each {
			t.Fatalf("%d distinct events, want %d", len(seen), goroutines*each)
		}
	}
}

// failWriter fails every write after the first ok ones.
type failWriter struct {
	ok  int
	buf bytes.Buffer
}

func (w *failWriter) Write(p []byte) (int, error) {
	if w.ok == 0 {
		return 0, errors.New("disk full")
	}
	w.ok--
	return w.buf.Write(p)
}

func TestWriteFailureIsSticky(t *testing.T) {
	w := &failWriter{ok: 2}
	l, err := audit.New(w, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := audit.Event{Kind: audit.KindKeyRevoke}
	for range 2 {
		if err := l.Record(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Record(e); err == nil {
		t.Fatal("Record succeeded on a failing writer")
	}
	w.ok = 10 // the disk recovers, the chain does not
	if err := l.Record(e); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Record after a failed write = %v, want the first error", err)
	}
	if err := l.Close(); err == nil {
		t.Fatal("Close did not report the failure")
	}
	if res, err := audit.Verify(&w.buf); err != nil || res.Lines != 2 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

func TestRecordFillsFields(t *testing.T) {
	var buf bytes.Buffer
	local := time.Date(2026, 5, 6, 7, 8, 9, 0, time.FixedZone("X", 3600))
	l, _ := audit.New(&buf, audit.Options{Node: "n1"})
	// Caller-set chain fields are ignored, caller-set time and node kept.
	if err := l.Record(audit.Event{Kind: "key.create", Time: local, Node: "n2", Seq: 9, Prev: "x", Hash: "y"}); err != nil {
		t.Fatal(err)
	}
	var e audit.Event
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	if e.Seq != 1 || e.Prev != audit.Genesis || e.Node != "n2" || !e.Time.Equal(local) || e.Time.Location() != time.UTC {
		t.Fatalf("recorded %+v", e)
	}
	if !strings.Contains(buf.String(), `"time":"2026-05-06T06:08:09Z"`) {
		t.Fatalf("time not written in UTC: %s", buf.String())
	}
	if l.Close() != nil {
		t.Fatal("Close failed")
	}
}

// fullDisk writes half of what it is given, then fails as a full disk does, while full is set.
type fullDisk struct {
	w    io.Writer
	full bool
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if !d.full {
		return d.w.Write(p)
	}
	n, _ := d.w.Write(p[:len(p)/2])
	return n, syscall.ENOSPC
}

// TestFullDiskLeavesLogUsable: a write to the log file that fails part way (ENOSPC) is cut back to
// the last whole line, the event is refused, and once space returns the chain goes on and the file
// opens again (before, the log broke for good and the next Open refused the partial line, so a
// region node whose disk had filled could not start again).
func TestFullDiskLeavesLogUsable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{Node: "n1", SyncInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	disk := &fullDisk{}
	audit.WrapWriter(l, func(w io.Writer) io.Writer { disk.w = w; return disk })
	e := audit.Event{Kind: audit.KindKeyRevoke, Tenant: "acme"}
	if err := l.Record(e); err != nil {
		t.Fatal(err)
	}
	disk.full = true
	for range 3 {
		if err := l.Record(e); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Record on a full disk = %v, want ENOSPC", err)
		}
	}
	disk.full = false
	if err := l.Record(e); err != nil {
		t.Fatalf("Record once space returned = %v, want success", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	l, err = audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatalf("reopening after a full disk: %v", err)
	}
	l.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if res, err := audit.Verify(f); err != nil || res.Lines != 2 {
		t.Fatalf("Verify = %+v, %v; want 2 lines, a valid chain", res, err)
	}
}
