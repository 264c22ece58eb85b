package region

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// peerClients keeps one gRPC connection per peer (node ID and API address), dialled with this node's
// certificate, for the node service (L2 handoff, lease renewal, fence). Addresses come from gossip
// tags, which anyone holding the gossip key can forge: each connection therefore checks that the
// server's certificate names that node of this region (ClientConfig.Server), so an L2 handoff or a
// fence confirmation never goes to or comes from another process.
type peerClients struct {
	cl     *cluster.Cluster
	cfg    transport.ClientConfig
	filter func(remoteID string) bool // Config.PeerFilter

	mu     sync.Mutex // guards conns and closed
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newPeerClients(cl *cluster.Cluster, cfg transport.ClientConfig, filter func(string) bool) *peerClients {
	return &peerClients{cl: cl, cfg: cfg, filter: filter, conns: make(map[string]*grpc.ClientConn)}
}

// errPeerUnreachable is what a call to a node cut off by Config.PeerFilter gets.
var errPeerUnreachable = transport.Coded(codes.Unavailable, "region: peer unreachable")

// apiAddr finds a node's API address in gossip.
func (p *peerClients) apiAddr(nodeID string) (string, bool) {
	members, err := p.cl.Members()
	if err != nil {
		return "", false
	}
	for _, m := range members {
		if m.ID == nodeID && m.Meta[metaRPC] != "" {
			return m.Meta[metaRPC], true
		}
	}
	return "", false
}

// node returns a node-service client for nodeID.
func (p *peerClients) node(nodeID string) (kv1.NodeServiceClient, error) {
	if p.filter != nil && !p.filter(nodeID) {
		return nil, errPeerUnreachable
	}
	addr, ok := p.apiAddr(nodeID)
	if !ok {
		return nil, ErrNoLeader
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrShutdown
	}
	conn := p.conns[peerKey(nodeID, addr)]
	if conn == nil {
		var err error
		cfg := p.cfg
		cfg.Server.NodeID = nodeID
		// Dial returns at once and connects on the first call.
		if conn, err = transport.Dial(context.Background(), addr, cfg); err != nil {
			return nil, err
		}
		p.conns[peerKey(nodeID, addr)] = conn
	}
	return kv1.NewNodeServiceClient(conn), nil
}

// redial ends the connect backoff of the connection to nodeID, if there is one, so that the next
// call dials at once. After a peer restarts, gRPC would otherwise wait out a backoff that grew
// while the peer was down (up to seconds), and a fence would wait out the peer's lease instead of
// getting its confirmation.
func (p *peerClients) redial(nodeID string) {
	addr, ok := p.apiAddr(nodeID)
	if !ok {
		return
	}
	p.mu.Lock()
	conn := p.conns[peerKey(nodeID, addr)]
	p.mu.Unlock()
	if conn != nil {
		conn.ResetConnectBackoff()
	}
}

// leader returns a node-service client for the current leader and its id.
func (p *peerClients) leader() (kv1.NodeServiceClient, string, error) {
	id, _ := p.cl.Leader()
	if id == "" {
		return nil, "", ErrNoLeader
	}
	c, err := p.node(id)
	return c, id, err
}

// peerKey names the connection to node nodeID at addr.
func peerKey(nodeID, addr string) string { return nodeID + "@" + addr }

func (p *peerClients) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conns {
		c.Close()
		delete(p.conns, addr)
	}
	p.closed = true
}
