package clustertest

import (
	"encoding/json"
	"errors"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// FSM is a small append-only list for tests. Apply appends the command and
// returns it; a command starting with "err:" is not appended and returns an
// error made of the rest, to exercise error responses.
type FSM struct {
	mu      sync.Mutex // guards entries, applied
	entries [][]byte
	applied uint64

	holdMu     sync.Mutex // guards holdPrefix, holdCh
	holdPrefix string
	holdCh     chan struct{}
}

// Hold makes Apply of a command starting with prefix wait until release is called: this node's
// state machine stalls on it, as a node that stopped answering would (its Raft goroutines run on,
// and the leader's answer to a forwarded Apply never comes). release may be called more than once.
func (f *FSM) Hold(prefix string) (release func()) {
	ch := make(chan struct{})
	f.holdMu.Lock()
	f.holdPrefix, f.holdCh = prefix, ch
	f.holdMu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	f.holdMu.Lock()
	prefix, ch := f.holdPrefix, f.holdCh
	f.holdMu.Unlock()
	if ch != nil && len(l.Data) >= len(prefix) && string(l.Data[:len(prefix)]) == prefix {
		<-ch
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = l.Index
	if len(l.Data) >= 4 && string(l.Data[:4]) == "err:" {
		return errors.New(string(l.Data[4:]))
	}
	cmd := append([]byte(nil), l.Data...)
	f.entries = append(f.entries, cmd)
	return append([]byte(nil), cmd...)
}

// Entries returns a copy of the applied commands in order.
func (f *FSM) Entries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.entries))
	for i, e := range f.entries {
		out[i] = string(e)
	}
	return out
}

// Len returns how many commands have been applied.
func (f *FSM) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

// AppliedIndex returns the index of the last command applied (not counting
// restores).
func (f *FSM) AppliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// Snapshot implements raft.FSM: it captures the list (entries are never
// modified, so sharing them is safe).
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fsmSnapshot{entries: append([][]byte(nil), f.entries...)}, nil
}

// Restore implements raft.FSM, replacing all state.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var entries [][]byte
	if err := json.NewDecoder(rc).Decode(&entries); err != nil {
		return err
	}
	f.mu.Lock()
	f.entries = entries
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct{ entries [][]byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.entries); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
