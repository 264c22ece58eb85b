package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/internal/pki"
)

// mapRaftErr turns hashicorp/raft's errors into this package's sentinels,
// keeping the original in the chain.
func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrShutdown, err)
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// timeoutOf turns a context deadline into the timeout hashicorp/raft
// takes (0 = none).
func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Nanosecond
	}
	return 0
}

// waitFuture waits for a Raft future or the context, whichever ends first.
// The helper goroutine ends when Raft resolves the future; c.futures owns it.
// Raft resolves every future but one it committed and never applied before it
// shut down: Shutdown first lets the FSM apply what is committed (drainFSM).
func (c *Cluster) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	c.futures.Add(1)
	go func() {
		defer c.futures.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		return mapRaftErr(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forward runs op on the leader: locally when this node leads, otherwise
// over the cluster RPC. It retries while the request was certainly not
// performed (no leader yet, leader changed) until ctx ends.
//
// With resend set, the request is one the leader may perform twice (a read
// index; an Apply the FSM deduplicates by request id: ApplyIdempotent), and
// forward also rides out a leader change whose outcome is unknown: when the
// leader it sent to stops answering (the connection failed, ErrForward), says
// it lost leadership (ErrLeadershipLost), or is no longer the leader this node
// knows of while the answer is awaited (a leader cut off by a partition, or
// stopped without closing its connections, answers nothing), it waits for a
// leader with a bounded backoff and sends the same request again, to the new
// leader or locally if this node now leads, until ctx ends. Definite answers
// (a refusal, the leader's own timeout) are returned as they are.
func (c *Cluster) forward(ctx context.Context, local func() (*rpcResponse, error), req *rpcRequest, resend bool) (*rpcResponse, error) {
	backoff := 5 * time.Millisecond
	resent := 0
	for {
		if c.isShutdown() {
			return nil, ErrShutdown
		}
		var resp *rpcResponse
		var err error
		id, addr := c.Leader()
		switch {
		case id == "":
			err = ErrNoLeader
		case id == c.cfg.NodeID:
			resp, err = local()
		case resend:
			resp, err = c.callWhileLeader(ctx, id, addr, req)
		default:
			resp, err = c.rpc.call(ctx, id, addr, req)
		}
		if err == nil && resp != nil {
			err = resp.err()
		}
		retry := errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)
		if resend && ctx.Err() == nil && (errors.Is(err, ErrForward) || errors.Is(err, ErrLeadershipLost)) {
			// The outcome is unknown, and a second copy is harmless: send it again.
			retry = true
			resent++
			c.logger.Info("leader changed or stopped answering during a forwarded request; sending it again to the next leader",
				"op", string(req.Op), "leader", id, "attempt", resent+1, "error", err)
		}
		if !retry {
			return resp, err
		}
		select {
		case <-ctx.Done():
			if errors.Is(err, ErrNoLeader) {
				return nil, fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
			}
			return nil, fmt.Errorf("%w: %w", err, ctx.Err())
		case <-c.shutdownCh:
			return nil, ErrShutdown
		case <-time.After(backoff):
		}
		if backoff < 100*time.Millisecond {
			backoff *= 2
		}
	}
}

// leaderWatchInterval is how often callWhileLeader checks whom this node
// knows as the leader while it awaits an answer.
const leaderWatchInterval = 20 * time.Millisecond

// callWhileLeader is rpc.call to leader id, abandoned (ErrForward) as soon as
// this node no longer knows id as the leader: a leader cut off from the
// others answers nothing until the caller's deadline, while the rest of the
// cluster elects another within an election timeout.
func (c *Cluster) callWhileLeader(ctx context.Context, id, addr string, req *rpcRequest) (*rpcResponse, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		resp *rpcResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		r, err := c.rpc.call(actx, id, addr, req)
		done <- answer{r, err}
	}()
	t := time.NewTicker(leaderWatchInterval)
	defer t.Stop()
	for {
		select {
		case a := <-done:
			return a.resp, a.err
		case <-t.C:
			if now, _ := c.Leader(); now != id {
				cancel() // the call ends at once: its connection's deadline is poked
				a := <-done
				if a.err == nil {
					return a.resp, nil // the answer came first
				}
				return nil, fmt.Errorf("%w: leader %s replaced by %q while the request was in flight: %v", ErrForward, id, now, a.err)
			}
		}
	}
}

// Apply commits cmd to the Raft log and returns the FSM's response to it.
// On a follower the command is forwarded to the leader and the response
// comes back through the ResponseCodec. An FSM that reports errors in its
// response value gets them back as the response, not as err.
//
// Errors wrapping ErrLeadershipLost or ErrForward, and context errors
// after the command was sent, are ambiguous: the command may still be
// committed. Commands should carry a request id so that the FSM can ignore
// a retried duplicate. ErrNotLeader and ErrNoLeader mean it was not sent.
func (c *Cluster) Apply(ctx context.Context, cmd []byte) (any, error) {
	return c.apply(ctx, cmd, false)
}

// ApplyIdempotent is Apply for a command that the FSM applies at most once
// however often it is committed (it carries a request id, and a second copy
// answers the first's result). Where Apply returns an ambiguous error because
// the leader changed or stopped answering, ApplyIdempotent sends the same
// bytes again to the next leader (or applies them here if this node now
// leads), until ctx ends: a write rides out a leader change within its
// caller's deadline. Only a context error after a send stays ambiguous.
func (c *Cluster) ApplyIdempotent(ctx context.Context, cmd []byte) (any, error) {
	return c.apply(ctx, cmd, true)
}

func (c *Cluster) apply(ctx context.Context, cmd []byte, resend bool) (any, error) {
	var localResp any
	req := &rpcRequest{Op: opApply, Cmd: cmd}
	if c.tracer != nil && trace.SpanContextFromContext(ctx).IsSampled() {
		carrier := propagation.MapCarrier{}
		tracePropagator.Inject(ctx, carrier)
		req.Trace = carrier["traceparent"]
	}
	resp, err := c.forward(ctx, func() (*rpcResponse, error) {
		r, err := c.applyLocal(ctx, cmd)
		localResp = r
		return &rpcResponse{}, err
	}, req, resend)
	if err != nil {
		return nil, err
	}
	if resp.Resp == nil {
		return localResp, nil
	}
	return c.codec.DecodeResponse(resp.Resp)
}

func (c *Cluster) applyLocal(ctx context.Context, cmd []byte) (any, error) {
	// The gate is held until Raft resolves the entry (applied, or certainly failed), not until
	// this caller stops waiting: RestoreChecked's check must see every entry proposed before it.
	// (A raft future has one waiter: its Error hands the result to the first caller only.)
	c.applyGate.RLock()
	if c.isShutdown() {
		c.applyGate.RUnlock()
		return nil, ErrShutdown // drainFSM waits only for entries already proposed
	}
	f := c.raft.Apply(cmd, timeoutOf(ctx))
	done := make(chan error, 1)
	c.futures.Add(1)
	go func() {
		defer c.futures.Done()
		err := f.Error()
		c.applyGate.RUnlock()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, mapRaftErr(err)
		}
		return f.Response(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Barrier returns once this node's FSM reflects every write that was
// committed before Barrier was called, cluster-wide: a read of local FSM
// state after it is linearizable with preceding writes. hashicorp/raft has
// no ReadIndex; this builds one: the leader confirms it still leads
// (VerifyLeader) and takes its commit index; a follower asks the leader for
// that index over the cluster RPC; then the node waits until its FSM has
// applied it.
func (c *Cluster) Barrier(ctx context.Context) error {
	resp, err := c.forward(ctx, func() (*rpcResponse, error) {
		idx, err := c.leaderReadIndex(ctx)
		return &rpcResponse{Index: idx}, err
	}, &rpcRequest{Op: opReadIndex}, true)
	if err != nil {
		return err
	}
	return c.waitApplied(ctx, resp.Index)
}

// leaderReadIndex returns a commit index that covers every write
// acknowledged before the call.
func (c *Cluster) leaderReadIndex(ctx context.Context) (uint64, error) {
	if c.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	term := c.raft.CurrentTerm()
	if c.readyTerm.Load() != term {
		// A new leader's commit index may not yet cover entries that an
		// earlier leader committed (Raft §8): a barrier entry of its own
		// term fixes that, and applies everything before it.
		if err := c.waitFuture(ctx, c.raft.Barrier(timeoutOf(ctx))); err != nil {
			return 0, err
		}
		c.readyTerm.Store(term)
	}
	idx := c.raft.CommitIndex()
	// Confirm with a quorum that no newer leader exists; taking the index
	// first means any write acknowledged before this call is included.
	if err := c.waitFuture(ctx, c.raft.VerifyLeader()); err != nil {
		return 0, err
	}
	return idx, nil
}

// waitApplied waits until the FSM has applied every command up to index.
func (c *Cluster) waitApplied(ctx context.Context, index uint64) error {
	// Entries the FSM never sees (no-ops, barriers, configuration
	// changes) do not advance its index, so the wait also wakes on a
	// short tick to check whether only such entries remain.
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		changed := c.fsm.changed()
		if c.appliedThrough(index) {
			return nil
		}
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.shutdownCh:
			return ErrShutdown
		}
	}
}

// maxGapScan bounds how many log entries appliedThrough reads; a longer gap
// means the FSM is busy applying and will wake the waiter itself.
const maxGapScan = 256

// appliedThrough reports whether the FSM state includes every command up to
// index.
func (c *Cluster) appliedThrough(index uint64) bool {
	a := c.fsm.applied.Load()
	if a >= index {
		return true
	}
	// raft.AppliedIndex counts entries handed to the FSM goroutine. Once it
	// has passed index, the FSM lags only if a command in (a, index] is
	// still queued; if the gap holds no command, the state is current.
	if c.raft.AppliedIndex() < index || index-a > maxGapScan {
		return false
	}
	for i := a + 1; i <= index; i++ {
		var l raft.Log
		if err := c.logs.GetLog(i, &l); err != nil {
			return false
		}
		if l.Type == raft.LogCommand {
			return false
		}
	}
	return true
}

// Join adds a node to the Raft configuration as a voter (through the
// leader). It is the only way a node becomes a voter after bootstrap:
// gossip only proposes (reconcile logs members that are not voters), since
// anyone holding the gossip key can advertise members. It is also the only
// way back for a removed node: the join lifts the node's tombstone.
//
// The leader first dials raftAddr and checks the node there (checkJoiner):
// one typo in an address would otherwise add a voter that never answers,
// so that every commit waits on the rest and one real failure later costs
// the quorum, with the bogus voter removable only by that quorum. A
// malformed address is ErrBadAddress; a node that cannot be reached or is
// not the one named is refused (ErrRejected, saying which).
//
// A join asked before a removal does not undo it: this node first catches
// up with the leader (Barrier) and sends the removal of id it then knows
// of; the leader refuses the join (ErrRejected) if id has been removed
// again since.
func (c *Cluster) Join(ctx context.Context, id, raftAddr string) error {
	if c.isShutdown() {
		return ErrShutdown
	}
	if err := checkRaftAddr(raftAddr); err != nil {
		return err
	}
	if err := c.Barrier(ctx); err != nil {
		return err
	}
	var seen uint64
	if t, ok := c.fsm.tombstone(id); ok {
		seen = t.Index
	}
	_, err := c.forward(ctx, func() (*rpcResponse, error) {
		return &rpcResponse{}, c.addVoterLocal(ctx, id, raftAddr, &seen, false)
	}, &rpcRequest{Op: opAddVoter, ID: id, Addr: raftAddr, Removal: &seen}, false)
	return err
}

// addVoterLocal adds id as a voter at addr, on the leader. seen is the index
// of the removal of id the asking node knew of (0: none); nil from a node of
// an older version, which sends none.
func (c *Cluster) addVoterLocal(ctx context.Context, id, addr string, seen *uint64, selfAsked bool) error {
	if id == "" || addr == "" {
		return fmt.Errorf("%w: join needs a node id and address", ErrRejected)
	}
	if err := checkRaftAddr(addr); err != nil {
		return err
	}
	if err := c.checkJoiner(ctx, id, addr); err != nil {
		return err
	}
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	// Every membership entry committed, by this leader or an earlier one, is applied after it.
	if err := c.waitFuture(ctx, c.raft.Barrier(timeoutOf(ctx))); err != nil {
		return err
	}
	if t, ok := c.fsm.tombstone(id); ok {
		if selfAsked {
			// A tombstoned voter (its removal cut short: the tombstone committed, the leader gone
			// before the configuration change) forwarding its own join must not lift its tombstone;
			// an operator joins it at another node, or removes it again.
			return fmt.Errorf("%w: node %s was removed (log index %d) and may not readmit itself; run krypton join at another node, or remove-peer it again", ErrRejected, id, t.Index)
		}
		if seen != nil && t.Index > *seen {
			return fmt.Errorf("%w: node %s was removed (log index %d) after this join was asked; join it again if it is to come back", ErrRejected, id, t.Index)
		}
		// An operator's explicit join overrides the removal: lifted before the node is added,
		// so that no configuration ever holds a tombstoned node.
		if err := c.proposeMembership(ctx, opReadmit, id); err != nil {
			return err
		}
		c.logger.Info("lifted a removed node's tombstone on an operator's join", "peer-id", id, "removed-at-index", t.Index)
	}
	f := c.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx))
	if err := c.waitFuture(ctx, f); err != nil {
		return err
	}
	c.logger.Info("added voter", "peer-id", id, "peer-addr", addr)
	return nil
}

// Remove removes a node from the Raft configuration (through the leader).
// The removal is first committed as a tombstone (tombstone.go), which every
// node applies and every later leader honours: the node comes back only
// through Join.
func (c *Cluster) Remove(ctx context.Context, id string) error {
	_, err := c.forward(ctx, func() (*rpcResponse, error) {
		return &rpcResponse{}, c.removeLocal(ctx, id)
	}, &rpcRequest{Op: opRemove, ID: id}, false)
	return err
}

func (c *Cluster) removeLocal(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: remove needs a node id", ErrRejected)
	}
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	// Removing a node that is not there would still append a configuration
	// entry (and tombstone the name): say so instead, writing nothing.
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return mapRaftErr(err)
	}
	if !slices.ContainsFunc(cf.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
		return fmt.Errorf("%w: %s", ErrUnknownServer, id)
	}
	// The decision is durable before it takes effect: a leader that fails between the two
	// leaves a tombstoned voter (harmless: it blocks adds only; Remove again), never a removed
	// node without a tombstone.
	if err := c.proposeMembership(ctx, opTombstone, id); err != nil {
		return err
	}
	f := c.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx))
	if err := c.waitFuture(ctx, f); err != nil {
		return err
	}
	if id != c.cfg.NodeID {
		c.mux.dropPeer(id)
	}
	c.logger.Info("removed server", "peer-id", id)
	return nil
}

// TransferLeadership asks the leader to hand leadership to node to (""
// means the most up-to-date other voter) and waits until it has.
func (c *Cluster) TransferLeadership(ctx context.Context, to string) error {
	_, err := c.forward(ctx, func() (*rpcResponse, error) {
		return &rpcResponse{}, c.transferLocal(ctx, to)
	}, &rpcRequest{Op: opTransfer, ID: to}, false)
	return err
}

func (c *Cluster) transferLocal(ctx context.Context, to string) error {
	var f raft.Future
	if to == "" {
		f = c.raft.LeadershipTransfer()
	} else {
		if to == c.cfg.NodeID {
			return nil // already leads
		}
		cf := c.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return mapRaftErr(err)
		}
		var addr raft.ServerAddress
		for _, s := range cf.Configuration().Servers {
			if string(s.ID) == to && s.Suffrage == raft.Voter {
				addr = s.Address
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: %s is not a voter", ErrRejected, to)
		}
		f = c.raft.LeadershipTransferToServer(raft.ServerID(to), addr)
	}
	if err := c.waitFuture(ctx, f); err != nil {
		return err
	}
	c.logger.Info("leadership transferred", "to", to)
	return nil
}

// Leave takes this node out of the cluster gracefully and shuts it down:
// a leader first hands leadership to another voter; then the leader
// removes this node from the Raft configuration; then the node leaves
// gossip (so others see "left", not "dead"); then it shuts down. The
// remaining voters keep quorum throughout. A sole voter just shuts down.
func (c *Cluster) Leave(ctx context.Context) error {
	if c.isShutdown() {
		return ErrShutdown
	}
	peers, err := c.Peers()
	if err != nil {
		return err
	}
	voters := 0
	member := false
	for _, p := range peers {
		if p.Suffrage == raft.Voter.String() {
			voters++
		}
		if p.ID == c.cfg.NodeID {
			member = true
		}
	}
	// Tell gossip first that this node is leaving, so that the leader's
	// reconcile does not report it as a member to join.
	c.gossip.setMeta(func(m *nodeMeta) { m.Leaving = true })
	_ = c.gossip.list.UpdateNode(time.Second)

	if member && voters > 1 {
		if c.IsLeader() {
			if err := c.transferLocal(ctx, ""); err != nil {
				return fmt.Errorf("cluster: leave: transfer leadership: %w", err)
			}
		}
		if err := c.Remove(ctx, c.cfg.NodeID); err != nil {
			return fmt.Errorf("cluster: leave: %w", err)
		}
	}
	if err := c.gossip.list.Leave(5 * time.Second); err != nil {
		c.logger.Warn("gossip leave failed", "error", err)
	}
	c.logger.Info("left the cluster")
	return c.Shutdown()
}

// checkRaftAddr refuses an address that is not host:port with a host and a
// port from 1 to 65535.
func checkRaftAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%w: %q is not host:port", ErrBadAddress, addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w: %q has no port from 1 to 65535", ErrBadAddress, addr)
	}
	return nil
}

// joinProbeTimeout bounds how long the leader tries to reach a joining node.
const joinProbeTimeout = 5 * time.Second

// checkJoiner dials addr as Raft would (mutual TLS, the certificate checked
// against the host dialled) and checks that the node answering there is
// node id: its certificate must name that node and, if this node's
// certificate names a region, the same region. It sends nothing.
func (c *Cluster) checkJoiner(ctx context.Context, id, addr string) error {
	pctx, cancel := context.WithTimeout(ctx, joinProbeTimeout)
	defer cancel()
	peer, err := c.mux.probe(pctx, addr)
	if err != nil {
		return fmt.Errorf("%w: cannot reach node %s at %s over the cluster's TLS (is it running, and does its certificate name that host?): %v", ErrRejected, id, addr, err)
	}
	if peer.NodeID != id {
		return fmt.Errorf("%w: the node at %s is %s, not %s", ErrRejected, addr, peer.NodeID, id)
	}
	if own := c.ownRegion(); own != "" && peer.Region != own {
		return fmt.Errorf("%w: node %s at %s has a certificate of region %q, not %q", ErrRejected, id, addr, peer.Region, own)
	}
	return nil
}

// ownRegion is the region this node's certificate names ("" if none).
func (c *Cluster) ownRegion() string {
	if len(c.cfg.TLS.Certificates) == 0 {
		return ""
	}
	cert := c.cfg.TLS.Certificates[0]
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	if leaf == nil {
		return ""
	}
	id, err := pki.IdentityFromCertificate(leaf)
	if err != nil {
		return ""
	}
	return id.Region
}

// tracePropagator carries a forwarded write's trace context (Config.TracerProvider).
var tracePropagator = propagation.TraceContext{}

func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer("github.com/kryptonkms/krypton/cluster")
}
