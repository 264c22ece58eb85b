package governance

import (
	"context"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/governance/govfsm"
)

// Backups and restores (DESIGN.md, "Snapshots, backups and restores"); the check that a restore
// undoes no revocation is the state machine's (package govfsm, restore.go).

// Snapshot writes a backup of governance's state to w: Raft's newest snapshot after a barrier, in
// the cluster's snapshot file format (cluster.Snapshot), which Restore reads.
func (n *Node) Snapshot(ctx context.Context, w io.Writer) error {
	return n.cl.Snapshot(ctx, w)
}

// Restore replaces governance's state with a backup Snapshot wrote. It runs on the leader
// (cluster.ErrNotLeader otherwise) and is refused, with the state untouched, if the snapshot lacks
// a revocation the event log holds (ErrSnapshotLacksRevocations, wrapped by an error naming up to
// five of them): restore a snapshot taken after them. The check runs under the cluster's apply gate
// (cluster.RestoreChecked): no revocation is applied between it and the restore. Followers check
// the snapshot the leader then sends them the same way (RestoreKind).
//
// Node.Cluster().Restore skips the check: it is for tests of the followers' check only.
func (n *Node) Restore(ctx context.Context, r io.Reader) error {
	return n.cl.RestoreChecked(ctx, r, func(data io.Reader) error {
		b, err := io.ReadAll(data)
		if err != nil {
			return fmt.Errorf("governance: read snapshot: %w", err)
		}
		return n.fsm.CheckSnapshot(b)
	})
}

// RestoreKind implements cluster.KindRestorer: a snapshot the leader sends (InstallSnapshot) is
// refused if it lacks a revocation of this node's event log; the node keeps its state and the
// leader sends again later. The node's own snapshot at start is followed by its log; an operator's
// restore was checked on the leader under the apply gate (Restore), and Raft panics if the FSM
// refuses one, so neither is checked here. A refusal wraps cluster.ErrSnapshotRefused, so the
// cluster also takes the refused snapshot out of the store (it would otherwise be the newest and
// restored, unchecked, at the next start).
//
// A snapshot restored here whole has its commands' audit records on the nodes that applied them,
// not here: the node records that (auditInstalled), unless its audit log records the index.
func (f StateMachine) RestoreKind(rc io.ReadCloser, kind cluster.RestoreKind, index uint64) error {
	if kind != cluster.RestoreInstall {
		if err := f.Restore(rc); err != nil {
			return err
		}
	} else if err := f.RestoreChecked(rc); err != nil {
		return fmt.Errorf("%w: %w", cluster.ErrSnapshotRefused, err)
	}
	if f.n != nil {
		f.n.auditInstalled(index)
	}
	return nil
}

// Snapshot fsyncs the audit log before Raft captures the state: the log entries a snapshot covers
// are compacted away and not replayed at a restart, so their records must be on disk.
func (f StateMachine) Snapshot() (raft.FSMSnapshot, error) {
	if f.n != nil {
		if err := f.n.audit.Sync(); err != nil {
			return nil, err
		}
	}
	return f.FSM.Snapshot()
}

// StateMachine is the state machine as the cluster runs it: package govfsm's, with the restore
// kinds of package cluster, which govfsm does not link (as region's regionFSM is for fsm), and the
// node whose audit log records its snapshots (nil in tests of the state machine alone).
type StateMachine struct {
	*govfsm.FSM
	n *Node
}

var _ cluster.KindRestorer = StateMachine{}
