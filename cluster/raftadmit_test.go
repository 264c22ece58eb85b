package cluster_test

import (
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/pki"
)

// raftSender speaks hashicorp/raft's own wire protocol (its NetworkTransport as the client) to a
// node's Raft port with one certificate, as an attacker holding that certificate would. Streams
// are pooled by the transport, so a stream opened by one RPC carries the next.
type raftSender struct {
	trans *raft.NetworkTransport
	layer *certLayer
}

// certLayer is a raft.StreamLayer that dials with a given certificate and selects the Raft
// protocol (one byte, after the TLS handshake); it remembers the connections it dialed.
type certLayer struct {
	cfg  *tls.Config
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	conns []net.Conn
}

// Accept accepts nothing: the sender only dials.
func (l *certLayer) Accept() (net.Conn, error) {
	<-l.done
	return nil, net.ErrClosed
}

func (l *certLayer) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *certLayer) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func (l *certLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), l.cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte{'r'}); err != nil {
		conn.Close()
		return nil, err
	}
	l.mu.Lock()
	l.conns = append(l.conns, conn)
	l.mu.Unlock()
	return conn, nil
}

// closedByPeer reports whether every connection the layer dialed has been closed by the node: a
// read returns at once with an error other than a timeout.
func (l *certLayer) closedByPeer() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		var b [1]byte
		_, err := c.Read(b[:])
		_ = c.SetReadDeadline(time.Time{})
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			return false
		}
	}
	return true
}

func newRaftSender(t *testing.T, h *clustertest.Harness, cert *pki.Certificate) *raftSender {
	t.Helper()
	l := &certLayer{cfg: pki.ClientTLSConfig(h.CA.Pool(), cert.TLSCertificate(), "127.0.0.1"), done: make(chan struct{})}
	l.cfg.MinVersion = tls.VersionTLS13
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: l, MaxPool: 1, Timeout: 5 * time.Second,
	})
	t.Cleanup(func() {
		trans.Close()
		l.mu.Lock()
		for _, c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
	})
	return &raftSender{trans: trans, layer: l}
}

func raftStat(t *testing.T, nd *clustertest.Node, key string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(nd.Cluster.Stats()[key], 10, 64)
	if err != nil {
		t.Fatalf("%s stat %s: %v", nd.ID, key, err)
	}
	return v
}

// forgeAppend builds the AppendEntries a node holding cert would send to take over nd: a newer
// term, its log matched, one forged command committed at once.
func forgeAppend(t *testing.T, nd *clustertest.Node, from *clustertest.Node) *raft.AppendEntriesRequest {
	term := raftStat(t, nd, "term") + 1
	last, lastTerm := raftStat(t, nd, "last_log_index"), raftStat(t, nd, "last_log_term")
	return &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(from.ID), Addr: []byte(from.Config.RaftAddr)},
		Term:              term,
		PrevLogEntry:      last,
		PrevLogTerm:       lastTerm,
		Entries:           []*raft.Log{{Index: last + 1, Term: term, Type: raft.LogCommand, Data: []byte("forged")}},
		LeaderCommitIndex: last + 1,
	}
}

// TestRemovedNodeRaftStreamRefused: a node is removed while it holds an open Raft stream to a
// follower (issue 14: only the leader that removes a node ended its streams; followers kept them,
// and hashicorp/raft does not ask who sends an AppendEntries). With the removed node's valid
// certificate, an attacker then sends an AppendEntries on that stream that would make the
// follower apply a forged command, and opens a new stream for a RequestVote of a far newer term:
// both refused. The follower never applies the forged command, its term and leader stay, and the
// stream it held is closed.
func TestRemovedNodeRaftStreamRefused(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	applyN(t, h, leader, "a", 2)
	gone := h.AddNode()
	waitConverged(t, h, 2)
	var follower *clustertest.Node
	for _, nd := range h.Followers() {
		if nd != gone {
			follower = nd
			break
		}
	}
	cert, err := h.CA.IssueNode(gone.ID, pki.NodeOptions{Region: clustertest.Region})
	if err != nil {
		t.Fatal(err)
	}
	s := newRaftSender(t, h, cert)
	target := raft.ServerAddress(follower.Config.RaftAddr)

	// While it is a member, its stream is admitted: a stale append (term 0) is answered, and
	// changes nothing.
	var resp raft.AppendEntriesResponse
	stale := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}}
	if err := s.trans.AppendEntries(raft.ServerID(follower.ID), target, stale, &resp); err != nil {
		t.Fatalf("a member's stale append: %v, want an answer", err)
	}

	if err := leader.Cluster.Remove(h.Context(10*time.Second), gone.ID); err != nil {
		t.Fatal(err)
	}
	h.Kill(h.Index(gone))
	h.Eventually(10*time.Second, follower.ID+" to learn of the removal", func() bool {
		peers, err := follower.Cluster.Peers()
		return err == nil && !slices.ContainsFunc(peers, func(p cluster.Peer) bool { return p.ID == gone.ID })
	})
	termBefore := raftStat(t, follower, "term")
	leaderBefore, _ := follower.Cluster.Leader()

	// The stream it held: the forged append is refused.
	if err := s.trans.AppendEntries(raft.ServerID(follower.ID), target, forgeAppend(t, follower, gone), &resp); err == nil {
		t.Errorf("the removed node's append on its old stream was answered: %+v", resp)
	}
	// A new stream: a vote of a far newer term is refused.
	var vresp raft.RequestVoteResponse
	vote := &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(gone.ID), Addr: []byte(gone.Config.RaftAddr)},
		Term:      termBefore + 100, LastLogIndex: 1 << 40, LastLogTerm: termBefore + 99,
	}
	if err := s.trans.RequestVote(raft.ServerID(follower.ID), target, vote, &vresp); err == nil {
		t.Errorf("the removed node's vote request was answered: %+v", vresp)
	}
	h.Eventually(10*time.Second, "the removed node's streams to be closed", s.layer.closedByPeer)

	applyN(t, h, leader, "b", 1)
	waitConverged(t, h, 3)
	if slices.Contains(follower.FSM.Entries(), "forged") {
		t.Errorf("%s applied the removed node's forged command", follower.ID)
	}
	if got := raftStat(t, follower, "term"); got != termBefore {
		t.Errorf("%s's term moved from %d to %d", follower.ID, termBefore, got)
	}
	if id, _ := follower.Cluster.Leader(); id != leaderBefore {
		t.Errorf("%s follows %q, followed %q", follower.ID, id, leaderBefore)
	}
}

// TestRaftStreamOpenedBeforeJoinRechecked: a node waiting to be joined (empty configuration)
// accepts Raft streams from any node of its region, so that the leader that adds it can reach it.
// A node of the region that is no member opens one then (issue 14: the stream stayed admitted
// after the node was joined). Once the node has been joined and learns its configuration, that
// stream is closed, and a forged append on it is refused and not applied; the node follows the
// real leader in the real term.
func TestRaftStreamOpenedBeforeJoinRechecked(t *testing.T) {
	h := clustertest.Start(t, 3)
	leader := h.WaitForLeader()
	applyN(t, h, leader, "a", 2)
	joiner := h.StartNode()

	cert, err := h.CA.IssueNode("node-9", pki.NodeOptions{Region: clustertest.Region})
	if err != nil {
		t.Fatal(err)
	}
	s := newRaftSender(t, h, cert)
	target := raft.ServerAddress(joiner.Config.RaftAddr)
	// A stale append without a leader's address: answered (the configuration is empty), and it
	// does not make node-9 the joiner's leader.
	var resp raft.AppendEntriesResponse
	stale := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}}
	if err := s.trans.AppendEntries(raft.ServerID(joiner.ID), target, stale, &resp); err != nil {
		t.Fatalf("an append to a node waiting to be joined: %v, want an answer", err)
	}

	if err := leader.Cluster.Join(h.Context(10*time.Second), joiner.ID, joiner.Config.RaftAddr); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, h, 2)
	h.Eventually(10*time.Second, "the stream opened before the join to be closed", s.layer.closedByPeer)

	termBefore := raftStat(t, joiner, "term")
	nine := &clustertest.Node{ID: "node-9", Config: joiner.Config}
	nine.Config.RaftAddr = "127.0.0.1:1"
	if err := s.trans.AppendEntries(raft.ServerID(joiner.ID), target, forgeAppend(t, joiner, nine), &resp); err == nil {
		t.Errorf("a non-member's append after the join was answered: %+v", resp)
	}
	applyN(t, h, leader, "b", 1)
	waitConverged(t, h, 3)
	if slices.Contains(joiner.FSM.Entries(), "forged") {
		t.Errorf("%s applied a non-member's forged command", joiner.ID)
	}
	if got := raftStat(t, joiner, "term"); got != termBefore {
		t.Errorf("%s's term moved from %d to %d", joiner.ID, termBefore, got)
	}
	if id, _ := joiner.Cluster.Leader(); id != leader.ID {
		t.Errorf("%s follows %q, want %s", joiner.ID, id, leader.ID)
	}
}
