package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// One TLS port carries two protocols. After the mutually authenticated
// handshake the dialer writes one byte that says which (as Consul does
// with its RPC type byte, but inside TLS, so that nothing is read from an
// unauthenticated peer).
const (
	protoRaft byte = 'r'
	protoRPC  byte = 'c'
)

const handshakeTimeout = 5 * time.Second

// ConnFilter decides whether a connection between two nodes may carry
// traffic; tests use it to partition a cluster. It is consulted at
// connect time and on every read and write, so a partition also cuts
// established connections.
type ConnFilter func(localID, remoteID string) bool

// mux owns the listener: it accepts TLS connections, refuses peers that
// are not nodes of this node's plane (its region's nodes for a region node,
// governance nodes for a governance node), and hands Raft streams to the
// Raft transport (through streamLayer) and RPC connections to the RPC
// server.
type mux struct {
	self      string
	plane     pki.Identity // the peers this node's certificate may talk to (pki.PlaneOf)
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	logger    *slog.Logger
	filter    ConnFilter // nil: allow all
	handleRPC func(net.Conn, pki.Identity)
	// admit decides, after the handshake, whether a peer of the plane may
	// open a connection of protocol proto (see Cluster.admitPeer); for Raft
	// streams it is asked again on every read (muxConn.Read).
	admit func(peerID string, proto byte) error

	raftCh     chan net.Conn
	shutdownCh chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup

	src *pki.Source // nil: server and client hold the certificate for good

	mu    sync.Mutex          // guards conns
	conns map[net.Conn]string // the raw connection -> the peer's node ID, for Raft streams
}

func newMux(self string, ln net.Listener, advertise net.Addr, base *tls.Config, src *pki.Source, filter ConnFilter, logger *slog.Logger) *mux {
	var plane pki.Identity
	if len(base.Certificates) > 0 {
		plane = pki.PlaneOf(base.Certificates[0])
	}
	server := base.Clone()
	server.MinVersion = tls.VersionTLS13
	server.ClientAuth = tls.RequireAndVerifyClientCert
	server.VerifyConnection = requirePlane(base.VerifyConnection, plane)
	client := base.Clone()
	client.MinVersion = tls.VersionTLS13
	client.VerifyConnection = requirePlane(base.VerifyConnection, plane)
	if src != nil {
		src.Server(server)
	}
	return &mux{
		src:        src,
		self:       self,
		plane:      plane,
		ln:         ln,
		advertise:  advertise,
		server:     server,
		client:     client,
		logger:     logger,
		filter:     filter,
		raftCh:     make(chan net.Conn),
		shutdownCh: make(chan struct{}),
		conns:      make(map[net.Conn]string),
	}
}

// clientConfig is the configuration of a new outgoing connection: with a Source, a copy holding
// its current certificate and CA pool.
func (m *mux) clientConfig() *tls.Config {
	if m.src != nil {
		return m.src.Client(m.client)
	}
	return m.client
}

// requirePlane refuses a peer whose verified certificate does not name a
// node of plane (a region node of this node's region, or a governance node
// for governance: never a gateway, a service, an operator, another region's
// node or the other plane's), after whatever check the caller's
// configuration already had.
func requirePlane(prev func(tls.ConnectionState) error, plane pki.Identity) func(tls.ConnectionState) error {
	kind := pki.RequirePeer(plane)
	return func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return kind(cs)
	}
}

func (m *mux) start(handleRPC func(net.Conn, pki.Identity), admit func(string, byte) error) {
	m.handleRPC = handleRPC
	m.admit = admit
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.shutdownCh:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.logger.Error("accept failed", "error", err)
			select {
			case <-m.shutdownCh:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !m.track(c) {
			c.Close()
			return
		}
		m.wg.Add(1)
		go m.serve(c)
	}
}

// track registers a connection so that close can end it; it reports false
// once the mux is closed.
func (m *mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns == nil {
		return false
	}
	m.conns[c] = ""
	return true
}

func (m *mux) untrack(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns != nil {
		delete(m.conns, c)
	}
}

func (m *mux) serve(raw net.Conn) {
	defer m.wg.Done()
	handedOff := false
	defer func() {
		if !handedOff {
			raw.Close()
			m.untrack(raw)
		}
	}()
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	tc := tls.Server(raw, m.server)
	if err := tc.Handshake(); err != nil {
		m.logger.Warn("refused cluster connection", "remote-addr", raw.RemoteAddr().String(), "error", err)
		return
	}
	if !netutil.Authenticated(raw) { // out of the listener's pending budget; false if it timed out
		return
	}
	id, err := pki.PeerIdentity(tc.ConnectionState())
	if err != nil { // unreachable: VerifyConnection checked it
		return
	}
	var proto [1]byte
	if _, err := tc.Read(proto[:]); err != nil {
		return
	}
	_ = raw.SetDeadline(time.Time{})
	conn := m.wrap(tc, raw, id.NodeID, proto[0])
	if proto[0] == protoRaft {
		// Admission is not decided once: every read of an accepted Raft stream asks again (see
		// muxConn.Read), so a stream outlives neither its peer's membership nor a decision taken
		// before this node knew its configuration.
		conn.(*muxConn).recheck = true
	}
	if m.filter != nil && !m.filter(m.self, id.NodeID) {
		return
	}
	if err := m.admit(id.NodeID, proto[0]); err != nil {
		// A certificate of the plane is not membership: only the configuration's nodes may
		// speak Raft or ask the leader for anything (issue 14).
		m.logger.Warn("refused cluster connection", "peer", id.String(), "remote-addr", raw.RemoteAddr().String(), "error", err)
		return
	}
	switch proto[0] {
	case protoRaft:
		select {
		case m.raftCh <- conn:
			handedOff = true // Raft owns it now; close still ends it
		case <-m.shutdownCh:
		}
	case protoRPC:
		m.handleRPC(conn, id)
	default:
		m.logger.Warn("unknown cluster protocol", "node-id", id.NodeID, "byte", proto[0])
	}
}

// dial opens a mutually authenticated connection to a node and selects the
// protocol. If wantID is set, the node answering at addr must be that node
// (its certificate names it): a Raft append or a forwarded command never goes
// to whoever took over an address.
func (m *mux) dial(ctx context.Context, addr, wantID string, proto byte) (net.Conn, error) {
	select {
	case <-m.shutdownCh:
		return nil, ErrShutdown
	default:
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, err)
	}
	if !m.track(raw) {
		raw.Close()
		return nil, ErrShutdown
	}
	fail := func(err error) (net.Conn, error) {
		raw.Close()
		m.untrack(raw)
		return nil, err
	}
	cfg := m.clientConfig()
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return fail(fmt.Errorf("cluster: handshake with %s: %w", addr, err))
	}
	id, err := pki.PeerIdentity(tc.ConnectionState())
	if err != nil {
		return fail(fmt.Errorf("cluster: %s: %w", addr, err))
	}
	if wantID != "" && id.NodeID != wantID {
		return fail(fmt.Errorf("cluster: the node at %s is %s, not %s", addr, id.NodeID, wantID))
	}
	if m.filter != nil && !m.filter(m.self, id.NodeID) {
		return fail(fmt.Errorf("cluster: connection to %s blocked by filter", id.NodeID))
	}
	if _, err := tc.Write([]byte{proto}); err != nil {
		return fail(fmt.Errorf("cluster: %s: %w", addr, err))
	}
	return m.wrap(tc, raw, id.NodeID, proto), nil
}

// probe completes a mutually authenticated handshake with the node at addr,
// as dial does, and returns its verified identity without selecting a
// protocol (the peer sees a connection that closes before its first byte).
func (m *mux) probe(ctx context.Context, addr string) (pki.Identity, error) {
	select {
	case <-m.shutdownCh:
		return pki.Identity{}, ErrShutdown
	default:
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return pki.Identity{}, err
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return pki.Identity{}, err
	}
	defer raw.Close()
	cfg := m.clientConfig()
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return pki.Identity{}, err
	}
	id, err := pki.PeerIdentity(tc.ConnectionState())
	if err != nil {
		return pki.Identity{}, err
	}
	if m.filter != nil && !m.filter(m.self, id.NodeID) {
		return pki.Identity{}, fmt.Errorf("connection to %s blocked by filter", id.NodeID)
	}
	return id, nil
}

func (m *mux) wrap(tc *tls.Conn, raw net.Conn, remote string, proto byte) net.Conn {
	if proto == protoRaft {
		// Only Raft streams are ended by dropPeer: the cluster RPC checks membership on every
		// request, and the request that removes a node may come on a connection from that node.
		m.mu.Lock()
		if _, ok := m.conns[raw]; ok {
			m.conns[raw] = remote
		}
		m.mu.Unlock()
	}
	return &muxConn{Conn: tc, raw: raw, m: m, remote: remote}
}

// dropPeer ends every Raft stream to or from node id: after its removal, a
// stream it opened while a member must not outlive its membership.
func (m *mux) dropPeer(id string) {
	m.dropUnless(func(remote string) bool { return remote != id })
}

// dropUnless ends every Raft stream, to or from any node, whose peer keep
// refuses, and returns the peers it ended streams of.
func (m *mux) dropUnless(keep func(peerID string) bool) []string {
	m.mu.Lock()
	var drop []net.Conn
	var peers []string
	for c, remote := range m.conns {
		if remote != "" && !keep(remote) {
			drop = append(drop, c)
			peers = append(peers, remote)
		}
	}
	m.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
	return peers
}

// close stops accepting, ends every connection it accepted or dialed, and
// waits for its goroutines.
func (m *mux) close() {
	m.closeOnce.Do(func() {
		close(m.shutdownCh)
		m.ln.Close()
		m.mu.Lock()
		conns := m.conns
		m.conns = nil
		m.mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	m.wg.Wait()
}

// muxConn is a node-to-node connection: it applies the filter on every
// read and write and forgets itself when closed. On an accepted Raft stream
// (recheck) it also asks the mux's admit on every read.
type muxConn struct {
	net.Conn
	raw     net.Conn
	m       *mux
	remote  string
	recheck bool // an accepted Raft stream: admission is checked on every read
	once    sync.Once
}

var errFiltered = errors.New("cluster: connection blocked by filter")

func (c *muxConn) allowed() bool {
	return c.m.filter == nil || c.m.filter(c.m.self, c.remote)
}

// Read reads from the peer. On an accepted Raft stream the peer's admission
// is checked after the bytes arrived and before Raft sees them, against the
// configuration of that moment: hashicorp/raft's transport hands whatever it
// decodes to Raft without asking who sent it, so this is where an
// AppendEntries, RequestVote or InstallSnapshot from a node that is no longer
// (or never was) a member is refused. The stream is then closed. Bytes that
// arrive together (one TLS record, up to 16 KiB) are checked once.
func (c *muxConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == nil && !c.allowed() {
		c.Close()
		return 0, errFiltered
	}
	if n > 0 && c.recheck {
		if aerr := c.m.admit(c.remote, protoRaft); aerr != nil {
			c.m.logger.Warn("refused a Raft stream's message; closing it", "peer", c.remote,
				"remote-addr", c.raw.RemoteAddr().String(), "error", aerr)
			c.Close()
			return 0, aerr
		}
	}
	return n, err
}

func (c *muxConn) Write(p []byte) (int, error) {
	if !c.allowed() {
		c.Close()
		return 0, errFiltered
	}
	return c.Conn.Write(p)
}

func (c *muxConn) Close() error {
	var err error
	c.once.Do(func() {
		// Close the TCP connection directly: tls.Conn.Close would first
		// try to send close_notify and can block on a stalled peer.
		err = c.raw.Close()
		c.m.untrack(c.raw)
	})
	return err
}

// streamLayer adapts the mux to raft.StreamLayer.
type streamLayer struct {
	m *mux
	// idOf names the server at a Raft address in the latest configuration
	// ("" if none): Raft dials by address only, and the node answering
	// there must be the one the configuration names.
	idOf      func(raft.ServerAddress) string
	closeOnce sync.Once
	closed    chan struct{}
}

func newStreamLayer(m *mux, idOf func(raft.ServerAddress) string) *streamLayer {
	return &streamLayer{m: m, idOf: idOf, closed: make(chan struct{})}
}

func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.m.raftCh:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	case <-s.m.shutdownCh:
		return nil, net.ErrClosed
	}
}

// Close is called by the Raft transport; the mux itself is closed by the
// cluster, after Raft.
func (s *streamLayer) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

func (s *streamLayer) Addr() net.Addr { return s.m.advertise }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.m.dial(ctx, string(address), s.idOf(address), protoRaft)
}
