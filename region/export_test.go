package region

import (
	"bytes"
	"context"
)

// RestoreUnchecked restores an operator snapshot file through the cluster without the admin
// API's checks, as a leader without them would: the followers' own check is what stands.
func (n *Node) RestoreUnchecked(ctx context.Context, file []byte) error {
	return n.cl.Restore(ctx, bytes.NewReader(file))
}

// RefusedSnapshots counts the snapshots from a leader this node refused.
func (n *Node) RefusedSnapshots() uint64 { return n.refusedSnapshots.Load() }
