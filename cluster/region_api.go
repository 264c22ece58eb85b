package cluster

import "context"

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
