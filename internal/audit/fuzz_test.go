package audit_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kryptonkms/krypton/internal/audit"
)

// FuzzVerify checks that Verify never panics, and that what it reports is
// consistent with its input, whatever the input. The seed corpus in
// testdata/fuzz/FuzzVerify holds valid logs and damaged ones.
func FuzzVerify(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := audit.Verify(bytes.NewReader(data))
		newlines := bytes.Count(data, []byte("\n"))
		if err == nil {
			if res.Lines != newlines || len(data) > 0 && data[len(data)-1] != '\n' {
				t.Fatalf("Verify accepted %d lines of input with %d newlines", res.Lines, newlines)
			}
			if len(res.LastHash) != 64 {
				t.Fatalf("LastHash %q", res.LastHash)
			}
			return
		}
		var ce *audit.ChainError
		if !errors.As(err, &ce) {
			t.Fatalf("Verify of an in-memory input failed with %v, not a ChainError", err)
		}
		if ce.Line < 1 || ce.Line > newlines+1 || res.Lines != ce.Line-1 {
			t.Fatalf("ChainError line %d, %d lines verified, %d newlines", ce.Line, res.Lines, newlines)
		}
	})
}
