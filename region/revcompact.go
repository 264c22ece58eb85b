package region

import (
	"context"
	"time"

	"github.com/kryptonkms/krypton/fsm"
)

// revocationCompactLoop is the leader duty that keeps the revocation log bounded (DESIGN.md,
// "Revocation log compaction"): every RevocationCompactInterval, while this node leads and the log
// holds more than RevocationHistory history entries, it proposes fsm.CompactRevocations through
// Raft, so every node drops the same entries at the same index. The revocations in force stay in
// the log (and in the durable set, revset.go); nothing reads the history but operators and tests.
func (n *Node) revocationCompactLoop() {
	defer n.wg.Done()
	// ctx ends when the node stops, so that a proposal in flight does not hold up Shutdown.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(n.cfg.RevocationCompactInterval)
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
		if f, _ := n.regionFormat(); f < formatOf(fsm.CompactRevocations{}) {
			continue // a voter of an older release could not decode it (upgrade.go)
		}
		through := n.state.RevocationCompactThrough(n.cfg.RevocationHistory)
		if through == 0 {
			continue
		}
		before := n.state.RevocationLogLen()
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := n.apply(actx, "", fsm.CompactRevocations{Through: through})
		acancel()
		if err != nil {
			n.log.Warn("compacting the revocation log failed; the next tick tries again", "err", err)
			continue
		}
		n.log.Info("revocation log compacted", "through-seq", through, "entries-before", before, "entries", n.state.RevocationLogLen())
	}
}
