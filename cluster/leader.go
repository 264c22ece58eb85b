package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// LeaderChange describes who leads after a change of leadership. LeaderID
// is empty while there is no leader.
type LeaderChange struct {
	LeaderID   string
	LeaderAddr string
	// IsSelf is true when this node is the leader.
	IsSelf bool
}

// Leader returns the current leader's id and address as this node knows
// them; both are empty when no leader is known.
func (c *Cluster) Leader() (id, addr string) {
	a, i := c.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// State returns this node's Raft state.
func (c *Cluster) State() raft.RaftState { return c.raft.State() }

// LastContact returns when this node last heard from the leader; the
// leader itself returns the current time.
func (c *Cluster) LastContact() time.Time {
	if c.IsLeader() {
		return time.Now()
	}
	return c.raft.LastContact()
}

// WaitForLeader blocks until a leader is known and returns its id.
func (c *Cluster) WaitForLeader(ctx context.Context) (string, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if c.isShutdown() {
			return "", ErrShutdown
		}
		if id, _ := c.Leader(); id != "" {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-c.shutdownCh:
			return "", ErrShutdown
		case <-t.C:
		}
	}
}

// OnLeaderChange registers f to be called after every change of leader
// (including to none). Calls are made one at a time, in order, from one
// goroutine the cluster owns, with the state at the time of the call
// (changes in quick succession may be reported once); f must not block
// for long. The returned function unregisters f.
func (c *Cluster) OnLeaderChange(f func(LeaderChange)) (cancel func()) {
	c.obsMu.Lock()
	id := c.obsNext
	c.obsNext++
	c.observers[id] = f
	c.obsMu.Unlock()
	return func() {
		c.obsMu.Lock()
		delete(c.observers, id)
		c.obsMu.Unlock()
	}
}

func (c *Cluster) startObserver() {
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	c.raft.RegisterObserver(obs)
	c.goLoop(func() {
		defer c.raft.DeregisterObserver(obs)
		var last LeaderChange
		first := true
		for {
			select {
			case <-c.shutdownCh:
				return
			case <-ch:
			}
			id, addr := c.Leader()
			now := LeaderChange{LeaderID: id, LeaderAddr: addr, IsSelf: c.IsLeader() && id == c.cfg.NodeID}
			if !first && now == last {
				continue
			}
			first, last = false, now
			c.obsMu.Lock()
			fs := make([]func(LeaderChange), 0, len(c.observers))
			for _, f := range c.observers {
				fs = append(fs, f)
			}
			c.obsMu.Unlock()
			for _, f := range fs {
				f(now)
			}
		}
	})
}
