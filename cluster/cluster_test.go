package cluster_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
)

func TestBootstrapApplyForward(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	ctx := h.Context(10 * time.Second)

	peers, err := leader.Cluster.Peers()
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 3 {
		t.Fatalf("peers = %+v, want 3", peers)
	}
	nLeaders := 0
	for _, p := range peers {
		if p.Suffrage != "Voter" {
			t.Errorf("%s is %s", p.ID, p.Suffrage)
		}
		if p.Leader {
			nLeaders++
		}
	}
	if nLeaders != 1 {
		t.Errorf("%d peers flagged leader", nLeaders)
	}

	// Apply on a follower is forwarded, and the response comes back.
	f := h.Followers()[0]
	resp, err := f.Cluster.Apply(ctx, []byte("from-follower"))
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := resp.([]byte); !ok || string(b) != "from-follower" {
		t.Errorf("response = %#v", resp)
	}
	// An FSM error response crosses the wire as a RemoteError.
	resp, err = f.Cluster.Apply(ctx, []byte("err:nope"))
	if err != nil {
		t.Fatal(err)
	}
	var re *cluster.RemoteError
	if e, ok := resp.(error); !ok || !errors.As(e, &re) || re.Msg != "nope" {
		t.Errorf("error response = %#v", resp)
	}
	// On the leader the FSM's own value is returned.
	resp, err = leader.Cluster.Apply(ctx, []byte("err:local"))
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := resp.(error); !ok || e.Error() != "local" {
		t.Errorf("local error response = %#v", resp)
	}
	for i := 0; i < 5; i++ {
		n := h.Followers()[i%2]
		if _, err := n.Cluster.Apply(ctx, []byte(fmt.Sprint("x", i))); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"from-follower", "x0", "x1", "x2", "x3", "x4"}
	for _, nd := range h.Nodes {
		h.Eventually(5*time.Second, nd.ID+" applies all", func() bool { return nd.FSM.Len() == len(want) })
		if got := nd.FSM.Entries(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s entries = %v, want %v", nd.ID, got, want)
		}
	}

	members, err := f.Cluster.Members()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 3 {
		t.Fatalf("members = %+v", members)
	}
	for _, m := range members {
		if m.Status != cluster.StatusAlive || m.RaftAddr == "" || m.Meta["grpc"] == "" {
			t.Errorf("member %+v", m)
		}
	}
	if st := f.Cluster.State(); st != raft.Follower {
		t.Errorf("follower state %v", st)
	}
	_ = bytes.Equal
}
