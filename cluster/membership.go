package cluster

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// joinLoop joins the gossip addresses in Config.Join, retrying until one
// answers: at a cold start of a whole region, peers come up in any order.
func (c *Cluster) joinLoop() {
	backoff := 100 * time.Millisecond
	for {
		n, err := c.gossip.list.Join(c.cfg.Join)
		if n > 0 {
			c.logger.Info("joined gossip", "contacted", n)
			return
		}
		c.logger.Debug("gossip join failed; retrying", "error", err)
		select {
		case <-c.shutdownCh:
			return
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// bootstrapLoop bootstraps a new cluster the way Consul does: every node
// starts with the same BootstrapExpect N; once a node sees exactly N servers
// in gossip that expect N and none of which has Raft state, it bootstraps
// with a configuration of all N. Every node that does so computes the same
// configuration (sorted by id), and hashicorp/raft tolerates identical
// bootstraps on several nodes, so no node has to be special. A node that
// sees existing state anywhere stops: it will be added by the leader.
func (c *Cluster) bootstrapLoop() {
	tick := time.NewTicker(c.cfg.GossipInterval)
	defer tick.Stop()
	for {
		done := c.tryBootstrap()
		if done {
			return
		}
		select {
		case <-c.shutdownCh:
			return
		case <-c.gossip.events:
		case <-tick.C:
		}
	}
}

func (c *Cluster) tryBootstrap() (done bool) {
	// A leader elsewhere may already have added us.
	if id, _ := c.Leader(); id != "" {
		return true
	}
	_, metas := c.gossip.members()
	expect := c.cfg.BootstrapExpect
	var servers []raft.Server
	for _, m := range metas {
		if m.HasState {
			c.logger.Info("a peer has raft state; not bootstrapping", "peer-id", m.ID)
			return true
		}
		if m.Expect == 0 || m.Leaving {
			continue
		}
		if m.Expect != expect {
			c.logger.Error("peer expects a different bootstrap count; not bootstrapping",
				"peer-id", m.ID, "peer-expect", m.Expect, "expect", expect)
			return false
		}
		servers = append(servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(m.ID),
			Address:  raft.ServerAddress(m.RaftAddr),
		})
	}
	if len(servers) < expect {
		return false
	}
	if len(servers) > expect {
		// Nodes could disagree on which N to pick: refuse rather than risk
		// two different configurations.
		c.logger.Error("more servers than expected; not bootstrapping", "servers", len(servers), "expect", expect)
		return false
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	err := c.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	switch {
	case err == nil:
		c.logger.Info("bootstrapped raft", "servers", len(servers))
	case errors.Is(err, raft.ErrCantBootstrap):
		// Already has state (e.g. a peer's append arrived first): safe.
		c.logger.Info("raft already bootstrapped")
	default:
		c.logger.Error("bootstrap failed", "error", err)
		return false
	}
	c.gossip.setMeta(func(m *nodeMeta) { m.HasState = true })
	_ = c.gossip.list.UpdateNode(time.Second)
	return true
}

// leaderLoop runs the leader's duties while this node leads: a barrier
// first (so reads may use the commit index), then reconciling gossip with
// the Raft configuration.
func (c *Cluster) leaderLoop() {
	var stop chan struct{}
	var done chan struct{}
	stopLeading := func() {
		if stop != nil {
			close(stop)
			<-done
			stop, done = nil, nil
		}
	}
	defer stopLeading()
	for {
		select {
		case <-c.shutdownCh:
			return
		case isLeader := <-c.raft.LeaderCh():
			stopLeading()
			if isLeader {
				stop, done = make(chan struct{}), make(chan struct{})
				go func(stop, done chan struct{}) {
					defer close(done)
					c.lead(stop)
				}(stop, done)
			}
		}
	}
}

func (c *Cluster) lead(stop chan struct{}) {
	c.logger.Info("became leader")
	// Once leading, a node has state: say so, in case it bootstrapped
	// through a peer's AppendEntries rather than on its own.
	c.gossip.setMeta(func(m *nodeMeta) { m.HasState = true })
	_ = c.gossip.list.UpdateNode(time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-c.shutdownCh:
		}
		cancel()
	}()
	term := c.raft.CurrentTerm()
	if err := c.waitFuture(ctx, c.raft.Barrier(0)); err == nil {
		c.readyTerm.Store(term)
	} else if ctx.Err() == nil {
		c.logger.Warn("leader barrier failed", "error", err)
	}
	tick := time.NewTicker(c.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		c.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-c.gossip.events:
		case <-tick.C:
		}
	}
}

// tombstoneTTL bounds how long a removed node stays barred from being
// re-added while gossip still sees it alive.
const tombstoneTTL = 10 * time.Minute

// reconcile makes the Raft configuration follow gossip: an alive server
// missing from it is added as a voter (this is how new nodes join), one
// that changed address is updated, and one that left gossip gracefully is
// removed. Failed (dead) nodes are kept: they are usually restarting, and
// removing voters on a failure detector's word would shrink the quorum
// behind the operator's back.
func (c *Cluster) reconcile(ctx context.Context) {
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return
	}
	inConfig := make(map[string]raft.Server)
	for _, s := range cf.Configuration().Servers {
		inConfig[string(s.ID)] = s
	}
	members, metas := c.gossip.members()
	now := time.Now()
	c.tombMu.Lock()
	for id, t := range c.tombstones {
		if now.Sub(t) > tombstoneTTL {
			delete(c.tombstones, id)
		}
	}
	c.tombMu.Unlock()
	for _, m := range members {
		if m.ID == c.cfg.NodeID {
			continue
		}
		s, ok := inConfig[m.ID]
		switch m.Status {
		case StatusAlive:
			meta, has := metas[m.ID]
			if !has || meta.Leaving || meta.RaftAddr == "" {
				continue
			}
			if ok && string(s.Address) == meta.RaftAddr {
				continue
			}
			c.tombMu.Lock()
			_, barred := c.tombstones[m.ID]
			c.tombMu.Unlock()
			if barred {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			f := c.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(meta.RaftAddr), 0, 10*time.Second)
			if err := c.waitFuture(actx, f); err != nil {
				c.logger.Warn("reconcile: add voter failed", "peer-id", m.ID, "error", err)
			} else {
				c.logger.Info("reconcile: added voter", "peer-id", m.ID, "peer-addr", meta.RaftAddr)
			}
			cancel()
		case StatusLeft:
			c.tombMu.Lock()
			delete(c.tombstones, m.ID)
			c.tombMu.Unlock()
			if !ok {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			f := c.raft.RemoveServer(raft.ServerID(m.ID), 0, 10*time.Second)
			if err := c.waitFuture(actx, f); err != nil {
				c.logger.Warn("reconcile: remove departed server failed", "peer-id", m.ID, "error", err)
			} else {
				c.logger.Info("reconcile: removed departed server", "peer-id", m.ID)
			}
			cancel()
		case StatusDead:
			c.tombMu.Lock()
			delete(c.tombstones, m.ID)
			c.tombMu.Unlock()
		}
	}
}
