package fsm

import (
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// FSM adapts a State to raft.FSM: it decodes log entries, applies them, and
// takes and restores snapshots. Queries go to State().
type FSM struct {
	state *State
}

var (
	_ raft.FSM                = (*FSM)(nil)
	_ raft.ConfigurationStore = (*FSM)(nil)
)

// New returns an FSM over an empty State.
func New(opts Options) *FSM {
	return &FSM{state: NewState(opts)}
}

// State returns the state machine, for queries.
func (f *FSM) State() *State { return f.state }

// AppliedIndex returns the log index of the last entry applied or restored:
// the cluster's read barrier waits for it. Raft hands the FSM command and
// configuration entries only, so after a no-op or barrier entry it can be
// below raft's own applied index.
func (f *FSM) AppliedIndex() uint64 { return f.state.AppliedIndex() }

// Hash returns State().Hash().
func (f *FSM) Hash() [32]byte { return f.state.Hash() }

// Apply decodes and applies one committed log entry. It returns a Result or
// an error wrapping one of the sentinels (see EncodeResponse). An entry that
// cannot be decoded is a bug, or a newer node's entry on an older node: to
// apply anything else after it would let this node diverge, so Apply panics.
func (f *FSM) Apply(l *raft.Log) any {
	e, err := Decode(l.Data)
	if err != nil {
		panic(fmt.Sprintf("fsm: cannot decode log entry at index %d (term %d): %v; stopping rather than diverging", l.Index, l.Term, err))
	}
	res, err := f.state.Apply(l.Index, e)
	if err != nil {
		return err
	}
	return res
}

// StoreConfiguration implements raft.ConfigurationStore so that AppliedIndex
// also advances over configuration entries. The state ignores membership.
func (f *FSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.state.applied.Store(index)
}

// Snapshot captures the state (copy-on-write: constant time, no copy) for
// Persist to write while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{root: f.state.capture(), index: f.state.AppliedIndex()}, nil
}

// Restore replaces the whole state with a snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.state.Restore(rc)
}

// RestoreChecked replaces the whole state with a snapshot that check accepts
// (State.RestoreChecked).
func (f *FSM) RestoreChecked(rc io.ReadCloser, check func(*State) error) error {
	defer rc.Close()
	return f.state.RestoreChecked(rc, check)
}

type snapshot struct {
	root  *root
	index uint64
}

// Persist writes the captured state to sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.root, s.index); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release drops the captured state.
func (s *snapshot) Release() { s.root = nil }
