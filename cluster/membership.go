package cluster

import (
	"context"
	"errors"
	"slices"
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
// sees existing state anywhere stops: an operator adds it with Join.
//
// Gossip only proposes: whoever holds the gossip key can advertise members,
// so each one is dialled and its certificate checked (checkJoiner: that node
// ID, of this node's plane and region, at that Raft address) before it
// counts, for the configuration and for "has state" alike. Members that fail
// the check are ignored (and logged), never bootstrapped with.
func (c *Cluster) bootstrapLoop() {
	tick := time.NewTicker(c.cfg.GossipInterval)
	defer tick.Stop()
	verified := make(map[string]string) // node ID -> Raft address checked
	for {
		done := c.tryBootstrap(verified)
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

func (c *Cluster) tryBootstrap(verified map[string]string) (done bool) {
	// A leader elsewhere may already have added us.
	if id, _ := c.Leader(); id != "" {
		return true
	}
	_, metas := c.gossip.members()
	expect := c.cfg.BootstrapExpect
	var servers []raft.Server
	for _, m := range metas {
		if m.ID != c.cfg.NodeID && verified[m.ID] != m.RaftAddr {
			if m.RaftAddr == "" {
				continue
			}
			ctx, cancel := c.untilShutdown()
			err := c.checkJoiner(ctx, m.ID, m.RaftAddr)
			cancel()
			if err != nil {
				c.logger.Warn("a gossip member failed the certificate check; not bootstrapping with it",
					"peer-id", m.ID, "peer-addr", m.RaftAddr, "error", err)
				continue
			}
			verified[m.ID] = m.RaftAddr
		}
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

// reconcile compares gossip with the Raft configuration. Gossip may
// propose, never promote (issue 14): anyone holding the gossip key can
// advertise members, and a leader that made every advertised member a voter
// lost its quorum for good to fake members at dead addresses. So an alive
// member missing from the configuration is only logged (an operator adds it
// with Join, which checks its certificate first; a removed node is logged as
// such, from its replicated tombstone, so that no leader invites a join
// back), and a member that left gossip stays a voter until removed (Leave
// removes itself through the leader first). The one change made here: a
// voter seen at a new Raft address is moved there, once the node at that
// address has proved with its certificate (checkJoiner) that it is that
// voter, and only if it is still a voter without a tombstone when the move
// is made (memberMu). Failed (dead) nodes are kept as well: they are
// usually restarting, and removing voters on a failure detector's word
// would shrink the quorum behind the operator's back.
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
	for _, m := range members {
		if m.ID == c.cfg.NodeID || m.Status != StatusAlive {
			continue
		}
		s, ok := inConfig[m.ID]
		meta, has := metas[m.ID]
		if !has || meta.Leaving || meta.RaftAddr == "" {
			continue
		}
		if !ok {
			if !c.noteUnjoined(m.ID, meta.RaftAddr) {
				continue
			}
			if t, removed := c.fsm.tombstone(m.ID); removed {
				c.logger.Info("a removed node is still alive in gossip; it stays out of the configuration until an operator joins it again (krypton join)",
					"peer-id", m.ID, "peer-addr", meta.RaftAddr, "removed-at-index", t.Index)
			} else {
				c.logger.Info("a gossip member is not a voter; if it is a new node, add it with krypton join at the leader",
					"peer-id", m.ID, "peer-addr", meta.RaftAddr)
			}
			continue
		}
		if string(s.Address) == meta.RaftAddr {
			continue
		}
		c.moveVoter(ctx, m.ID, string(s.Address), meta.RaftAddr)
	}
}

// moveVoter moves voter id from address from to address to, once the node at to has proved with
// its certificate that it is id, if id is still a voter at from without a tombstone by then.
func (c *Cluster) moveVoter(ctx context.Context, id, from, to string) {
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.checkJoiner(actx, id, to); err != nil {
		c.logger.Warn("reconcile: a voter's new address failed the certificate check; kept the old one",
			"peer-id", id, "peer-addr", to, "error", err)
		return
	}
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	cf := c.raft.GetConfiguration()
	if cf.Error() != nil || !slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool {
		return string(s.ID) == id && string(s.Address) == from
	}) {
		return // removed or moved meanwhile: not re-added here
	}
	if _, removed := c.fsm.tombstone(id); removed {
		c.logger.Warn("reconcile: not moving a voter that has a removal tombstone", "peer-id", id)
		return
	}
	f := c.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(to), 0, 10*time.Second)
	if err := c.waitFuture(actx, f); err != nil {
		c.logger.Warn("reconcile: moving a voter failed", "peer-id", id, "error", err)
	} else {
		c.logger.Info("reconcile: moved voter to its new address", "peer-id", id, "peer-addr", to)
	}
}

// untilShutdown returns a context that ends at Shutdown or when cancel is
// called.
func (c *Cluster) untilShutdown() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-c.shutdownCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// unjoinedLogEvery bounds how often reconcile logs one member that is not a
// voter.
const unjoinedLogEvery = time.Minute

// noteUnjoined reports whether to log that member id, at addr, is in gossip
// but not a voter: once per member and address per unjoinedLogEvery, so
// that fake members cannot flood the log either.
func (c *Cluster) noteUnjoined(id, addr string) bool {
	c.unjoinedMu.Lock()
	defer c.unjoinedMu.Unlock()
	key := id + "@" + addr
	now := time.Now()
	if t, ok := c.unjoined[key]; ok && now.Sub(t) < unjoinedLogEvery {
		return false
	}
	if len(c.unjoined) >= 1024 {
		clear(c.unjoined)
	}
	c.unjoined[key] = now
	return true
}
