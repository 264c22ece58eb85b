package region

import (
	"context"
	"time"

	"github.com/kryptonkms/krypton/fsm"
)

// settingsLoop is the leader duty behind Config.Settings: whenever this node leads and the
// replicated settings differ from want, it proposes want, until the node stops. A region whose
// nodes are all started with the same Settings converges on them, whichever node leads.
func (n *Node) settingsLoop(want fsm.Settings) {
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
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !n.cl.IsLeader() || n.state.Settings() == want {
			continue
		}
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		if err := n.SetSettings(actx, want); err != nil {
			n.log.Warn("proposing the configured region settings failed; will retry", "err", err)
		} else {
			n.log.Info("region settings set from the node's configuration")
		}
		acancel()
	}
}
