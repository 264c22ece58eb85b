package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Sentinel errors.
var (
	// ErrClosed is returned when Record is called after Close.
	ErrClosed = errors.New("audit: log closed")

	// ErrCorrupt is returned when lines do not form a valid chain: by
	// Verify (inside a *ChainError) and by Open when the last line of the
	// file is truncated, altered or not linked to the one before it.
	ErrCorrupt = errors.New("audit: chain broken")

	// ErrInvalidEvent is returned when Record refuses an event: no Kind, a
	// Detail value longer than MaxDetailValue, or a line longer than
	// MaxLineSize. Nothing is written and the log stays usable.
	ErrInvalidEvent = errors.New("audit: invalid event")
)

// Options configure a Log. The zero value is valid: fsync after every
// record, node name empty, wall clock.
type Options struct {
	// Node is written as the node of every event that has none.
	Node string

	// SyncInterval is how often a file log is fsynced. Zero means after
	// every line, before Record returns: a line Record accepted survives
	// a crash. A positive interval batches: a goroutine owned by the Log
	// fsyncs every SyncInterval if anything was written, so a crash may
	// lose the lines of the last interval (the chain stays valid, it is
	// only shorter). Ignored by New, which never fsyncs.
	SyncInterval time.Duration

	// Forward, if set, is called with each line, newline included, after
	// it was written (and fsynced, if SyncInterval is zero), in chain
	// order. It holds the log's lock: it must be quick (hand the line to
	// a queue) and must not call Record. The slice is its own to keep.
	// Meant for a syslog or SIEM forwarder.
	Forward func(line []byte)

	// Now returns the time stamped on events that have none; nil means
	// time.Now. Tests set it for reproducible lines.
	Now func() time.Time
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	if o.SyncInterval < 0 {
		return fmt.Errorf("audit: Options.SyncInterval is negative (%v)", o.SyncInterval)
	}
	return nil
}

// Log appends events to one hash chain. Its methods are safe for concurrent
// use.
type Log struct {
	opts Options
	w    io.Writer
	f    *os.File // w, if the log owns a file; nil for New

	stop     chan struct{} // closed by Close to stop syncLoop; nil without it
	syncDone chan struct{} // closed when syncLoop returns

	mu     sync.Mutex // guards the fields below and every write to w
	seq    uint64     // Seq of the last line written
	prev   string     // Hash of the last line written, or Genesis
	dirty  bool       // written since the last fsync (batched mode)
	closed bool
	err    error // sticky: once an fsync (or a write New's writer) failed, every Record fails
	size   int64 // the file's length up to its last whole line (Open's logs)
}

// New returns a Log that writes a new chain, starting at Seq 1, to w (a
// buffer in tests, os.Stdout). It never fsyncs and Close does not close w.
func New(w io.Writer, opts Options) (*Log, error) {
	if w == nil {
		return nil, errors.New("audit: New with a nil writer")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Log{opts: opts, w: w, prev: Genesis}, nil
}

// Open opens the log file at path to append to it, creating the file (mode
// 0600) and its directory (0700) if need be. An existing file must be
// private to its owner (no group or other permission bits).
//
// Before appending, Open checks the last line of an existing file on its own
// and against the line before it, and resumes the chain from it. It refuses,
// with an error wrapping ErrCorrupt, a file whose last line is truncated (a
// crash in the middle of a write), altered, or not linked to the line before.
// Such a file needs a person: Verify it, keep it as evidence, start a new one.
// Open does not read the whole file; run Verify for that.
func Open(path string, opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	seq, prev, size, err := resume(f)
	if err == nil && seq == 0 {
		// A new or empty file: make its directory entry durable.
		err = syncDir(dir)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	l := &Log{opts: opts, w: f, f: f, seq: seq, prev: prev, size: size}
	if opts.SyncInterval > 0 {
		l.stop = make(chan struct{})
		l.syncDone = make(chan struct{})
		go l.syncLoop(opts.SyncInterval)
	}
	return l, nil
}

// resume returns the Seq and Hash of the last line of f, or 0 and Genesis if
// f is empty, after checking that line and its link to the one before, and
// f's size.
func resume(f *os.File) (uint64, string, int64, error) {
	seq, prev, err := resumeTail(f)
	if err != nil {
		return 0, "", 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, "", 0, err
	}
	return seq, prev, fi.Size(), nil
}

func resumeTail(f *os.File) (uint64, string, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return 0, "", fmt.Errorf("mode %v is not private to its owner (want 0600)", perm)
	}
	size := fi.Size()
	if size == 0 {
		return 0, Genesis, nil
	}
	// The last two lines, and the newline before them, fit in this window.
	off := max(0, size-2*MaxLineSize-1)
	tail := make([]byte, size-off)
	if _, err := f.ReadAt(tail, off); err != nil {
		return 0, "", err
	}
	corrupt := func(reason string) error {
		return fmt.Errorf("refusing to append: last line: %s: %w", reason, ErrCorrupt)
	}
	if tail[len(tail)-1] != '\n' {
		return 0, "", corrupt("truncated (no final newline)")
	}
	tail = tail[:len(tail)-1]
	i := bytes.LastIndexByte(tail, '\n')
	if i < 0 && off > 0 {
		return 0, "", corrupt(fmt.Sprintf("longer than %d bytes", MaxLineSize))
	}
	last, reason := parseLine(tail[i+1:])
	if reason != "" {
		return 0, "", corrupt(reason)
	}
	wantSeq, wantPrev := uint64(1), Genesis
	if i >= 0 {
		before := tail[:i]
		j := bytes.LastIndexByte(before, '\n')
		if j < 0 && off > 0 {
			return 0, "", corrupt(fmt.Sprintf("line before it longer than %d bytes", MaxLineSize))
		}
		prev, reason := parseLine(before[j+1:])
		if reason != "" {
			return 0, "", corrupt("line before it: " + reason)
		}
		wantSeq, wantPrev = prev.Seq+1, prev.Hash
	}
	if reason := checkLink(last, wantSeq, wantPrev); reason != "" {
		return 0, "", corrupt(reason)
	}
	return last.Seq, last.Hash, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Record appends e to the chain: it sets e.Seq, e.Prev and e.Hash, and e.Time
// (from Options.Now) and e.Node (Options.Node) if they are empty, then writes
// the line with one write and, unless SyncInterval is set, fsyncs it.
//
// A caller that must not act without an audit trail (every key operation)
// treats an error as a refusal. A failed write to Open's file (a full disk)
// is cut back to the last whole line and the event is not recorded; the log
// goes on once the write succeeds again. After a failed fsync (what reached
// the disk is unknown), or a failed write that could not be cut back or went
// to New's writer, the log is broken for good: every later Record returns
// the first error; Close and a new Open (which refuses a partial last line)
// are the way out.
func (l *Log) Record(e Event) error {
	if e.Kind == "" {
		return fmt.Errorf("%w: no kind", ErrInvalidEvent)
	}
	for k, v := range e.Detail {
		if len(v) > MaxDetailValue {
			// The key is a field name chosen by the caller; the value is
			// not shown, it may be the very secret the guard is for.
			return fmt.Errorf("%w: detail %q is %d bytes, more than %d", ErrInvalidEvent, k, len(v), MaxDetailValue)
		}
	}
	if e.Node == "" {
		e.Node = l.opts.Node
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.err != nil {
		return l.err
	}
	if e.Time.IsZero() {
		// Stamped under the lock, so that times follow Seq on one node.
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	e.Seq = l.seq + 1
	e.Prev = l.prev
	line, hash, err := encode(e)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if len(line) > MaxLineSize {
		return fmt.Errorf("%w: line of %d bytes, more than %d", ErrInvalidEvent, len(line), MaxLineSize)
	}
	if _, err := l.w.Write(line); err != nil {
		if l.f != nil {
			// A file that filled up (ENOSPC) may end in part of the line now: cut it back to the
			// last whole line, so that the chain goes on once space returns and the next Open
			// does not refuse a truncated last line. Only a file that cannot be cut back is
			// broken for good.
			if terr := l.f.Truncate(l.size); terr == nil {
				return fmt.Errorf("audit: write failed, event not recorded (the log is unchanged; free space or fix the disk): %w", err)
			}
		}
		l.err = fmt.Errorf("audit: write failed, log unusable: %w", err)
		return l.err
	}
	l.size += int64(len(line))
	if l.f != nil {
		if l.stop == nil {
			if err := l.f.Sync(); err != nil {
				l.err = fmt.Errorf("audit: fsync failed, log unusable: %w", err)
				return l.err
			}
		} else {
			l.dirty = true
		}
	}
	l.seq, l.prev = e.Seq, hash
	if l.opts.Forward != nil {
		l.opts.Forward(line)
	}
	return nil
}

func (l *Log) now() time.Time {
	if l.opts.Now != nil {
		return l.opts.Now()
	}
	return time.Now()
}

// syncLoop fsyncs the file every interval while there are unsynced lines,
// until Close.
func (l *Log) syncLoop(interval time.Duration) {
	defer close(l.syncDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.syncIfDirty()
		}
	}
}

// syncIfDirty fsyncs outside the lock so that Record is not held up by the
// disk; a line written during the fsync marks the log dirty again.
func (l *Log) syncIfDirty() {
	l.mu.Lock()
	if !l.dirty || l.err != nil {
		l.mu.Unlock()
		return
	}
	l.dirty = false
	l.mu.Unlock()
	if err := l.f.Sync(); err != nil {
		l.mu.Lock()
		if l.err == nil {
			l.err = fmt.Errorf("audit: fsync failed, log unusable: %w", err)
		}
		l.mu.Unlock()
	}
}

// Sync fsyncs the lines written so far (with a SyncInterval, Record leaves that to a goroutine).
// It returns the error that broke the log, if any; on a closed log or one made by New it does
// nothing.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if l.closed || l.f == nil {
		return nil
	}
	if err := l.f.Sync(); err != nil {
		l.err = fmt.Errorf("audit: fsync failed, log unusable: %w", err)
		return l.err
	}
	l.dirty = false
	return nil
}

// Close stops the log: it fsyncs and closes the file that Open opened (New's
// writer is left open) and stops the sync goroutine. It returns the error
// that broke the log, if any. Later calls to Close return nil; later calls
// to Record return ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	if l.stop != nil {
		close(l.stop)
		<-l.syncDone
	}
	// Record no longer writes and syncLoop has returned: no lock needed.
	err := l.err
	if l.f != nil {
		if err == nil {
			if serr := l.f.Sync(); serr != nil {
				err = fmt.Errorf("audit: fsync: %w", serr)
			}
		}
		if cerr := l.f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("audit: close: %w", cerr)
		}
	}
	return err
}
