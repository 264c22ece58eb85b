package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/hashicorp/raft"
)

// These accessors serve the region's serving leases (region/DESIGN.md): a follower extends its
// lease only once it has applied the log up to the commit index its grant carries, and the leader
// reads that index after confirming its leadership.

// WaitApplied waits until this node's FSM reflects every command up to index. Entries the FSM
// never sees (no-ops, barriers, configuration changes) count as applied.
func (c *Cluster) WaitApplied(ctx context.Context, index uint64) error {
	if c.isShutdown() {
		return ErrShutdown
	}
	return c.waitApplied(ctx, index)
}

// CommitIndex is the highest log index this node knows to be committed.
func (c *Cluster) CommitIndex() uint64 { return c.raft.CommitIndex() }

// Term is this node's current Raft term.
func (c *Cluster) Term() uint64 { return c.raft.CurrentTerm() }

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
	// The cluster's 8-byte applied-index header comes first; the FSM's snapshot follows.
	return data[8:], nil
}

// Configuration returns a log position and the IDs of the voters of the latest Raft configuration
// this node knows at or after it, sorted. A region reports them to governance, which then accepts
// reports and feed subscriptions only from those voters (governance/DESIGN.md, "Who may report").
// hashicorp/raft does not expose the index of the configuration's own entry (its future's Index
// is always 0), so the position is this node's commit index read before the configuration: the
// configuration includes every configuration entry up to it, so a later position never pairs with
// an older committed configuration.
func (c *Cluster) Configuration() (index uint64, voters []string, err error) {
	if c.isShutdown() {
		return 0, nil, ErrShutdown
	}
	index = max(c.raft.CommitIndex(), 1)
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, nil, mapRaftErr(err)
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	slices.Sort(voters)
	return index, voters, nil
}
