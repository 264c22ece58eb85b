package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// trackingFSM wraps the caller's FSM to record the index of the last log
// the FSM has actually applied. raft.AppliedIndex cannot serve the read
// barrier: it counts entries handed to the FSM goroutine, not applied
// (DESIGN.md, "Read barrier").
//
// It also applies the cluster's own entries, the tombstones of removed
// nodes (tombstone.go), which the caller's FSM never sees.
//
// Restore does not receive the snapshot's index from Raft, so each
// snapshot the wrapper persists starts with a state header holding the
// snapshot's Raft index (and the tombstones: encodeStateHeader), the index
// handed to Persist by indexingStore through the sink; Restore reads it back. That index may name a barrier or
// configuration entry after the last command: the state covers everything
// up to it either way. An operator restore (Cluster.Restore) is the
// exception: Raft re-indexes the snapshot, and the cluster tells the
// wrapper the index it will use.
type trackingFSM struct {
	inner raft.FSM

	applied atomic.Uint64

	mu      sync.Mutex
	waiters chan struct{} // closed when applied advances; nil if no one waits

	// userRestoreIndex, when non-zero, is the index an operator restore
	// in progress will be recorded at (set and cleared by Cluster.Restore).
	userRestoreIndex func() uint64
	userRestoring    atomic.Bool
	// starting is set while raft.NewRaft runs (it restores the newest local snapshot).
	starting atomic.Bool
	// store is the snapshot store Raft opens snapshots through (it says which one a restore
	// reads); refused takes a snapshot the FSM refused out of the store.
	store   *indexingStore
	refused func(meta raft.SnapshotMeta, kind RestoreKind)

	tombMu sync.RWMutex         // guards tombs
	tombs  map[string]Tombstone // removed nodes (tombstone.go), applied from the log
}

// RestoreKind says why Raft restores the FSM.
type RestoreKind int

const (
	// RestoreStartup: the node's own newest snapshot, at start; the log after it is replayed.
	RestoreStartup RestoreKind = iota
	// RestoreInstall: a snapshot the leader sent (InstallSnapshot), replacing this node's state.
	RestoreInstall
	// RestoreOperator: an operator's restore on this node, the leader (Cluster.Restore). Raft
	// panics if the FSM refuses it, so the FSM should not: RestoreChecked's check runs before.
	RestoreOperator
)

func (k RestoreKind) String() string {
	switch k {
	case RestoreStartup:
		return "startup"
	case RestoreInstall:
		return "install-snapshot"
	case RestoreOperator:
		return "operator"
	}
	return fmt.Sprintf("RestoreKind(%d)", int(k))
}

// KindRestorer is an FSM that wants to know why it is restored: the cluster then calls
// RestoreKind instead of Restore, with the Raft index the snapshot stands at (for
// RestoreStartup the log after that index is replayed next). A refusal of a RestoreInstall
// leaves the node on its state and Raft's leader sends the snapshot again later. A refusal
// that wraps ErrSnapshotRefused also takes the snapshot out of the store (RestoreInstall and
// RestoreStartup): at a start Raft then tries the next older snapshot, or, when there is none
// and the log still begins at index 1, the node starts from the log.
type KindRestorer interface {
	RestoreKind(rc io.ReadCloser, kind RestoreKind, index uint64) error
}

const snapshotHeaderLen = 8

func newTrackingFSM(inner raft.FSM) *trackingFSM {
	return &trackingFSM{inner: inner}
}

func (f *trackingFSM) Apply(l *raft.Log) any {
	var resp any
	if bytes.Equal(l.Extensions, membershipExt) {
		resp = f.applyMembership(l) // the cluster's own entry: the caller's FSM never sees it
	} else {
		resp = f.inner.Apply(l)
	}
	f.advance(l.Index)
	return resp
}

func (f *trackingFSM) advance(idx uint64) {
	f.applied.Store(idx)
	f.mu.Lock()
	if f.waiters != nil {
		close(f.waiters)
		f.waiters = nil
	}
	f.mu.Unlock()
}

// changed returns a channel closed at the next advance of the applied
// index.
func (f *trackingFSM) changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waiters == nil {
		f.waiters = make(chan struct{})
	}
	return f.waiters
}

func (f *trackingFSM) Snapshot() (raft.FSMSnapshot, error) {
	// Snapshot runs on the FSM goroutine, between Applies, so the index
	// read here is exactly the last command the inner snapshot captures;
	// Persist prefers the snapshot's Raft index when the sink carries it.
	idx := f.applied.Load()
	s, err := f.inner.Snapshot()
	if err != nil {
		return nil, err
	}
	return &trackingSnapshot{inner: s, index: idx, tombs: f.tombstoneList()}, nil
}

func (f *trackingFSM) Restore(rc io.ReadCloser) error {
	idx, tombs, _, err := readStateHeader(rc)
	if err != nil {
		rc.Close()
		return err
	}
	kind := RestoreInstall
	switch {
	case f.userRestoring.Load():
		kind = RestoreOperator
	case f.starting.Load():
		kind = RestoreStartup
	}
	if kind == RestoreOperator && f.userRestoreIndex != nil {
		idx = f.userRestoreIndex()
	}
	// The snapshot Raft opened for this restore. At a start nothing else opens one; on a
	// follower's install only a backup could, and the cluster checks it took the newest, ahead of
	// this node's state, before it takes it out (quarantineSnapshot).
	var opened raft.SnapshotMeta
	if f.store != nil {
		opened = f.store.lastOpened()
	}
	at := idx
	if kind == RestoreStartup && opened.ID != "" {
		at = opened.Index // an operator's restore is stored at a Raft index of its own
	}
	if kr, ok := f.inner.(KindRestorer); ok {
		err = kr.RestoreKind(rc, kind, at)
	} else {
		err = f.inner.Restore(rc)
	}
	if err != nil {
		if errors.Is(err, ErrSnapshotRefused) && opened.ID != "" && f.refused != nil &&
			(kind == RestoreInstall || kind == RestoreStartup) {
			f.refused(opened, kind)
		}
		return err
	}
	// The tombstones go with the state they were snapshotted with (an operator's restore carries
	// the cluster's current ones: RestoreChecked writes them in).
	f.setTombstones(tombs)
	f.advance(idx)
	return nil
}

type trackingSnapshot struct {
	inner raft.FSMSnapshot
	index uint64
	tombs []Tombstone
}

func (s *trackingSnapshot) Persist(sink raft.SnapshotSink) error {
	idx := s.index
	if is, ok := sink.(*indexedSink); ok {
		idx = is.index
	}
	hdr, err := encodeStateHeader(idx, s.tombs)
	if err != nil {
		sink.Cancel()
		return err
	}
	if _, err := sink.Write(hdr); err != nil {
		sink.Cancel()
		return fmt.Errorf("cluster: write snapshot header: %w", err)
	}
	return s.inner.Persist(sink)
}

func (s *trackingSnapshot) Release() { s.inner.Release() }

// indexingStore passes each snapshot's Raft index to Persist by wrapping
// the sink; hashicorp/raft hands Persist the sink Create returned. It also
// remembers the snapshot last opened, so that a restore knows which one it
// reads (Raft hands the FSM a reader that does not say).
type indexingStore struct {
	raft.SnapshotStore

	mu     sync.Mutex
	opened raft.SnapshotMeta
}

func (s *indexingStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err == nil {
		s.mu.Lock()
		s.opened = *meta
		s.mu.Unlock()
	}
	return meta, rc, err
}

func (s *indexingStore) lastOpened() raft.SnapshotMeta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

func (s *indexingStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &indexedSink{SnapshotSink: sink, index: index}, nil
}

type indexedSink struct {
	raft.SnapshotSink
	index uint64
}
