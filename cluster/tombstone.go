package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// Tombstones: a removal is a decision of the replicated state, not of the leader that made it
// (issue 16). Remove first commits a tombstone naming the node, then the configuration change;
// Join (an operator's explicit join) commits the tombstone's removal before it adds the voter.
// Every node applies them, so every future leader knows which nodes were removed: no code path
// that adds a voter on its own (reconcile's address move) adds a tombstoned node, a join asked
// before a later removal does not undo it, and `krypton members` shows the node as removed.
//
// The entries are Raft commands marked in raft.Log.Extensions (membershipExt): the wrapper
// (trackingFSM) applies them and the caller's FSM never sees them. Snapshots carry the
// tombstones ahead of the FSM's data (writeStateHeader).

// membershipExt marks the cluster's own log entries.
var membershipExt = []byte("krypton/cluster/membership/1")

// Membership commands.
const (
	opTombstone = "remove"
	opReadmit   = "readmit"
)

type membershipCmd struct {
	Op string `json:"op"`
	ID string `json:"id"`
	// At is the leader's wall clock when it proposed the entry (Unix milliseconds), for
	// operators: the entry, not each node's clock, says when.
	At int64 `json:"at,omitempty"`
}

// Tombstone records that node ID was removed from the configuration, at Raft index Index, and
// stays out until an operator joins it again.
type Tombstone struct {
	ID        string    `json:"id"`
	Index     uint64    `json:"index"`
	RemovedAt time.Time `json:"at"`
}

// applyMembership applies one of the cluster's own entries. It is deterministic: the entry
// carries everything it records.
func (f *trackingFSM) applyMembership(l *raft.Log) any {
	var cmd membershipCmd
	if err := json.Unmarshal(l.Data, &cmd); err != nil || cmd.ID == "" {
		// Written only by this package: a bug or a newer version's entry. Ignoring it on every
		// node alike keeps the replicas equal.
		return fmt.Errorf("cluster: undecodable membership entry at index %d", l.Index)
	}
	f.tombMu.Lock()
	defer f.tombMu.Unlock()
	switch cmd.Op {
	case opTombstone:
		if f.tombs == nil {
			f.tombs = make(map[string]Tombstone)
		}
		f.tombs[cmd.ID] = Tombstone{ID: cmd.ID, Index: l.Index, RemovedAt: time.UnixMilli(cmd.At).UTC()}
	case opReadmit:
		delete(f.tombs, cmd.ID)
	default:
		return fmt.Errorf("cluster: unknown membership op %q at index %d", cmd.Op, l.Index)
	}
	return nil
}

// tombstone returns node id's tombstone, if any.
func (f *trackingFSM) tombstone(id string) (Tombstone, bool) {
	f.tombMu.RLock()
	defer f.tombMu.RUnlock()
	t, ok := f.tombs[id]
	return t, ok
}

// tombstoneList returns the tombstones sorted by node id.
func (f *trackingFSM) tombstoneList() []Tombstone {
	f.tombMu.RLock()
	defer f.tombMu.RUnlock()
	out := make([]Tombstone, 0, len(f.tombs))
	for _, t := range f.tombs {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (f *trackingFSM) setTombstones(list []Tombstone) {
	m := make(map[string]Tombstone, len(list))
	for _, t := range list {
		m[t.ID] = t
	}
	f.tombMu.Lock()
	f.tombs = m
	f.tombMu.Unlock()
}

// The state header that begins every snapshot the wrapper persists. Two forms:
//
//	v0: index u64                                          (no tombstones; what older versions wrote)
//	v1: stateHeaderMagic | index u64 | n u32 | n bytes of JSON tombstones
//
// The magic's first byte has its top bit set, so it is never a v0 index (Raft would need 2^63
// entries): a snapshot of an older version restores unchanged, and one without tombstones is
// written in v0 form, which older versions can still install.
var stateHeaderMagic = [8]byte{0xff, 'K', 'R', 'Y', 'T', 'O', 'M', 'B'}

// maxTombstoneBytes bounds the tombstone section a snapshot may carry.
const maxTombstoneBytes = 16 << 20

// encodeStateHeader returns the header for a snapshot at index holding tombs.
func encodeStateHeader(index uint64, tombs []Tombstone) ([]byte, error) {
	if len(tombs) == 0 {
		return binary.BigEndian.AppendUint64(nil, index), nil
	}
	js, err := json.Marshal(tombs)
	if err != nil {
		return nil, err
	}
	if len(js) > maxTombstoneBytes {
		return nil, fmt.Errorf("cluster: %d bytes of tombstones, more than a snapshot carries", len(js))
	}
	b := make([]byte, 0, len(stateHeaderMagic)+8+4+len(js))
	b = append(b, stateHeaderMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, index)
	b = binary.BigEndian.AppendUint32(b, uint32(len(js)))
	return append(b, js...), nil
}

// readStateHeader reads a snapshot's state header from r and returns the index, the tombstones
// and the header's length in bytes; the FSM's own data follows.
func readStateHeader(r io.Reader) (index uint64, tombs []Tombstone, n int64, err error) {
	var first [8]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return 0, nil, 0, fmt.Errorf("cluster: read snapshot header: %w", err)
	}
	if first != stateHeaderMagic {
		return binary.BigEndian.Uint64(first[:]), nil, 8, nil
	}
	var rest [12]byte
	if _, err := io.ReadFull(r, rest[:]); err != nil {
		return 0, nil, 0, fmt.Errorf("cluster: read snapshot header: %w", err)
	}
	index = binary.BigEndian.Uint64(rest[:8])
	size := binary.BigEndian.Uint32(rest[8:])
	if size > maxTombstoneBytes {
		return 0, nil, 0, fmt.Errorf("cluster: snapshot header: %d bytes of tombstones", size)
	}
	js := make([]byte, size)
	if _, err := io.ReadFull(r, js); err != nil {
		return 0, nil, 0, fmt.Errorf("cluster: read snapshot tombstones: %w", err)
	}
	if err := json.Unmarshal(js, &tombs); err != nil {
		return 0, nil, 0, fmt.Errorf("cluster: snapshot tombstones: %w", err)
	}
	return index, tombs, int64(len(stateHeaderMagic) + len(rest) + len(js)), nil
}

// splitStateHeader is readStateHeader over a byte slice: it returns the tombstones and the FSM's
// data.
func splitStateHeader(data []byte) ([]Tombstone, []byte, error) {
	_, tombs, n, err := readStateHeader(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	return tombs, data[n:], nil
}

// Removed returns the tombstones of removed nodes this node has applied, sorted by node id: nodes
// removed from the configuration that no code path adds back until an operator joins them.
func (c *Cluster) Removed() ([]Tombstone, error) {
	if c.isShutdown() {
		return nil, ErrShutdown
	}
	return c.fsm.tombstoneList(), nil
}

// proposeMembership commits one of the cluster's own entries; the caller leads and holds memberMu.
func (c *Cluster) proposeMembership(ctx context.Context, op, id string) error {
	data, err := json.Marshal(membershipCmd{Op: op, ID: id, At: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	if c.isShutdown() {
		return ErrShutdown // drainFSM waits only for entries already proposed
	}
	f := c.raft.ApplyLog(raft.Log{Data: data, Extensions: membershipExt}, timeoutOf(ctx))
	if err := c.waitFuture(ctx, f); err != nil {
		return err
	}
	if resp, ok := f.Response().(error); ok && resp != nil {
		return resp
	}
	return nil
}
