package cluster

import (
	"context"

	"github.com/hashicorp/raft"
)

// JoinAsOf is Join as a node asks it when it knew of the removal of id at
// index seen (0: none): a join asked before a later removal, arriving after
// it.
func (c *Cluster) JoinAsOf(ctx context.Context, id, raftAddr string, seen uint64) error {
	_, err := c.forward(ctx, func() (*rpcResponse, error) {
		return &rpcResponse{}, c.addVoterLocal(ctx, id, raftAddr, &seen, false)
	}, &rpcRequest{Op: opAddVoter, ID: id, Addr: raftAddr, Removal: &seen}, false)
	return err
}

// TombstoneOnly commits a tombstone for id and stops there, as a leader that fails between the
// tombstone and the configuration change leaves it: id is still a voter, tombstoned.
func (c *Cluster) TombstoneOnly(ctx context.Context, id string) error {
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	return c.proposeMembership(ctx, opTombstone, id)
}

// RaftTransport wraps t as New gives it to Raft.
func RaftTransport(t *raft.NetworkTransport) raft.Transport { return noPipeline{t} }
