package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Replicated records.
//
// A node writes one record for each entry of its cluster's replicated log that changed its state,
// as its state machine applies the entry, so every node where a change took effect holds a record
// of it, and the records of one change on different nodes differ only in time, node, seq, prev
// and hash. Such a record carries the entry's log index as Detail[IndexKey].
//
// A restarted node replays the log entries after its last snapshot: it skips every entry at or
// below the highest index its log already holds (LastIndex), so a replay writes no record twice
// and fills in records lost to a crash before they were fsynced (Options.SyncInterval), as long
// as the log still holds their entries.

// IndexKey is the Detail key of a replicated record: the decimal log index of the entry it records.
const IndexKey = "raft-index"

// Index returns the log index of a replicated record, and false for any other record.
func (e Event) Index() (uint64, bool) {
	s, ok := e.Detail[IndexKey]
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseUint(s, 10, 64)
	return i, err == nil && i > 0
}

// LastIndex returns the highest log index among the replicated records of the log file at path
// (0 if it has none, or there is no file). It reads the file backwards from its end and stops at
// the last replicated record, so it reads little of a busy node's log; a line that does not parse
// is skipped (Open refuses a file whose last line is damaged).
func LastIndex(path string) (uint64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	const chunk = 64 << 10
	pos := fi.Size()
	var buf []byte // bytes [pos, end of the unprocessed part)
	for {
		j := bytes.LastIndexByte(buf, '\n')
		if j < 0 && pos > 0 {
			// No whole line in buf yet: read the chunk before it.
			if len(buf) > MaxLineSize {
				buf = nil // a line too long to be a record: skip what is read of it
			}
			n := int64(min(chunk, pos))
			pos -= n
			b := make([]byte, int(n)+len(buf))
			if _, err := f.ReadAt(b[:n], pos); err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("audit: %w", err)
			}
			copy(b[n:], buf)
			buf = b
			continue
		}
		line := buf[j+1:]
		if bytes.Contains(line, []byte(`"`+IndexKey+`":"`)) {
			if e, reason := parseLine(line); reason == "" {
				if i, ok := e.Index(); ok {
					return i, nil
				}
			}
		}
		if j < 0 {
			return 0, nil // the first line of the file
		}
		buf = buf[:j]
	}
}

// ReadReplicated reads a log from r and returns its replicated records, in file order. It does not
// check the chain: run Verify first.
func ReadReplicated(r io.Reader) ([]Event, error) {
	lr := &lineReader{br: bufio.NewReaderSize(r, MaxLineSize)}
	var out []Event
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		e, reason := parseLine(line)
		if reason != "" {
			return nil, &ChainError{Line: lr.n, Problem: ProblemMalformed, Reason: reason}
		}
		if _, ok := e.Index(); ok {
			out = append(out, e)
		}
	}
}

// FormatReplicated writes a replicated record as one line of what every node that applied the
// entry records alike: index, kind, key, request id, actor and detail, without the time, node, seq
// and hashes, which are each node's own. The lines of two nodes of a cluster can be compared with
// diff: `krypton audit verify -replicated` prints them.
func FormatReplicated(e Event) string {
	var b strings.Builder
	i, _ := e.Index()
	fmt.Fprintf(&b, "%d %s", i, e.Kind)
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, strconv.Quote(v))
		}
	}
	field("actor", e.Actor)
	field("tenant", e.Tenant)
	field("service", e.Service)
	if e.Version != 0 {
		field("version", strconv.FormatUint(uint64(e.Version), 10))
	}
	field("code", e.Code)
	field("reason", e.Reason)
	field("request-id", e.RequestID)
	keys := make([]string, 0, len(e.Detail))
	for k := range e.Detail {
		if k != IndexKey {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		field("detail."+k, e.Detail[k])
	}
	return b.String()
}
