package governance

import (
	"context"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Stream batching: at most watchBatch events and about watchBytes bytes per message, well inside
// transport's 8 MiB message limit (one SET_POLICY event with 1000 maximal rules is about 600 KiB).
const (
	watchBatch = 256
	watchBytes = 4 << 20
)

// WatchRevocations streams the log to a region's node: the backlog from after_cursor, then each new
// event as this node applies it (woken by the state machine, never by polling), and a heartbeat
// every HeartbeatInterval. Any node serves it: what a node has applied is committed, so it streams
// a prefix of the one log; see DESIGN.md.
func (s *api) WatchRevocations(req *kv1.WatchRevocationsRequest, stream kv1.GovernanceService_WatchRevocationsServer) error {
	ctx := stream.Context()
	n := s.n
	region := req.GetRegion()
	if err := checkName("region", region); err != nil {
		return err
	}
	if err := regionNode(ctx, region); err != nil {
		return err
	}
	// Check after_cursor against a head that includes every acknowledged write, not a lagging
	// follower's.
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := n.barrier(bctx)
	cancel()
	if err != nil {
		return ErrUnavailable
	}
	// Once governance knows the region's configuration, only its voters follow the feed: a node
	// removed from the region reads no more of it (the anchor URIs and policies of its tenants).
	// Checked after the barrier, so against every configuration governance has acknowledged.
	id, _ := transport.IdentityFromContext(ctx)
	if !n.fsm.MayFollow(region, id.NodeID) {
		return govfsm.ErrNotRegionVoter
	}
	pos := req.GetAfterCursor()
	if pos > n.fsm.Head() {
		return govfsm.ErrCursorAhead
	}
	n.watchers.add(region, 1)
	defer n.watchers.add(region, -1)
	n.record(ctx, audit.Event{Kind: AuditWatchStart, Detail: map[string]string{"region": region, "after-cursor": strconv.FormatUint(pos, 10)}})

	hb := time.NewTicker(n.cfg.HeartbeatInterval)
	defer hb.Stop()
	heartbeat := true // the first message tells the head at once
	for {
		changed := n.fsm.Changed()
		head := n.fsm.Head()
		if pos > head {
			// A restore from an older snapshot moved the head back.
			return govfsm.ErrCursorAhead
		}
		if !n.fsm.MayFollow(region, id.NodeID) {
			return govfsm.ErrNotRegionVoter // removed from the region since the stream opened
		}
		for {
			events, upTo := n.fsm.EventsFor(region, pos, watchBatch)
			msg := &kv1.WatchRevocationsResponse{HeadCursor: upTo}
			size := 0
			for _, e := range events {
				pe := eventForRegion(e, region)
				size += proto.Size(pe)
				if size > watchBytes && len(msg.Events) > 0 {
					msg.HeadCursor = msg.Events[len(msg.Events)-1].Cursor
					break
				}
				msg.Events = append(msg.Events, pe)
			}
			if len(msg.Events) == 0 && !heartbeat {
				pos = upTo // nothing for this region up to upTo
				break
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
			heartbeat = false
			pos = msg.HeadCursor
			if pos >= n.fsm.Head() || len(msg.Events) == 0 {
				break
			}
		}
		select {
		case <-changed:
		case <-hb.C:
			if err := n.stale(); err != nil {
				return err
			}
			heartbeat = true
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return ErrShutdown
		}
	}
}

// stale returns ErrUnavailable if this node is a follower that has not heard from a leader for
// StaleAfter: its log may be behind, and a region should find another node.
func (n *Node) stale() error {
	if n.cl.IsLeader() {
		return nil
	}
	if id, _ := n.cl.Leader(); id == "" || time.Since(n.cl.LastContact()) > n.cfg.StaleAfter {
		return ErrUnavailable
	}
	return nil
}
