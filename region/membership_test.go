package region_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// voterIDs returns the voters node i sees in the Raft configuration.
func voterIDs(t *testing.T, r *regiontest.Region, i int) []string {
	t.Helper()
	peers, err := r.Nodes[i].Cluster().Peers()
	if err != nil {
		return nil
	}
	var ids []string
	for _, p := range peers {
		if p.Suffrage == "Voter" {
			ids = append(ids, p.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestJoinRemoveLeave: a fourth node joins gossip and an operator's Join adds it as a voter; it
// serves. An operator removes it again. Then the leader leaves gracefully: it hands leadership over
// first, the region keeps serving, and the leaver is gone from the peers.
func TestJoinRemoveLeave(t *testing.T) {
	t.Parallel()
	r := setup(t)
	blob := mustWrap(t, r, 0, "acme", "payments")

	// Join: BootstrapExpect 0, Join = node-1's gossip address, then AdminService.Join.
	n4 := r.AddNode(0)
	id4 := r.Cfgs[n4].NodeID
	clustertest.Eventually(t, 20*time.Second, id4+" a voter on every node", func() bool {
		for _, i := range running(r) {
			if !slices.Contains(voterIDs(t, r, i), id4) {
				return false
			}
		}
		return true
	})
	admin := r.AdminClient(r.Leader())
	peers, err := admin.ListPeers(ctxT(t), &kv1.ListPeersRequest{})
	if err != nil {
		t.Fatalf("ListPeers: %v", err)
	}
	found := false
	leaders := 0
	for _, p := range peers.GetPeers() {
		if p.GetNodeId() == id4 {
			found = p.GetSuffrage() == kv1.Suffrage_SUFFRAGE_VOTER && p.GetRaftAddress() == r.Cfgs[n4].RaftAddr
		}
		if p.GetLeader() {
			leaders++
		}
	}
	if !found || len(peers.GetPeers()) != 4 || leaders != 1 {
		t.Fatalf("ListPeers after the join: %v", peers.GetPeers())
	}
	clustertest.Eventually(t, 10*time.Second, id4+" alive in gossip with its API address", func() bool {
		members, err := admin.Members(ctxT(t), &kv1.MembersRequest{})
		if err != nil {
			return false
		}
		for _, m := range members.GetMembers() {
			if m.GetNodeId() == id4 {
				return m.GetStatus() == kv1.MemberStatus_MEMBER_STATUS_ALIVE && m.GetApiAddress() == r.Cfgs[n4].RPCAddr && m.GetRegion() == "test"
			}
		}
		return false
	})
	// The new node catches up, gets a lease and the tenant's L2 from the leader, and serves.
	r.WaitCaughtUp(n4)
	r.WaitServing()
	mustUnwrap(t, r, n4, "acme", "payments", blob)
	from4 := mustWrap(t, r, n4, "acme", "payments")
	mustUnwrap(t, r, r.Leader(), "acme", "payments", from4)

	// Remove it (through a follower, which forwards to the leader).
	if _, err := r.AdminClient(r.Followers()[0]).RemovePeer(ctxT(t), &kv1.RemovePeerRequest{RequestId: "rm-4", NodeId: id4}); err != nil {
		t.Fatalf("RemovePeer: %v", err)
	}
	for _, i := range []int{0, 1, 2} {
		clustertest.Eventually(t, 10*time.Second, id4+" gone from "+r.Cfgs[i].NodeID+"'s peers", func() bool {
			return !slices.Contains(voterIDs(t, r, i), id4)
		})
	}
	// A removed node gets no lease any longer; it refuses wraps once its lease is gone.
	c4 := r.WrapClient(n4, "acme", "payments")
	clustertest.Eventually(t, 4*regiontest.LeaseDuration, id4+" refusing after its removal", func() bool {
		_, err := c4.Unwrap(ctxShort(t), &kv1.UnwrapRequest{Blob: blob.blob, Context: blob.ctx})
		return err != nil
	})
	_, err = c4.Unwrap(ctxShort(t), &kv1.UnwrapRequest{Blob: blob.blob, Context: blob.ctx})
	wantCode(t, err, codes.Unavailable, "unwrap on a removed node")
	r.Kill(n4)
	// Wait until gossip sees it gone, so that the leader's leave below starts from a settled gossip
	// view (no leader adds a node from gossip any more: only Join does).
	clustertest.Eventually(t, 20*time.Second, id4+" no longer alive in gossip", func() bool {
		for _, i := range running(r) {
			members, err := r.Nodes[i].Cluster().Members()
			if err != nil {
				return false
			}
			for _, m := range members {
				if m.ID == id4 && m.Status == cluster.StatusAlive {
					return false
				}
			}
		}
		return true
	})

	// The leader leaves gracefully.
	old := r.Leader()
	oldID := r.Cfgs[old].NodeID
	if _, err := r.AdminClient(old).Leave(ctxT(t), &kv1.LeaveRequest{RequestId: "leave"}); err != nil {
		t.Fatalf("Leave of the leader: %v", err)
	}
	r.Kill(old) // the node shuts down after answering; wait for it here
	ld := r.WaitLeader()
	if ld == old {
		t.Fatal("the leaver still leads")
	}
	for _, i := range running(r) {
		if ids := voterIDs(t, r, i); slices.Contains(ids, oldID) || len(ids) != 2 {
			t.Fatalf("%s's voters after %s left: %v", r.Cfgs[i].NodeID, oldID, ids)
		}
	}
	peers, err = r.AdminClient(ld).ListPeers(ctxT(t), &kv1.ListPeersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers.GetPeers() {
		if p.GetNodeId() == oldID {
			t.Fatalf("the leaver is still a peer: %v", peers.GetPeers())
		}
	}
	clustertest.Eventually(t, 10*time.Second, oldID+" left in gossip", func() bool {
		members, err := r.AdminClient(ld).Members(ctxT(t), &kv1.MembersRequest{})
		if err != nil {
			return false
		}
		for _, m := range members.GetMembers() {
			if m.GetNodeId() == oldID {
				return m.GetStatus() == kv1.MemberStatus_MEMBER_STATUS_LEFT
			}
		}
		return true
	})
	// The two that stay keep serving: old blobs, new wraps, and writes.
	r.WaitServing()
	for _, i := range running(r) {
		mustUnwrap(t, r, i, "acme", "payments", blob)
		w := mustWrap(t, r, i, "acme", "payments")
		for _, j := range running(r) {
			mustUnwrap(t, r, j, "acme", "payments", w)
		}
	}
	if _, err := r.AdminClient(ld).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot-after-leave", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatalf("RotateKey after the leader left: %v", err)
	}
	if _, err := r.AdminClient(ld).RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev-after-leave", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"}); err != nil {
		t.Fatalf("RevokeKey after the leader left: %v", err)
	}
}

// TestJoinChecksTheNode is issue 14, finding 11: a join of a malformed or dead address made a
// voter that never answers (every revocation then waited out a lease, and one real failure cost
// the quorum), and removing an unknown node answered OK and wrote a log entry. The leader now
// dials the joining node and checks its certificate first, and removes only what is there; a
// refused call changes neither the voters nor the Raft log.
func TestJoinChecksTheNode(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3, regiontest.WithRegion("eu"))
	other := regiontest.Start(t, 1, regiontest.WithCA(r.CA), regiontest.WithRegion("us"))
	ld := r.WaitLeader()
	admin := r.AdminClient(r.Followers()[0]) // forwarded to the leader
	peers := func() string {
		resp, err := r.AdminClient(ld).ListPeers(ctxT(t), &kv1.ListPeersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range resp.GetPeers() {
			out = append(out, p.GetNodeId()+"@"+p.GetRaftAddress()+"/"+p.GetSuffrage().String())
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	// The last configuration's index rather than the last log index: a region appends entries of
	// its own (a new leader's first entry on a busy machine, the L1 checks' results).
	configIndex := func() string { return r.Nodes[ld].Cluster().Stats()["latest_configuration_index"] }
	before, index := peers(), configIndex()
	for _, c := range []struct {
		name, id, addr string
		code           codes.Code
		says           string
	}{
		{"not an address", "node-9", "not-an-address", codes.InvalidArgument, "host:port"},
		{"no port", "node-9", "127.0.0.1:", codes.InvalidArgument, "port"},
		{"port 0", "node-9", "127.0.0.1:0", codes.InvalidArgument, "port"},
		{"a dead address", "node-9", "127.0.0.1:1", codes.FailedPrecondition, "cannot reach"},
		{"another node's address", "node-9", r.Cfgs[1].RaftAddr, codes.FailedPrecondition, "is node-2, not node-9"},
		{"a node of another region", "node-1", other.Cfgs[0].RaftAddr, codes.FailedPrecondition, "another region than eu"},
	} {
		_, err := admin.Join(ctxT(t), &kv1.JoinRequest{RequestId: "join-" + c.name, NodeId: c.id, RaftAddress: c.addr})
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.says) {
			t.Fatalf("join %s: %v, want %s saying %q", c.name, err, c.code, c.says)
		}
	}
	_, err := admin.RemovePeer(ctxT(t), &kv1.RemovePeerRequest{RequestId: "remove-unknown", NodeId: "node-9"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("remove-peer of an unknown node: %v, want NotFound", err)
	}
	if got := peers(); got != before {
		t.Fatalf("peers %s, were %s", got, before)
	}
	if got := configIndex(); got != index {
		t.Fatalf("the Raft configuration moved from index %s to %s", index, got)
	}
	// A node that is what the join says passes the check (here one already a voter: no change).
	if _, err := admin.Join(ctxT(t), &kv1.JoinRequest{RequestId: "join-node-2", NodeId: "node-2", RaftAddress: r.Cfgs[1].RaftAddr}); err != nil {
		t.Fatalf("join of node-2 at its own address: %v", err)
	}
	if got := peers(); got != before {
		t.Fatalf("peers %s, were %s", got, before)
	}
}

// memberStatus returns the status node i's Members answer gives node id ("" if not listed).
func memberStatus(t *testing.T, r *regiontest.Region, i int, id string) kv1.MemberStatus {
	t.Helper()
	resp, err := r.AdminClient(i).Members(ctxT(t), &kv1.MembersRequest{})
	if err != nil {
		return kv1.MemberStatus_MEMBER_STATUS_UNSPECIFIED
	}
	for _, m := range resp.GetMembers() {
		if m.GetNodeId() == id {
			return m.GetStatus()
		}
	}
	return kv1.MemberStatus_MEMBER_STATUS_UNSPECIFIED
}

// TestRemovedMemberStaysRemoved (issue 16): an operator removes a follower that keeps running (in
// gossip, still reaching the others). Every node's `members` marks it REMOVED, from the region's
// replicated state, also after leadership moved to a node that did not make the removal; no
// configuration lists it again, and discovery does not offer it as an endpoint to try. An
// operator's join readmits it.
func TestRemovedMemberStaysRemoved(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3)
	ld := r.WaitLeader()
	victim := r.Followers()[0]
	vid := r.Cfgs[victim].NodeID
	if _, err := r.AdminClient(ld).RemovePeer(ctxT(t), &kv1.RemovePeerRequest{RequestId: "rm-victim", NodeId: vid}); err != nil {
		t.Fatalf("RemovePeer: %v", err)
	}
	var stay []int
	for _, i := range running(r) {
		if i != victim {
			stay = append(stay, i)
		}
	}
	for _, i := range stay {
		clustertest.Eventually(t, 10*time.Second, vid+" listed as removed by "+r.Cfgs[i].NodeID, func() bool {
			return memberStatus(t, r, i, vid) == kv1.MemberStatus_MEMBER_STATUS_REMOVED
		})
	}

	// Leadership moves to the other remaining node, which did not make the removal.
	next := stay[0]
	if next == ld {
		next = stay[1]
	}
	if _, err := r.AdminClient(ld).TransferLeadership(ctxT(t), &kv1.TransferLeadershipRequest{RequestId: "tl", TargetId: r.Cfgs[next].NodeID}); err != nil {
		t.Fatalf("TransferLeadership: %v", err)
	}
	clustertest.Eventually(t, 20*time.Second, r.Cfgs[next].NodeID+" to lead", func() bool { return r.Nodes[next].Cluster().IsLeader() })
	if st := memberStatus(t, r, next, vid); st != kv1.MemberStatus_MEMBER_STATUS_REMOVED {
		t.Fatalf("the new leader lists %s as %v, want REMOVED", vid, st)
	}
	end := time.After(8 * clustertest.Config().ReconcileInterval)
	for done := false; !done; {
		for _, i := range stay {
			if slices.Contains(voterIDs(t, r, i), vid) {
				t.Fatalf("%s lists the removed %s as a voter again", r.Cfgs[i].NodeID, vid)
			}
		}
		select {
		case <-end:
			done = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	eps, err := r.WrapClient(next, "any", "caller").ListEndpoints(ctxT(t), &kv1.ListEndpointsRequest{})
	if err != nil {
		t.Fatalf("ListEndpoints: %v", err)
	}
	{
		for _, e := range eps.GetEndpoints() {
			if e.GetNodeId() == vid && e.GetStatus() != kv1.EndpointStatus_ENDPOINT_STATUS_NOT_SERVING {
				t.Errorf("discovery offers the removed node: %v", e)
			}
		}
	}

	// An operator's join readmits it.
	if _, err := r.AdminClient(next).Join(ctxT(t), &kv1.JoinRequest{RequestId: "rejoin", NodeId: vid, RaftAddress: r.Cfgs[victim].RaftAddr}); err != nil {
		t.Fatalf("Join of the removed node: %v", err)
	}
	for _, i := range running(r) {
		clustertest.Eventually(t, 10*time.Second, vid+" a voter again on "+r.Cfgs[i].NodeID, func() bool {
			return slices.Contains(voterIDs(t, r, i), vid) && memberStatus(t, r, i, vid) == kv1.MemberStatus_MEMBER_STATUS_ALIVE
		})
	}
}
