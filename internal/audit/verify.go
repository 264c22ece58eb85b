package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Problem says what kind of damage a ChainError found.
type Problem string

// Problems Verify tells apart.
const (
	// ProblemAltered: a line's content changed. Either its hash no longer
	// matches its bytes, or it was re-hashed and the next line still links
	// to its original hash, or it was replaced by a line that does not link
	// to the one before.
	ProblemAltered Problem = "altered"
	// ProblemMissing: one or more lines were removed before this one (its
	// seq jumps, and the lines it skips are nowhere later in the file).
	ProblemMissing Problem = "missing"
	// ProblemReordered: lines were moved (the line that belongs here is
	// later in the file) or repeated.
	ProblemReordered Problem = "reordered"
	// ProblemMalformed: the line is not an audit line at all (not JSON, no
	// hash field, unknown keys, too long).
	ProblemMalformed Problem = "malformed"
	// ProblemTruncated: the file ends in the middle of a line.
	ProblemTruncated Problem = "truncated"
)

// ChainError is returned by Verify for the first line that breaks the chain.
// It wraps ErrCorrupt.
type ChainError struct {
	// Line is the 1-based number of the first bad line: the altered line
	// (for a re-hashed line, the line itself, found because the next line
	// still links to its original hash); after deleted lines, the line that
	// follows the gap; after reordered lines, the first position that holds
	// the wrong line.
	Line int
	// Problem classifies the damage.
	Problem Problem
	// Reason says what is wrong, in words. It never quotes the line.
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit: line %d: %s", e.Line, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *ChainError) Unwrap() error { return ErrCorrupt }

// Result describes a chain that Verify found whole.
type Result struct {
	// Lines is the number of lines, which is also the last Seq.
	Lines int
	// LastHash is the Hash of the last line, or Genesis if there are no
	// lines: the Prev the next line must carry. Compare it with a copy
	// kept elsewhere to detect lines removed from the end.
	LastHash string
}

// reasonHashMismatch is parseLine's reason for a line whose hash does not
// match its bytes.
const reasonHashMismatch = "hash does not match the line"

// lineReader reads a log line by line, numbering the lines.
type lineReader struct {
	br *bufio.Reader
	n  int // number of the last line read
}

// next returns the next line without its newline (a copy), io.EOF at the
// end, or a *ChainError for a line too long or truncated.
func (r *lineReader) next() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	r.n++
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, &ChainError{Line: r.n, Problem: ProblemMalformed, Reason: fmt.Sprintf("line longer than %d bytes", MaxLineSize)}
	case errors.Is(err, io.EOF):
		if len(line) > 0 {
			return nil, &ChainError{Line: r.n, Problem: ProblemTruncated, Reason: "truncated line (no final newline)"}
		}
		return nil, io.EOF
	case err != nil:
		return nil, fmt.Errorf("audit: reading line %d: %w", r.n, err)
	}
	return append([]byte(nil), line[:len(line)-1]...), nil
}

// Verify reads a whole log from r and checks its chain: each line's hash, its
// link to the line before (Prev), its Seq (1, then +1), that the first line
// links to Genesis, and that the last line ends with a newline. It returns a
// *ChainError naming the first bad line and what happened to it (altered,
// missing lines before it, reordered), or another error if r fails.
//
// To tell a deleted line from a moved one, or a re-hashed line from its
// successor, Verify reads past the break: one line after it, or to the end
// of the file when lines seem to be missing.
//
// A chain only proves that no line was altered, removed or reordered before
// the last one Verify sees: removing lines from the end, or rewriting the
// whole file from some line on, leaves a valid chain. Keeping LastHash
// somewhere the writer of the file cannot change detects both.
func Verify(r io.Reader) (Result, error) {
	lr := &lineReader{br: bufio.NewReaderSize(r, MaxLineSize)}
	res := Result{LastHash: Genesis}
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		n := lr.n
		e, reason := parseLine(line)
		if reason == reasonHashMismatch {
			return res, &ChainError{Line: n, Problem: ProblemAltered, Reason: "altered (its hash does not match its content)"}
		}
		if reason != "" {
			return res, &ChainError{Line: n, Problem: ProblemMalformed, Reason: reason}
		}
		if checkLink(e, uint64(n), res.LastHash) != "" {
			return res, diagnose(lr, e, res.LastHash)
		}
		res.Lines = n
		res.LastHash = e.Hash
	}
}

// diagnose explains why e, just read as line lr.n, does not follow the line
// whose hash is want. It may read on.
func diagnose(lr *lineReader, e Event, want string) *ChainError {
	n := lr.n
	seq := uint64(n)
	switch {
	case e.Seq == seq && n == 1:
		return &ChainError{Line: 1, Problem: ProblemAltered,
			Reason: "hash chain broken: the first line does not link to the genesis hash (it was altered, or the log does not start here)"}
	case e.Seq == seq:
		// Either line n-1 was altered and re-hashed (then line n+1 still
		// links to line n), or line n itself was replaced.
		if next, ok := peekEvent(lr); ok && next.Prev == e.Hash && next.Seq == seq+1 {
			return &ChainError{Line: n - 1, Problem: ProblemAltered,
				Reason: fmt.Sprintf("altered (its hash was recomputed: line %d still links to its original hash)", n)}
		}
		return &ChainError{Line: n, Problem: ProblemAltered,
			Reason: fmt.Sprintf("hash chain broken: previous hash mismatch (this line was replaced, or line %d was altered and re-hashed)", n-1)}
	case e.Seq > seq && e.Prev == want:
		return &ChainError{Line: n, Problem: ProblemAltered,
			Reason: fmt.Sprintf("altered (seq is %d, want %d, yet it links to the line before)", e.Seq, seq)}
	case e.Seq > seq:
		// Lines are missing here, or were moved further down: look for the
		// line that belongs here.
		start := n
		for {
			line, err := lr.next()
			if err != nil {
				break // the end, or damage further on: nothing belongs here
			}
			if f, reason := parseLine(line); reason == "" && f.Seq == seq && f.Prev == want {
				if lr.n == start+1 {
					return &ChainError{Line: n, Problem: ProblemReordered,
						Reason: fmt.Sprintf("reordered: lines %d and %d are swapped", n, n+1)}
				}
				return &ChainError{Line: n, Problem: ProblemReordered,
					Reason: fmt.Sprintf("reordered: the line that belongs here (seq %d) is line %d", seq, lr.n)}
			}
		}
		missing := e.Seq - seq
		what := "a line is missing before it"
		if missing > 1 {
			what = fmt.Sprintf("%d lines are missing before it", missing)
		}
		return &ChainError{Line: n, Problem: ProblemMissing,
			Reason: fmt.Sprintf("hash chain broken: previous hash mismatch (%s: seq jumps from %d to %d)", what, seq-1, e.Seq)}
	case e.Hash == want:
		return &ChainError{Line: n, Problem: ProblemReordered,
			Reason: fmt.Sprintf("hash chain broken: a repeat of line %d", n-1)}
	default:
		return &ChainError{Line: n, Problem: ProblemReordered,
			Reason: fmt.Sprintf("hash chain broken: seq %d where %d is expected (a line was moved here from further up, or repeated)", e.Seq, seq)}
	}
}

// peekEvent reads and parses the next line; ok is false at the end or if
// the line is damaged.
func peekEvent(lr *lineReader) (Event, bool) {
	line, err := lr.next()
	if err != nil {
		return Event{}, false
	}
	e, reason := parseLine(line)
	return e, reason == ""
}

// checkLink says what is wrong, if anything, with e following a line whose
// hash is prev, when e should be number seq.
func checkLink(e Event, seq uint64, prev string) string {
	if e.Prev != prev {
		return "prev does not match the hash of the previous line"
	}
	if e.Seq != seq {
		return fmt.Sprintf("seq is %d, want %d", e.Seq, seq)
	}
	return ""
}
