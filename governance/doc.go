// Package governance is the governance plane ("the brain"): its own Raft cluster (built on package
// cluster) whose replicated state is the tenants, each tenant's L1 anchor URI and regions,
// services, access policy, and one ordered, append-only event log (create, anchor set and deleted,
// policy set, lock, unlock, revoke, resync) with a strictly increasing cursor. It never encrypts
// and holds no key material.
//
// Regions follow the log with GovernanceService.WatchRevocations and report how far they have
// applied it with ReportCursor; Revoke, DeleteAnchor and ResyncTenant with wait return once every
// region concerned has reported the event.
//
// Start one node (a single-node development governance):
//
//	n, err := governance.Start(ctx, governance.Config{
//		NodeID: "gov-1", DataDir: dir,
//		RaftAddr: "127.0.0.1:7510", GossipAddr: "127.0.0.1:7520", RPCAddr: "127.0.0.1:7500",
//		BootstrapExpect: 1, GossipKey: key32,
//		Roots: ca.Pool(), Certificate: nodeCert.TLSCertificate(),
//		AllowDevAnchor: true,
//	})
//	defer n.Close()
//	fmt.Println(n.Addr()) // the GovernanceService address
//
// The state machine is package govfsm, pure and usable without Raft: FSM.ApplyCommand replays
// commands, which is how its tests check determinism. See DESIGN.md for why it is built this way,
// and governancetest for in-process clusters.
package governance
