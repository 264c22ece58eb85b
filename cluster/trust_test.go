package cluster_test

import (
	"bufio"
	"crypto/fips140"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/pki"
)

// rpcAttempt dials addr's Raft port with cert, selects the cluster RPC and sends one request; it
// returns the response's code, or "refused" when no response came (the handshake or the
// connection was refused).
func rpcAttempt(t *testing.T, h *clustertest.Harness, addr string, cert *pki.Certificate, req map[string]any) string {
	t.Helper()
	cfg := pki.ClientTLSConfig(h.CA.Pool(), cert.TLSCertificate(), "127.0.0.1")
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "refused"
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	frame := binary.BigEndian.AppendUint32([]byte{'c'}, uint32(len(b)))
	if _, err := conn.Write(append(frame, b...)); err != nil {
		return "refused"
	}
	br := bufio.NewReader(conn)
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return "refused"
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(br, body); err != nil {
		return "refused"
	}
	var resp struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Code == "" {
		return "ok"
	}
	return resp.Code
}

// TestClusterRPCOnlyForMembers: the Raft port's cluster RPC (add-voter, remove-server, apply,
// transfer-leadership) is refused to every certificate that is not a node of the current
// configuration (issue 14: a gateway's certificate, a node of another region or of governance
// drove it): a gateway's, another region's node-1, governance's node-1, a node of this region
// never joined, and a node that was removed. The configuration, the state and the leader stay as
// they were, and no membership change reaches OnPeerRequest. The control, a member's certificate,
// is served.
func TestClusterRPCOnlyForMembers(t *testing.T) {
	var mu sync.Mutex
	var seen []cluster.PeerRequest
	h := clustertest.Start(t, 3, clustertest.WithConfig(func(c *cluster.Config) {
		c.OnPeerRequest = func(r cluster.PeerRequest) {
			mu.Lock()
			seen = append(seen, r)
			mu.Unlock()
		}
	}))
	leader := h.WaitForLeader()
	applyN(t, h, leader, "a", 2)

	// A fourth node joins, then is removed: its certificate names a former member.
	gone := h.AddNode()
	if err := leader.Cluster.Remove(h.Context(10*time.Second), gone.ID); err != nil {
		t.Fatal(err)
	}
	h.Kill(h.Index(gone))
	waitConverged(t, h, 2)
	peersBefore, err := leader.Cluster.Peers()
	if err != nil || len(peersBefore) != 3 {
		t.Fatalf("peers = %+v, %v", peersBefore, err)
	}
	follower := h.Followers()[0]
	mu.Lock()
	seen = nil
	mu.Unlock()

	issue := func(c *pki.Certificate, err error) *pki.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	member := leader.ID
	attackers := map[string]*pki.Certificate{
		"a gateway's certificate":     issue(h.CA.IssueGateway("acme", member, pki.NodeOptions{})),
		"another region's " + member:  issue(h.CA.IssueNode(member, pki.NodeOptions{Region: "elsewhere"})),
		"governance's " + member:      issue(h.CA.IssueGovernance(member, pki.NodeOptions{})),
		"a node never joined":         issue(h.CA.IssueNode("node-9", pki.NodeOptions{Region: clustertest.Region})),
		"the removed node " + gone.ID: issue(h.CA.IssueNode(gone.ID, pki.NodeOptions{Region: clustertest.Region})),
	}
	requests := map[string]map[string]any{
		"add-voter":           {"op": "add-voter", "id": "node-9", "addr": "127.0.0.1:1"},
		"remove-server":       {"op": "remove-server", "id": follower.ID},
		"apply":               {"op": "apply", "cmd": []byte("forged")},
		"transfer-leadership": {"op": "transfer-leadership", "id": follower.ID},
	}
	for who, cert := range attackers {
		for op, req := range requests {
			if got := rpcAttempt(t, h, leader.Config.RaftAddr, cert, req); got != "refused" && got != "rejected" {
				t.Errorf("%s asking %s: %s, want refused", who, op, got)
			}
		}
	}

	peersAfter, err := leader.Cluster.Peers()
	if err != nil || fmt.Sprint(peersAfter) != fmt.Sprint(peersBefore) {
		t.Errorf("configuration changed: %+v, was %+v (%v)", peersAfter, peersBefore, err)
	}
	if id, _ := follower.Cluster.Leader(); id != leader.ID {
		t.Errorf("leadership moved to %q", id)
	}
	waitConverged(t, h, 2)
	for _, nd := range h.Running() {
		if slices.Contains(nd.FSM.Entries(), "forged") {
			t.Errorf("%s applied a forged command", nd.ID)
		}
	}
	mu.Lock()
	for _, r := range seen {
		if r.Err == nil {
			t.Errorf("a change was made for %s: %+v", r.Peer, r)
		}
	}
	mu.Unlock()

	// The control: a member's certificate is served (a read-index, which changes nothing).
	own := issue(h.CA.IssueNode(follower.ID, pki.NodeOptions{Region: clustertest.Region}))
	if got := rpcAttempt(t, h, leader.Config.RaftAddr, own, map[string]any{"op": "read-index"}); got != "ok" {
		t.Errorf("control: a member's read-index: %s, want ok", got)
	}
}

// fakeMeta is what a cluster node gossips about itself (cluster's nodeMeta), as a process holding
// only the gossip key would forge it.
type fakeMeta struct{ id, raft string }

func (f fakeMeta) NodeMeta(int) []byte {
	b, _ := json.Marshal(map[string]any{"id": f.id, "raft": f.raft})
	return b
}
func (fakeMeta) NotifyMsg([]byte)                           {}
func (fakeMeta) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (fakeMeta) LocalState(join bool) []byte                { return nil }
func (fakeMeta) MergeRemoteState(buf []byte, join bool)     {}

// TestGossipNeverPromotes: a process holding only the gossip key (no certificate) advertises
// members at dead Raft addresses (issue 14: the leader made them voters and the region lost its
// quorum for good). They stay out of the configuration, and the cluster keeps its quorum: it
// still commits, and still does after one real node fails.
func TestGossipNeverPromotes(t *testing.T) {
	if fips140.Enabled() {
		t.Skip("FIPS mode gossips over mutual TLS: a process with the gossip key and no node certificate cannot join at all (TestGossipOverTLSElects)")
	}
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	applyN(t, h, leader, "a", 1)

	var fakes []*memberlist.Memberlist
	for i := range 3 {
		mc := memberlist.DefaultLANConfig()
		mc.Name = "fake-" + strconv.Itoa(i)
		mc.BindAddr, mc.BindPort = "127.0.0.1", 0
		mc.Keyring, _ = memberlist.NewKeyring(nil, leader.Config.GossipKey)
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
		mc.GossipInterval, mc.ProbeInterval = 30*time.Millisecond, 200*time.Millisecond
		mc.Delegate = fakeMeta{id: mc.Name, raft: "127.0.0.1:" + strconv.Itoa(1+i)}
		mc.LogOutput = io.Discard
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ml.Shutdown() })
		if _, err := ml.Join([]string{leader.Config.GossipAddr}); err != nil {
			t.Fatal(err)
		}
		fakes = append(fakes, ml)
	}
	h.Eventually(10*time.Second, "the leader to see the fake members in gossip", func() bool {
		members, _ := leader.Cluster.Members()
		n := 0
		for _, m := range members {
			if m.Status == cluster.StatusAlive && len(m.ID) > 5 && m.ID[:5] == "fake-" {
				n++
			}
		}
		return n == len(fakes)
	})
	// Several reconcile rounds (every gossip event and every ReconcileInterval).
	for range 5 {
		time.Sleep(clustertest.Config().ReconcileInterval)
		peers, err := leader.Cluster.Peers()
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != 3 {
			t.Fatalf("gossip-only members became voters: %+v", peers)
		}
	}
	// The region keeps its quorum, even with one real node down.
	h.Kill(h.Index(h.Followers()[0]))
	applyN(t, h, h.WaitForLeader(), "b", 1)
}

// TestMemberCannotAddItself: a voter whose removal was cut short (its tombstone committed, the
// leader gone before the configuration change) cannot lift its own tombstone by forwarding a join
// of itself with no operator (review of issue 16's tombstones), and an add-voter without the removal
// index an operator's join always carries is refused. Controls: a member that is not tombstoned may
// forward its own (idempotent) join, and an operator's join at another node readmits the
// tombstoned one.
func TestMemberCannotAddItself(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	follower, other := h.Followers()[0], h.Followers()[1]
	cert, err := h.CA.IssueNode(follower.ID, pki.NodeOptions{Region: clustertest.Region})
	if err != nil {
		t.Fatal(err)
	}
	self := map[string]any{"op": "add-voter", "id": follower.ID, "addr": follower.Config.RaftAddr, "removal": 0}
	if got := rpcAttempt(t, h, leader.Config.RaftAddr, cert, self); got != "ok" {
		t.Errorf("control: %s forwarding its own join while not removed: %s, want ok", follower.ID, got)
	}
	noRemoval := map[string]any{"op": "add-voter", "id": other.ID, "addr": other.Config.RaftAddr}
	if got := rpcAttempt(t, h, leader.Config.RaftAddr, cert, noRemoval); got != "rejected" {
		t.Errorf("an add-voter without a removal index: %s, want rejected", got)
	}

	if err := leader.Cluster.TombstoneOnly(h.Context(10*time.Second), follower.ID); err != nil {
		t.Fatal(err)
	}
	tombstoned := func() bool {
		removed, err := leader.Cluster.Removed()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range removed {
			if r.ID == follower.ID {
				return true
			}
		}
		return false
	}
	if !tombstoned() {
		t.Fatalf("%s has no tombstone after TombstoneOnly", follower.ID)
	}
	for _, seen := range []int{0, 1 << 30} {
		req := map[string]any{"op": "add-voter", "id": follower.ID, "addr": follower.Config.RaftAddr, "removal": seen}
		if got := rpcAttempt(t, h, leader.Config.RaftAddr, cert, req); got != "rejected" {
			t.Errorf("tombstoned %s forwarding its own join (removal %d): %s, want rejected", follower.ID, seen, got)
		}
	}
	if !tombstoned() {
		t.Fatalf("%s lifted its own tombstone", follower.ID)
	}
	// An operator's join at another node readmits it.
	if err := other.Cluster.Join(h.Context(10*time.Second), follower.ID, follower.Config.RaftAddr); err != nil {
		t.Fatalf("an operator's join at %s: %v", other.ID, err)
	}
	if tombstoned() {
		t.Errorf("an operator's join left %s tombstoned", follower.ID)
	}
}
