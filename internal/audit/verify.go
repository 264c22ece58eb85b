package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ChainError is returned by Verify for the first line that breaks the chain.
// It wraps ErrCorrupt.
type ChainError struct {
	// Line is the 1-based number of the first bad line. After a deleted
	// line it is the line that follows the gap; after two swapped lines,
	// the first of them.
	Line int
	// Reason says what is wrong with it. It never quotes the line.
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

// Verify reads a whole log from r and checks its chain: each line's hash, its
// link to the line before (Prev), its Seq (1, then +1), that the first line
// links to Genesis, and that the last line ends with a newline. It returns a
// *ChainError naming the first bad line, or another error if r fails.
//
// A chain only proves that no line was altered, removed or reordered before
// the last one Verify sees: removing lines from the end, or rewriting the
// whole file from some line on, leaves a valid chain. Keeping LastHash
// somewhere the writer of the file cannot change detects both.
func Verify(r io.Reader) (Result, error) {
	br := bufio.NewReaderSize(r, MaxLineSize)
	res := Result{LastHash: Genesis}
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return res, &ChainError{Line: n, Reason: fmt.Sprintf("line longer than %d bytes", MaxLineSize)}
		case errors.Is(err, io.EOF):
			if len(line) > 0 {
				return res, &ChainError{Line: n, Reason: "truncated line (no final newline)"}
			}
			return res, nil
		case err != nil:
			return res, fmt.Errorf("audit: reading line %d: %w", n, err)
		}
		e, reason := parseLine(line[:len(line)-1])
		if reason == "" {
			reason = checkLink(e, uint64(n), res.LastHash)
		}
		if reason != "" {
			return res, &ChainError{Line: n, Reason: reason}
		}
		res.Lines = n
		res.LastHash = e.Hash
	}
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
