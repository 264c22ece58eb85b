package govfsm_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/kryptonkms/krypton/governance/govfsm"
)

// FuzzDecodeCommand feeds arbitrary bytes to the log decoder: it must never panic, and a command it
// accepts must apply (to an empty state and to a populated one) without panicking,
// deterministically, and re-encode to a command that decodes the same.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range randomCommands(7, 40) {
		b, _ := c.Encode()
		f.Add(b)
	}
	f.Add([]byte(`{"op":"revoke","rid":"x","fp":"y","tenant":"a","service":"b","version":4294967295}`))
	f.Add([]byte(`{"op":"report","region":"eu","cursor":18446744073709551615}`))
	seed := govfsm.NewFSM()
	for _, c := range randomCommands(3, 100) {
		seed.ApplyCommand(c)
	}
	base, _ := seed.Encode()
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := govfsm.DecodeCommand(b)
		if err != nil {
			return
		}
		re, err := c.Encode()
		if err != nil {
			return
		}
		c2, err := govfsm.DecodeCommand(re)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		x, y := govfsm.NewFSM(), govfsm.NewFSM()
		if err := x.Restore(io.NopCloser(bytes.NewReader(base))); err != nil {
			t.Fatal(err)
		}
		if err := y.Restore(io.NopCloser(bytes.NewReader(base))); err != nil {
			t.Fatal(err)
		}
		x.ApplyCommand(c)
		y.ApplyCommand(c2)
		ex, _ := x.Encode()
		ey, _ := y.Encode()
		if !bytes.Equal(ex, ey) {
			t.Fatal("applying a command and its re-encoding diverged")
		}
		govfsm.NewFSM().ApplyCommand(c)
	})
}

// FuzzRestore feeds arbitrary snapshots to Restore: it must refuse or accept without panicking, and
// an accepted state must encode and restore to the same bytes.
func FuzzRestore(f *testing.F) {
	s := govfsm.NewFSM()
	for _, c := range randomCommands(11, 60) {
		s.ApplyCommand(c)
	}
	b, _ := s.Encode()
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		x := govfsm.NewFSM()
		if err := x.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			return
		}
		e1, err := x.Encode()
		if err != nil {
			t.Fatal(err)
		}
		y := govfsm.NewFSM()
		if err := y.Restore(io.NopCloser(bytes.NewReader(e1))); err != nil {
			t.Fatalf("re-encoded snapshot refused: %v", err)
		}
		e2, _ := y.Encode()
		if !bytes.Equal(e1, e2) {
			t.Fatal("snapshot not stable")
		}
		for _, c := range randomCommands(5, 20) {
			x.ApplyCommand(c)
		}
		x.Lags()
		x.EventsFor("eu", 0, 10)
	})
}
