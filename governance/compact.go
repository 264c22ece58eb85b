// The compactor: the leader proposes OpCompact when the pinning regions have moved past the floor
// (DESIGN.md, "Compaction").

package governance

import (
	"context"
	"time"

	"github.com/kryptonkms/krypton/governance/govfsm"
)

// compactLoop runs Compact every CompactInterval while this node leads, until the node stops.
func (n *Node) compactLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.CompactInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !n.cl.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		before := n.fsm.Floor()
		floor, err := n.Compact(ctx)
		cancel()
		switch {
		case err != nil:
			n.log.Warn("event log compaction failed; the next tick tries again", "err", err)
		case floor > before:
			n.log.Info("event log compacted", "floor", floor, "events-kept", n.fsm.LogLen(), "head", n.fsm.Head())
		}
	}
}

// Compact proposes an OpCompact if it would raise the floor, and returns the floor after it. The
// state machine computes the floor itself from the regions' reported cursors and the retention
// (govfsm/compact.go); this node's read only saves a write when nothing would change.
func (n *Node) Compact(ctx context.Context) (uint64, error) {
	now := time.Now().UnixNano()
	retention := n.cfg.EventRetention.Nanoseconds()
	head := n.fsm.Head()
	if target, floor := n.fsm.CompactTarget(head, retention, now); target <= floor {
		return floor, nil
	}
	r, err := n.propose(ctx, &govfsm.Command{Op: govfsm.OpCompact, Cursor: head, Retention: retention})
	if err != nil {
		return 0, err
	}
	return r.Recorded, nil
}
