package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/hashicorp/raft"
)

// This file holds what a node knows of the log: how far it has applied and committed, its term,
// the latest configuration (Peers, Configuration) and Raft's counters. The region's serving
// leases (region/DESIGN.md) read them: a follower extends its lease only once it has applied the
// log up to the commit index its grant carries, and the leader reads that index after confirming
// its leadership; the region reports the configuration's voters to governance.

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

// Stats returns Raft's diagnostic counters (raft.Raft.Stats) plus the
// FSM's applied index.
func (c *Cluster) Stats() map[string]string {
	s := c.raft.Stats()
	s["fsm_applied_index"] = fmt.Sprint(c.fsm.applied.Load())
	return s
}

// AppliedIndex returns the index of the last log entry the FSM applied.
func (c *Cluster) AppliedIndex() uint64 { return c.fsm.applied.Load() }

// AppliedThrough reports whether this node's FSM state includes every command
// up to index (entries the FSM never sees count as applied, as for
// WaitApplied). It does not wait; readiness checks poll it.
func (c *Cluster) AppliedThrough(index uint64) bool { return c.appliedThrough(index) }

// Peer is a server in the Raft configuration.
type Peer struct {
	ID       string
	Address  string
	Suffrage string // "Voter", "Nonvoter", "Staging"
	Leader   bool
}

// Peers returns the latest Raft configuration as this node knows it.
func (c *Cluster) Peers() ([]Peer, error) {
	if c.isShutdown() {
		return nil, ErrShutdown
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapRaftErr(err)
	}
	leader, _ := c.Leader()
	var out []Peer
	for _, s := range f.Configuration().Servers {
		out = append(out, Peer{
			ID:       string(s.ID),
			Address:  string(s.Address),
			Suffrage: s.Suffrage.String(),
			Leader:   string(s.ID) == leader,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
