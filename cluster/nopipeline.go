package cluster

import "github.com/hashicorp/raft"

// noPipeline is the transport Raft is given: the network transport with two of hashicorp/raft
// v1.7.3's shortcuts turned off, each for a bug of that version.
//
// AppendEntries pipelining can deadlock: when its decoder stops (a follower answers with a newer
// term, or refuses an append), the transport's response reader blocks handing the next response to
// a consumer that is gone, the sender then blocks handing over its next request, and the
// replication goroutine never sees its stop signal — so Raft's Shutdown waits forever (seen here as
// a node that never finished leaving: raft.(*netPipeline).AppendEntries stuck under pipelineSend).
// Without a pipeline Raft replicates one AppendEntries at a time per follower, batching up to
// MaxAppendEntries entries; Krypton's log carries writes (keys created, rotated, revoked), not the
// wrap traffic, so the lost throughput does not matter.
//
// The heartbeat fast path can diverge the logs (hashicorp/raft#695, open; DESIGN.md, "Not provided
// by hashicorp/raft"): the transport hands heartbeats to Raft's processHeartbeat on the
// connection's goroutine, which runs appendEntries — taking a newer term and stepping down — with
// no synchronisation against the main goroutine. A deposed leader that hears its successor's
// heartbeat while it is writing an entry can store and replicate that entry under the new term.
// Without the handler, heartbeats reach Raft like every other RPC, through the consumer channel that
// only the main goroutine reads. What the fast path bought — heartbeats answered while the main
// goroutine waits on the disk — matters little here: with CommitTimeout at 10 ms the leader sends
// each follower an ordinary append every 10–20 ms anyway, and those always went through the main
// goroutine.
type noPipeline struct{ *raft.NetworkTransport }

// AppendEntriesPipeline reports that pipelining is not supported, which makes Raft fall back to
// plain replication.
func (noPipeline) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// SetHeartbeatHandler ignores the handler raft.NewRaft installs (processHeartbeat), so that
// heartbeats are processed on Raft's main goroutine, in order with every other RPC.
func (noPipeline) SetHeartbeatHandler(func(raft.RPC)) {}
