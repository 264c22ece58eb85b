package cluster_test

import (
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/cluster"
)

// TestHeartbeatsReachRaftsMainGoroutine (issue 16, hashicorp/raft#695): the transport Raft is
// given refuses the heartbeat fast path that raft.NewRaft installs with SetHeartbeatHandler, so a
// heartbeat arrives on the consumer channel that only Raft's main goroutine reads — in order with
// the appends it is writing — instead of being handled on the connection's goroutine, where it can
// take a newer term while a deposed leader stores an entry (the log divergence of #695). Real TCP
// transports on loopback.
func TestHeartbeatsReachRaftsMainGoroutine(t *testing.T) {
	newTransport := func() *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	recv, send := newTransport(), newTransport()
	rt := cluster.RaftTransport(recv)
	var fastPath atomic.Bool
	rt.SetHeartbeatHandler(func(rpc raft.RPC) {
		fastPath.Store(true)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 2, Success: true}, nil)
	})
	// A heartbeat as raft's leader sends it: a term and the leader's address, nothing else.
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("leader"), Addr: []byte(send.LocalAddr())},
		Term:      2,
	}
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- send.AppendEntries("follower", recv.LocalAddr(), req, &resp)
	}()
	select {
	case rpc := <-rt.Consumer():
		if _, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok {
			t.Fatalf("consumer got %T, want the heartbeat", rpc.Command)
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 2, Success: true}, nil)
	case err := <-done:
		t.Fatalf("the heartbeat was answered without reaching the consumer channel (fast path taken: %v, err %v)", fastPath.Load(), err)
	case <-time.After(30 * time.Second):
		t.Fatal("the heartbeat never arrived")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fastPath.Load() {
		t.Fatal("the heartbeat went through the fast-path handler")
	}
}
