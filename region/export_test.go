package region

import (
	"bytes"
	"context"
	"time"

	"github.com/kryptonkms/krypton/fsm"
)

// RestoreUnchecked restores an operator snapshot file through the cluster without the admin
// API's checks, as a leader without them would: the followers' own check is what stands.
func (n *Node) RestoreUnchecked(ctx context.Context, file []byte) error {
	return n.cl.Restore(ctx, bytes.NewReader(file))
}

// RefusedSnapshots counts the snapshots from a leader this node refused.
func (n *Node) RefusedSnapshots() uint64 { return n.refusedSnapshots.Load() }

// LeaseRunsOutAt is when a fence started now on this node would stop waiting for node id, if it
// did not confirm: the end of the last lease it may hold, as this node knows it.
func (n *Node) LeaseRunsOutAt(id string) time.Time {
	return n.leaseRunsOut(time.Now(), n.fenceWait())(id)
}

// LeaseEndsAt is when this node's own serving lease runs out; the zero time if it holds none.
func (n *Node) LeaseEndsAt() time.Time {
	if d := n.lease.expiresIn(); d > 0 {
		return time.Now().Add(d)
	}
	return time.Time{}
}

// RegionFormat is the lowest log format the voters advertise, and a voter that advertises it.
func (n *Node) RegionFormat() (int, string) { return n.regionFormat() }

// GateEntry adapts e to the region's log format as a write would (upgrade.go).
func (n *Node) GateEntry(e *fsm.Entry) error { return n.gateEntry(e) }
