package cluster

import "github.com/hashicorp/raft"

// noPipeline turns AppendEntries pipelining off. In hashicorp/raft v1.7.3 the pipeline can
// deadlock: when its decoder stops (a follower answers with a newer term, or refuses an append),
// the transport's response reader blocks handing the next response to a consumer that is gone, the
// sender then blocks handing over its next request, and the replication goroutine never sees its
// stop signal — so Raft's Shutdown waits forever (seen here as a node that never finished leaving:
// raft.(*netPipeline).AppendEntries stuck under pipelineSend). Without a pipeline Raft replicates
// one AppendEntries at a time per follower, batching up to MaxAppendEntries entries; Krypton's log
// carries writes (keys created, rotated, revoked), not the wrap traffic, so the lost throughput does
// not matter.
type noPipeline struct{ *raft.NetworkTransport }

// AppendEntriesPipeline reports that pipelining is not supported, which makes Raft fall back to
// plain replication.
func (noPipeline) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
