// Raft snapshots of the state machine: encoding, decoding and checking the whole state.

package govfsm

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/wrap"
)

// Snapshot implements raft.FSM: it encodes the state now (between Applies) and Persist writes the
// bytes. Encoding here costs a copy of the state in memory but keeps Persist free of any lock.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.st.encode()
	if err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

// encode returns the state's snapshot bytes. encoding/json writes struct fields in order and map
// keys sorted, so equal states encode to equal bytes on every node.
func (s *state) encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("governance: encode snapshot: %w", err)
	}
	return b, nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("governance: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}

// Restore implements raft.FSM: it replaces the whole state with the snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error { return f.restore(rc, false) }

// restore replaces the state with the snapshot in rc; if keep, only if the snapshot keeps every
// revocation of the state now (state.keepsRevocations), checked under the same lock.
func (f *FSM) restore(rc io.ReadCloser, keep bool) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("governance: read snapshot: %w", err)
	}
	st, err := decodeState(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if keep {
		if err := f.st.keepsRevocations(st); err != nil {
			return err
		}
	}
	f.st = st
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

// decodeState parses and checks a snapshot: event cursors ascending and gapless after the floor,
// names valid, every
// cross-reference in range. A snapshot that fails is refused whole.
func decodeState(b []byte) (*state, error) {
	st := newState()
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("governance: decode snapshot: %w", err)
	}
	bad := func(what string) error { return fmt.Errorf("governance: bad snapshot: %s", what) }
	if st.Tenants == nil {
		st.Tenants = map[string]*tenant{}
	}
	if st.Regions == nil {
		st.Regions = map[string]*region{}
	}
	if st.Head == 0 && st.Floor == 0 {
		st.Head = uint64(len(st.Events)) // a snapshot from before compaction
	}
	n := st.Head
	// Cursors ascend; after the floor they run gapless to the head (compact.go).
	if st.Floor > n || uint64(len(st.Events)) < n-st.Floor {
		return nil, bad("event log")
	}
	live := len(st.Events) - int(n-st.Floor)
	for i, e := range st.Events {
		if e == nil || e.Cursor == 0 || e.Cursor > n || wrap.ValidateName(e.Tenant) != nil ||
			(i > 0 && e.Cursor <= st.Events[i-1].Cursor) || (i < live) != (e.Cursor <= st.Floor) {
			return nil, bad("event log")
		}
	}
	if st.Counts == nil { // a snapshot from before compaction: its log is whole
		st.Counts = map[Kind]uint64{}
		for _, e := range st.Events {
			st.Counts[e.Kind]++
		}
	}
	// What the state names as its revocation and anchor deletion events compaction keeps.
	held := func(c uint64) bool { return c == 0 || st.event(c) != nil }
	for name, t := range st.Tenants {
		if t == nil || t.Name != name || wrap.ValidateName(name) != nil || t.Cursor > n || !held(t.RevokeCursor) || !held(t.DeleteCursor) ||
			(t.OwnerKey != "" && !validOwnerKey(t.OwnerKey)) || len(t.Consents) > maxLiveConsents {
			return nil, bad("tenant")
		}
		for sn, sv := range t.Services {
			if sv == nil || wrap.ValidateName(sn) != nil || sv.Cursor > n || !held(sv.RevokeCursor) {
				return nil, bad("service")
			}
			for _, c := range sv.Versions {
				if c == 0 || !held(c) {
					return nil, bad("service")
				}
			}
		}
	}
	for name, r := range st.Regions {
		if r == nil || wrap.ValidateName(name) != nil || r.Cursor > n || !ValidConfig(r.ConfigIndex, r.Voters) {
			return nil, bad("region")
		}
	}
	for _, r := range st.Requests {
		if r == nil || r.Cursor > n || st.reqIndex[r.ID] != nil {
			return nil, bad("request ids")
		}
		st.reqIndex[r.ID] = r
	}
	return st, nil
}

// Encode returns the state's snapshot bytes (for tests and tools).
func (f *FSM) Encode() ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.encode()
}
