package region

import (
	"slices"
	"sync"
	"time"
)

// voterWatch remembers, for nodes that were voters and are no longer, when this node first saw them
// gone. A removed node that is still running, or cut off, may hold a lease granted just before its
// removal; a revocation fence must wait that lease out too, not only the current voters'.
type voterWatch struct {
	mu    sync.Mutex // guards gone and seen
	seen  map[string]bool
	gone  map[string]time.Time // id -> first seen absent
	start time.Time
}

func newVoterWatch() *voterWatch {
	return &voterWatch{seen: map[string]bool{}, gone: map[string]time.Time{}, start: time.Now()}
}

// observe records the current voters; forget drops departures older than keep.
func (w *voterWatch) observe(voters []string, keep time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	current := make(map[string]bool, len(voters))
	for _, id := range voters {
		current[id] = true
		w.seen[id] = true
		delete(w.gone, id)
	}
	for id := range w.seen {
		if !current[id] {
			if _, ok := w.gone[id]; !ok {
				w.gone[id] = now
			}
		}
	}
	for id, t := range w.gone {
		if now.Sub(t) > keep {
			delete(w.gone, id)
			delete(w.seen, id)
		}
	}
}

// departed returns the nodes that left the voters recently, with when they were first seen gone.
func (w *voterWatch) departed() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]time.Time, len(w.gone))
	for id, t := range w.gone {
		out[id] = t
	}
	return out
}

// The region's voters, as this node knows the Raft configuration: the one list the fence waits
// for, lease renewal and the node service admit, and discovery reports.

// voterIDs returns the current voters, sorted.
func (n *Node) voterIDs() ([]string, error) {
	_, ids, err := n.cl.Configuration()
	return ids, err
}

// voters returns the current voters, and records them (the departures the fence waits out).
func (n *Node) voters() ([]string, error) {
	ids, err := n.voterIDs()
	if err != nil {
		return nil, err
	}
	n.watch.observe(ids, 2*n.cfg.leaseFenceWait(n.state.Settings().LeaseDuration))
	return ids, nil
}

// isVoter reports whether id is a voter in the Raft configuration as this node knows it.
func (n *Node) isVoter(id string) bool {
	ids, err := n.voterIDs()
	return err == nil && slices.Contains(ids, id)
}
