package region

import (
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

// voters returns the current voters, and records them.
func (n *Node) voters() ([]string, error) {
	peers, err := n.cl.Peers()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range peers {
		if p.Suffrage == "Voter" {
			ids = append(ids, p.ID)
		}
	}
	n.watch.observe(ids, 2*n.cfg.leaseFenceWait(n.state.Settings().LeaseDuration))
	return ids, nil
}
