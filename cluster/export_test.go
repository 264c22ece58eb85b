package cluster

import "context"

// JoinAsOf is Join as a node asks it when it knew of the removal of id at
// index seen (0: none): a join asked before a later removal, arriving after
// it.
func (c *Cluster) JoinAsOf(ctx context.Context, id, raftAddr string, seen uint64) error {
	_, err := c.forward(ctx, func() (*rpcResponse, error) {
		return &rpcResponse{}, c.addVoterLocal(ctx, id, raftAddr, &seen)
	}, &rpcRequest{Op: opAddVoter, ID: id, Addr: raftAddr, Removal: &seen}, false)
	return err
}
