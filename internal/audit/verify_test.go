package audit_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/internal/audit"
)

// rehash rewrites line (with its newline) after edit changed its body, with
// a hash that matches again: what someone who can write the file can do.
func rehash(t *testing.T, line []byte, edit func(string) string) []byte {
	t.Helper()
	s := strings.TrimSuffix(string(line), "\n")
	i := strings.LastIndex(s, `,"hash":"`)
	body := edit(s[:i] + "}")
	sum := sha256.Sum256([]byte(body))
	return []byte(body[:len(body)-1] + `,"hash":"` + hex.EncodeToString(sum[:]) + "\"}\n")
}

func TestVerifyNamesTheDamage(t *testing.T) {
	lines := writeLog(t, 8)
	edited := bytes.Replace(lines[4], []byte(`"tenant":"acme"`), []byte(`"tenant":"acmf"`), 1)
	rehashed := rehash(t, lines[4], func(b string) string { return strings.Replace(b, `"acme"`, `"evil"`, 1) })
	with := func(i int, l []byte) [][]byte {
		out := append([][]byte{}, lines...)
		out[i] = l
		return out
	}
	without := func(from, to int) [][]byte {
		return append(append([][]byte{}, lines[:from]...), lines[to:]...)
	}
	swap := func(i, j int) [][]byte {
		out := append([][]byte{}, lines...)
		out[i], out[j] = out[j], out[i]
		return out
	}
	for _, tc := range []struct {
		name    string
		log     [][]byte
		line    int
		problem audit.Problem
		reason  string
	}{
		{"edited line", with(4, edited), 5, audit.ProblemAltered, "altered (its hash does not match its content)"},
		{"edited and re-hashed line", with(4, rehashed), 5, audit.ProblemAltered, "altered (its hash was recomputed: line 6 still links to its original hash)"},
		{"deleted line", without(3, 4), 4, audit.ProblemMissing, "hash chain broken: previous hash mismatch (a line is missing before it: seq jumps from 3 to 5)"},
		{"three deleted lines", without(2, 5), 3, audit.ProblemMissing, "3 lines are missing before it: seq jumps from 2 to 6"},
		{"deleted first line", without(0, 1), 1, audit.ProblemMissing, "seq jumps from 0 to 2"},
		{"reordered pair", swap(5, 6), 6, audit.ProblemReordered, "reordered: lines 6 and 7 are swapped"},
		{"moved down", swap(1, 4), 2, audit.ProblemReordered, "reordered: the line that belongs here (seq 2) is line 5"},
		{"repeated line", append(append([][]byte{}, lines[:3]...), lines[2:]...), 4, audit.ProblemReordered, "a repeat of line 3"},
		{"replaced last line", with(7, writeLog(t, 8)[7]), 8, audit.ProblemAltered, "previous hash mismatch"},
		{"truncated", append(without(7, 8), lines[7][:20]), 8, audit.ProblemTruncated, "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := audit.Verify(bytes.NewReader(join(tc.log)))
			var ce *audit.ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("Verify = %v, want a ChainError", err)
			}
			if ce.Line != tc.line || ce.Problem != tc.problem || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("Verify = line %d, %s, %q\nwant line %d, %s, %q", ce.Line, ce.Problem, ce.Reason, tc.line, tc.problem, tc.reason)
			}
			if !strings.HasPrefix(err.Error(), "audit: line ") {
				t.Fatalf("Error() = %q", err)
			}
		})
	}
}
