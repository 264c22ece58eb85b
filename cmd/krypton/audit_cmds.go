package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/kryptonkms/krypton/internal/audit"
)

// auditCommand groups the commands that read audit logs.
func auditCommand() *command {
	return &command{
		name:     "audit",
		synopsis: "check audit logs",
		help:     "Every node writes its security events to a hash-chained JSON-lines audit log (DATA-DIR/audit.log); see docs/audit.md.",
		sub:      []*command{auditVerifyCommand()},
	}
}

func auditVerifyCommand() *command {
	var lastHash string
	var replicated bool
	return &command{
		name:     "verify",
		synopsis: "check an audit log's hash chain",
		usage:    "FILE",
		help: "Checks every line of an audit log: its own hash, its link to the line before, its sequence number.\n" +
			"Exit 0 and a summary if the chain is whole. Otherwise exit 1 and the first line that is altered,\n" +
			"missing lines before it, or out of order, e.g.\n" +
			"  krypton: audit.log: line 17: hash chain broken: previous hash mismatch (a line is missing before it: seq jumps from 16 to 18)\n" +
			"A chain cannot show lines removed from its end: compare the last hash it prints with a copy kept\n" +
			"elsewhere, or give that copy as -last-hash.\n" +
			"With -replicated it then prints the records of replicated state changes, one a line, without what\n" +
			"is each node's own (time, node, seq, hashes): every node of a region (or of governance) writes the\n" +
			"same lines, so `diff` of two nodes' output shows a change one of them did not record.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&lastHash, "last-hash", "", "the hash the last line must have (kept elsewhere); detects lines removed from the end")
			fs.BoolVar(&replicated, "replicated", false, "after the check, print the replicated records (the same on every node) instead of the summary")
		},
		run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != 1 {
				return usagef("audit verify takes one FILE")
			}
			path := fs.Arg(0)
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			res, err := audit.Verify(f)
			var ce *audit.ChainError
			if errors.As(err, &ce) {
				return fmt.Errorf("%s: line %d: %s", path, ce.Line, ce.Reason)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if lastHash != "" && lastHash != res.LastHash {
				return fmt.Errorf("%s: the last line (%d) is not the one whose hash is -last-hash: lines are missing from the end, or the end was rewritten", path, res.Lines)
			}
			if replicated {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					return err
				}
				events, err := audit.ReadReplicated(f)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				for _, e := range events {
					fmt.Fprintln(s.out, audit.FormatReplicated(e))
				}
				return nil
			}
			fmt.Fprintf(s.out, "%s: %d lines, hash chain intact\nlast hash %s\n", path, res.Lines, res.LastHash)
			return nil
		},
	}
}
