// Package cluster runs one node of a Raft cluster for any raft.FSM:
// hashicorp/raft with a bbolt log and stable store and file snapshots, its
// transport on mutually authenticated TLS, and hashicorp/memberlist gossip
// (encrypted) for membership and bootstrap. The region and governance
// planes both build on it.
//
// It provides Consul-style bootstrap (every node starts with the same
// BootstrapExpect and Join list, each peer's certificate checked), joining
// of new nodes by an operator's Join (gossip never makes a voter), graceful
// leave, Apply that a follower forwards to the leader, a linearizable read
// Barrier, leadership transfer, operator snapshots, and Prometheus
// metrics.
//
// Usage:
//
//	ca, _ := pki.LoadCA("ca.pem", "ca-key.pem") // or pki.LoadCertPool
//	cert, _ := pki.LoadCertificate("node-1.pem", "node-1-key.pem")
//	cfg := cluster.DefaultConfig()
//	cfg.NodeID = "node-1"
//	cfg.DataDir = "/var/lib/krypton"
//	cfg.RaftAddr = "10.0.0.1:7300"
//	cfg.GossipAddr = "10.0.0.1:7301"
//	cfg.GossipKey = key32
//	cfg.BootstrapExpect = 3
//	cfg.Join = []string{"10.0.0.2:7301", "10.0.0.3:7301"}
//	cfg.TLS = pki.NodeTLSConfig(ca.Pool(), cert.TLSCertificate()) // a node of region R
//	cfg.Logger = logger
//	c, err := cluster.New(cfg, myFSM)
//	defer c.Shutdown()
//
//	resp, err := c.Apply(ctx, cmd) // on any node
//	err = c.Barrier(ctx)           // then read myFSM locally
//
// Errors after ErrLeadershipLost or ErrForward are ambiguous (the command
// may still commit): commands should carry request ids. See DESIGN.md for
// the reasons behind each choice.
package cluster
