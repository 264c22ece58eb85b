package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// An operator snapshot file is:
//
//	magic "KRYSNAP1" | index u64 | term u64 | size u64 | FSM data (size bytes) | SHA-256
//
// all integers big-endian, the digest over everything before it. The FSM
// data is what Raft's snapshot holds (the cluster's state header: the applied
// index and the tombstones of removed nodes, tombstone.go; then the FSM's own
// Persist output). Restore checks the digest
// before it touches the cluster, so a truncated or altered file is refused
// whole.
var snapshotMagic = [8]byte{'K', 'R', 'Y', 'S', 'N', 'A', 'P', '1'}

const snapshotFileHeaderLen = 8 + 8 + 8 + 8

// Snapshot writes a snapshot of the FSM to w, for backups. It first runs
// Barrier, so the snapshot includes every write acknowledged before the
// call, wherever it was made.
func (c *Cluster) Snapshot(ctx context.Context, w io.Writer) error {
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	meta, rc, err := c.openSnapshot()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	var hdr [snapshotFileHeaderLen]byte
	copy(hdr[:8], snapshotMagic[:])
	binary.BigEndian.PutUint64(hdr[8:], meta.Index)
	binary.BigEndian.PutUint64(hdr[16:], meta.Term)
	binary.BigEndian.PutUint64(hdr[24:], uint64(meta.Size))
	if _, err := mw.Write(hdr[:]); err != nil {
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	n, err := io.Copy(mw, rc)
	if err != nil {
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	if n != meta.Size {
		return fmt.Errorf("cluster: snapshot is %d bytes, expected %d", n, meta.Size)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("cluster: write snapshot: %w", err)
	}
	return nil
}

func (c *Cluster) openSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	f := c.raft.Snapshot()
	err := f.Error()
	if err == nil {
		return f.Open()
	}
	if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil, nil, mapRaftErr(err)
	}
	// Nothing applied since the last snapshot: that one is current.
	list, err := c.snaps.List()
	if err != nil || len(list) == 0 {
		return nil, nil, fmt.Errorf("cluster: no snapshot to open: %v", err)
	}
	return c.snaps.Open(list[0].ID)
}

// Restore replaces the FSM state of the whole cluster with a snapshot
// written by Snapshot. It must run on the leader (ErrNotLeader
// otherwise; Leader says which node that is). The file is checked and
// spooled to DataDir before Raft sees it. Writes in flight are aborted
// (ErrLeadershipLost) and followers receive the snapshot through Raft.
func (c *Cluster) Restore(ctx context.Context, r io.Reader) error {
	return c.RestoreChecked(ctx, r, nil)
}

// RestoreChecked is Restore, with a last check of the FSM data (what SnapshotFSMData returns)
// once the file is verified: no entry proposed on this node is in flight while check runs and
// none is proposed until the restore is done, and every earlier one has been applied. An error
// from check is returned as it is and the cluster is untouched.
func (c *Cluster) RestoreChecked(ctx context.Context, r io.Reader, check func(fsmData io.Reader) error) error {
	if c.isShutdown() {
		return ErrShutdown
	}
	if !c.IsLeader() {
		return ErrNotLeader
	}
	c.restoreMu.Lock()
	defer c.restoreMu.Unlock()

	tmp, err := os.CreateTemp(c.cfg.DataDir, "restore-*.snap")
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	br := bufio.NewReader(r)
	var hdr [snapshotFileHeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if [8]byte(hdr[:8]) != snapshotMagic {
		return fmt.Errorf("%w: not a krypton cluster snapshot", ErrBadSnapshot)
	}
	meta := &raft.SnapshotMeta{
		Version: raft.SnapshotVersionMax,
		Index:   binary.BigEndian.Uint64(hdr[8:]),
		Term:    binary.BigEndian.Uint64(hdr[16:]),
		Size:    int64(binary.BigEndian.Uint64(hdr[24:])),
	}
	if meta.Size < snapshotHeaderLen {
		return fmt.Errorf("%w: size %d", ErrBadSnapshot, meta.Size)
	}
	h := sha256.New()
	h.Write(hdr[:])
	if n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(br, meta.Size)); err != nil || n != meta.Size {
		return fmt.Errorf("%w: truncated (%d of %d bytes): %v", ErrBadSnapshot, n, meta.Size, err)
	}
	var sum [sha256.Size]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return fmt.Errorf("%w: missing checksum", ErrBadSnapshot)
	}
	if [sha256.Size]byte(h.Sum(nil)) != sum {
		return fmt.Errorf("%w: checksum mismatch", ErrBadSnapshot)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	fileIndex, _, hdrLen, err := readStateHeader(io.LimitReader(tmp, meta.Size))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	dataLen := meta.Size - hdrLen

	// Membership is not part of a backup: Raft keeps the current configuration across an
	// operator's restore, and the tombstones of removed nodes stay with it. The file's are
	// replaced by the cluster's current ones (memberMu: none is being written meanwhile; the
	// barrier: every one committed is applied), so that a backup from before a removal does not
	// lift it, nor one from before a re-join bar the node again.
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	if check != nil {
		c.applyGate.Lock()
		defer c.applyGate.Unlock()
	}
	// Every entry proposed before the gate closed is resolved; a barrier makes sure the FSM has
	// applied them (and any forwarded here before this node led).
	if err := c.waitFuture(ctx, c.raft.Barrier(timeoutOf(ctx))); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	if check != nil {
		if _, err := tmp.Seek(hdrLen, io.SeekStart); err != nil {
			return fmt.Errorf("cluster: restore: %w", err)
		}
		if err := check(io.LimitReader(tmp, dataLen)); err != nil {
			return err
		}
	}
	stateHdr, err := encodeStateHeader(fileIndex, c.fsm.tombstoneList())
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	if _, err := tmp.Seek(hdrLen, io.SeekStart); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	meta.Size = int64(len(stateHdr)) + dataLen
	body := io.MultiReader(bytes.NewReader(stateHdr), io.LimitReader(tmp, dataLen))

	// Raft re-indexes the snapshot past everything it has; the FSM
	// wrapper records that index instead of the one in the file
	// (hashicorp/raft restoreUserSnapshot: max(last index, meta.Index)+1,
	// computed while its main loop is blocked, so LastIndex is stable).
	metaIndex := meta.Index
	c.fsm.userRestoreIndex = func() uint64 { return max(c.raft.LastIndex(), metaIndex) + 1 }
	c.fsm.userRestoring.Store(true)
	defer c.fsm.userRestoring.Store(false)

	// Not abandoned on ctx: the temporary file must outlive Raft's reader.
	// The timeout bounds the wait.
	err = c.raft.Restore(meta, body, timeoutOf(ctx))
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", mapRaftErr(err))
	}
	c.logger.Info("restored snapshot", "snapshot-index", meta.Index)
	return nil
}

// SnapshotFSMData checks an operator snapshot file written by Snapshot (its header and digest) and
// returns the FSM's own snapshot inside it, so that a caller can inspect a snapshot before it
// restores it (the region refuses one that would bring revoked keys back).
func SnapshotFSMData(file []byte) ([]byte, error) {
	if len(file) < snapshotFileHeaderLen+8+sha256.Size || !bytes.Equal(file[:8], snapshotMagic[:]) {
		return nil, fmt.Errorf("%w: not a snapshot file", ErrBadSnapshot)
	}
	body, sum := file[:len(file)-sha256.Size], file[len(file)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("%w: checksum does not match", ErrBadSnapshot)
	}
	size := binary.BigEndian.Uint64(file[24:32])
	data := body[snapshotFileHeaderLen:]
	if uint64(len(data)) != size || size < 8 {
		return nil, fmt.Errorf("%w: size does not match", ErrBadSnapshot)
	}
	// The cluster's state header (applied index, tombstones) comes first; the FSM's snapshot
	// follows.
	_, fsmData, err := splitStateHeader(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return fsmData, nil
}

// refusedSnapshotsDir holds, under DataDir, the newest snapshot the FSM refused, for inspection.
const refusedSnapshotsDir = "snapshots-refused"

// quarantineSnapshot takes a snapshot the FSM refused (ErrSnapshotRefused) out of the snapshot
// store, into DataDir/snapshots-refused (which keeps only the newest): left in the store, a
// snapshot refused on install would be restored unchecked at the next start, and sent to other
// nodes as this node's newest should it lead. At a start it is taken out only if the node can do
// without it: an older snapshot is left for Raft to try next, or the log begins at index 1.
// Otherwise it stays, the start fails, and the FSM's error says what the snapshot lacks.
func (c *Cluster) quarantineSnapshot(meta raft.SnapshotMeta, kind RestoreKind) {
	if kind == RestoreInstall {
		// The one Raft has just stored from the leader is the newest, and ahead of this node's
		// state: a snapshot of its own (opened by a backup meanwhile) is neither.
		list, err := c.snaps.List()
		if err != nil || len(list) == 0 || list[0].ID != meta.ID || meta.Index <= c.fsm.applied.Load() {
			c.logger.Error("cannot tell which snapshot the refused install stored; left in the store", "snapshot-id", meta.ID, "error", err)
			return
		}
	}
	if kind == RestoreStartup {
		list, err := c.snaps.List()
		if err != nil {
			c.logger.Error("cannot list snapshots; the refused snapshot stays", "snapshot-id", meta.ID, "error", err)
			return
		}
		older := false
		for _, m := range list {
			older = older || m.ID != meta.ID
		}
		first, err := c.logs.FirstIndex()
		switch {
		case older:
		case err == nil && first <= 1:
			c.fellBackToLog.Store(true)
		default:
			c.logger.Error("the state machine refused this node's only snapshot and the log no longer begins at index 1: cannot start without it",
				"snapshot-id", meta.ID, "snapshot-index", meta.Index)
			return
		}
	}
	src := filepath.Join(c.cfg.DataDir, "snapshots", meta.ID)
	dir := filepath.Join(c.cfg.DataDir, refusedSnapshotsDir)
	// The leader sends a refused snapshot again and again: keep one, not each copy.
	err := os.RemoveAll(dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err == nil {
		err = os.Rename(src, filepath.Join(dir, meta.ID))
	}
	if err != nil {
		// It must not stay either way: a removal is better than a snapshot restored unchecked.
		c.logger.Error("cannot move a refused snapshot aside; removing it", "snapshot-id", meta.ID, "error", err)
		if err := os.RemoveAll(src); err != nil {
			c.logger.Error("cannot remove a refused snapshot", "snapshot-id", meta.ID, "error", err)
		}
		return
	}
	c.logger.Warn("took a refused snapshot out of the snapshot store", "snapshot-id", meta.ID,
		"snapshot-index", meta.Index, "restore", kind.String(), "moved-to", filepath.Join(dir, meta.ID))
}
