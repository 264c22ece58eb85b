// Package clustertest runs in-process clusters for tests: N nodes of
// package cluster on 127.0.0.1 with free ports, a throwaway CA and gossip
// key, real Raft over TLS and real bbolt files in t.TempDir(), and a small
// append-only FSM.
//
//	h := clustertest.Start(t, 3)
//	leader := h.WaitForLeader()
//	_, err := h.Followers()[0].Cluster.Apply(ctx, []byte("x"))
//	h.Kill(h.Index(leader))
//	h.WaitForLeader()
//	h.Restart(h.Index(leader))
//	h.Partition([]int{0}, []int{1, 2}); h.Heal()
package clustertest
