package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
)

// raftRecoverCommand makes a stopped node the only voter of its region, for a region that lost
// its quorum for good (docs/operations.md, "A region lost its quorum"). Offline, on the node's
// data directory, as reset-node: with no quorum nothing could answer an RPC that changes the
// configuration. It is hashicorp/raft's RecoverCluster (cluster.Recover).
func raftRecoverCommand() *command {
	var dataDir, nodeID, raftAddr, region string
	return &command{
		name: "recover", synopsis: "make a stopped node the only voter of a region that lost its quorum",
		help: "Rewrites the Raft state of a stopped node (-data-dir) so that it starts as the only voter of its region, holding every\n" +
			"write it had (hashicorp/raft's RecoverCluster). Only when a majority of the voters is lost for good: writes that only\n" +
			"the lost nodes held are gone. Give the node's own -node-id, -raft-addr and -region. Then start\n" +
			"the node with its usual flags (-bootstrap-expect 0): it elects itself; add new nodes, each started empty, with\n" +
			"`krypton join <node-id> <raft-addr>`. A lost node that comes back must be reset (`krypton operator reset-node`) and joined.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dataDir, "data-dir", "", "the stopped node's -data-dir")
			fs.StringVar(&nodeID, "node-id", "", "the node's -node-id")
			fs.StringVar(&raftAddr, "raft-addr", "", "the node's -raft-addr (host:port, as the other nodes reach it)")
			fs.StringVar(&region, "region", "", "the node's -region")
		},
		run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != 0 || dataDir == "" || nodeID == "" || raftAddr == "" || region == "" {
				return usagef("operator raft recover: want -data-dir <dir> -node-id <id> -raft-addr <host:port> -region <name> and no arguments")
			}
			if err := cluster.Recover(dataDir, nodeID, raftAddr, fsm.New(fsm.Options{Region: region})); err != nil {
				return fmt.Errorf("operator raft recover: %w", err)
			}
			fmt.Fprintf(s.out, "Recovered %s: %s is now the only voter of its region (at %s).\n"+
				"Next: start it with its usual flags (-bootstrap-expect 0); then start each new node empty and\n"+
				"`krypton join <node-id> <raft-addr>` it. A lost node that comes back: `krypton operator reset-node` first.\n", dataDir, nodeID, raftAddr)
			return nil
		},
	}
}
