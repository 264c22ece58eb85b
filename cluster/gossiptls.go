package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// tlsGossipTransport is a memberlist.Transport that carries all gossip, packets included, over
// the node's mutual TLS (the mux's certificate, CA and plane check), for Config.GossipTLS and FIPS
// 140-3 mode. memberlist's own encryption (its keyring: AES-GCM under cipher.NewGCM with
// caller-drawn nonces) is then off: GODEBUG=fips140=only refuses it, and a region whose gossip
// cannot be decrypted never learns its peers and never elects. TLS 1.3 from crypto/tls is inside
// the Go Cryptographic Module's boundary and restricts itself to approved suites in FIPS mode.
//
// Why hand-written: memberlist ships only NetTransport (UDP packets, plain TCP streams) and a
// mock; no maintained memberlist transport over TLS exists. The design is the smallest one that
// keeps memberlist's semantics:
//
//   - Streams (push/pull, joins, probe fallbacks): one TLS connection each, the dialer writes
//     'S' after the handshake and memberlist owns the connection from then on.
//   - Packets (probes, acks, gossip): what NetTransport sends by UDP goes, framed (u32 length,
//     bytes), over one long-lived TLS connection per destination, opened on the first packet; the
//     dialer writes 'P' and its own advertised gossip address, which becomes Packet.From for the
//     receiver (memberlist answers pings at the address the ping names, or at From). A
//     destination has a bounded queue and its own sender goroutine: WriteTo never blocks, and a
//     packet the queue cannot take, or a connection cannot carry, is dropped, as UDP would drop
//     it; memberlist's failure detection is built for that. A sender idle for
//     gossipPacketIdle closes its connection and ends.
//
// Every connection, either way, completes the mutual TLS handshake and the plane check
// (requirePlane: a node of this node's region, or governance) before a byte of gossip is read,
// and the ConnFilter applies as on the Raft port. Gossip runs before membership (it is how nodes
// find each other), so no membership check applies, as with memberlist's shared key.
type tlsGossipTransport struct {
	self      string // our advertised gossip address, sent to packet receivers
	bindIP    net.IP
	bindPort  int
	ln        net.Listener
	mux       *mux // TLS configurations, filter, logger
	logger    *slog.Logger
	packetCh  chan *memberlist.Packet
	streamCh  chan net.Conn
	dialLimit time.Duration

	mu     sync.Mutex
	closed bool
	peers  map[string]*gossipPeer
	conns  map[net.Conn]struct{} // open raw connections, closed by Shutdown

	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

// gossipPeer is the packet queue to one destination.
type gossipPeer struct{ q chan []byte }

const (
	gossipProtoPacket byte = 'P'
	gossipProtoStream byte = 'S'
	// gossipPacketQueue is how many packets wait for one destination; more are dropped.
	gossipPacketQueue = 256
	// gossipMaxPacket bounds a framed packet (memberlist's UDP packets are at most 64 KiB).
	gossipMaxPacket = 64 << 10
	// gossipPacketIdle ends a destination's sender (and its connection) after this long
	// without a packet.
	gossipPacketIdle = time.Minute
)

// gossipAddr is a peer's advertised gossip address as a net.Addr (Packet.From).
type gossipAddr string

func (a gossipAddr) Network() string { return "tcp" }
func (a gossipAddr) String() string  { return string(a) }

func newTLSGossipTransport(m *mux, host string, port int, advertise string, lim netutil.HandshakeLimits, dialLimit time.Duration) (*tlsGossipTransport, error) {
	raw, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip listen: %w", err)
	}
	bound := raw.Addr().(*net.TCPAddr)
	if advertise == "" || advertise == net.JoinHostPort(host, "0") {
		advertise = bound.String()
	}
	t := &tlsGossipTransport{
		self:      advertise,
		bindIP:    bound.IP,
		bindPort:  bound.Port,
		ln:        netutil.LimitHandshakes(raw, lim),
		mux:       m,
		logger:    m.logger,
		packetCh:  make(chan *memberlist.Packet, gossipPacketQueue),
		streamCh:  make(chan net.Conn),
		dialLimit: dialLimit,
		peers:     make(map[string]*gossipPeer),
		conns:     make(map[net.Conn]struct{}),
		done:      make(chan struct{}),
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *tlsGossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("cluster: gossip advertise address %q is not an IP", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	if t.bindIP.IsUnspecified() {
		return nil, 0, errors.New("cluster: gossip over TLS binds a wildcard address: set GossipAdvertise (-gossip-advertise) to this node's IP")
	}
	ip4 := t.bindIP
	if a4 := ip4.To4(); a4 != nil {
		ip4 = a4
	}
	return ip4, t.bindPort, nil
}

// PacketCh implements memberlist.Transport.
func (t *tlsGossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh implements memberlist.Transport.
func (t *tlsGossipTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// WriteTo implements memberlist.Transport: it queues b for addr and returns at once.
func (t *tlsGossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return time.Time{}, ErrShutdown
	}
	p := t.peers[addr]
	if p == nil {
		p = &gossipPeer{q: make(chan []byte, gossipPacketQueue)}
		t.peers[addr] = p
		t.wg.Add(1)
		go t.sendLoop(addr, p)
	}
	t.mu.Unlock()
	select {
	case p.q <- append([]byte(nil), b...):
	default: // full: dropped, as a UDP packet may be
	}
	return time.Now(), nil
}

// sendLoop dials addr when it has a packet to send and writes packets in order until idle.
func (t *tlsGossipTransport) sendLoop(addr string, p *gossipPeer) {
	defer t.wg.Done()
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	idle := time.NewTimer(gossipPacketIdle)
	defer idle.Stop()
	var frame []byte
	for {
		var b []byte
		select {
		case b = <-p.q:
		case <-t.done:
			return
		case <-idle.C:
			t.mu.Lock()
			if len(p.q) == 0 {
				delete(t.peers, addr)
				t.mu.Unlock()
				return
			}
			t.mu.Unlock()
			idle.Reset(gossipPacketIdle)
			continue
		}
		idle.Reset(gossipPacketIdle)
		if conn == nil {
			c, err := t.dial(addr, t.dialLimit, gossipProtoPacket)
			if err != nil {
				t.logger.Debug("gossip packet dropped: no TLS connection", "peer-addr", addr, "error", err)
				continue
			}
			conn = c
		}
		frame = binary.BigEndian.AppendUint32(frame[:0], uint32(len(b)))
		frame = append(frame, b...)
		_ = conn.SetWriteDeadline(time.Now().Add(t.dialLimit))
		if _, err := conn.Write(frame); err != nil {
			conn.Close()
			conn = nil
		}
	}
}

// DialTimeout implements memberlist.Transport: a stream to addr over mutual TLS.
func (t *tlsGossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.dial(addr, timeout, gossipProtoStream)
}

// dial opens a mutually authenticated connection to addr and announces proto (and, for packets,
// this node's advertised address).
func (t *tlsGossipTransport) dial(addr string, timeout time.Duration, proto byte) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip dial %s: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip dial %s: %w", addr, err)
	}
	if !t.track(raw) {
		raw.Close()
		return nil, ErrShutdown
	}
	fail := func(err error) (net.Conn, error) {
		t.untrack(raw)
		raw.Close()
		return nil, err
	}
	cfg := t.mux.clientConfig()
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("cluster: gossip handshake with %s: %w", addr, err))
	}
	id, err := pki.PeerIdentity(tc.ConnectionState())
	if err != nil {
		return fail(fmt.Errorf("cluster: gossip %s: %w", addr, err))
	}
	if f := t.mux.filter; f != nil && !f(t.mux.self, id.NodeID) {
		return fail(fmt.Errorf("cluster: gossip to %s blocked by filter", id.NodeID))
	}
	hello := []byte{proto}
	if proto == gossipProtoPacket {
		hello = binary.BigEndian.AppendUint16(hello, uint16(len(t.self)))
		hello = append(hello, t.self...)
	}
	_ = raw.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := tc.Write(hello); err != nil {
		return fail(fmt.Errorf("cluster: gossip %s: %w", addr, err))
	}
	_ = raw.SetWriteDeadline(time.Time{})
	return &gossipConn{Conn: tc, raw: raw, t: t}, nil
}

func (t *tlsGossipTransport) acceptLoop() {
	defer t.wg.Done()
	for {
		raw, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.logger.Warn("gossip accept", "error", err)
			continue
		}
		if !t.track(raw) {
			raw.Close()
			return
		}
		t.wg.Add(1)
		go t.serve(raw)
	}
}

// serve authenticates an accepted connection and hands it to memberlist: a stream whole, a
// packet connection frame by frame until it closes.
func (t *tlsGossipTransport) serve(raw net.Conn) {
	defer t.wg.Done()
	handedOff := false
	defer func() {
		if !handedOff {
			t.untrack(raw)
			raw.Close()
		}
	}()
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	tc := tls.Server(raw, t.mux.server)
	if err := tc.Handshake(); err != nil {
		t.logger.Warn("refused gossip connection", "remote-addr", raw.RemoteAddr().String(), "error", err)
		return
	}
	if !netutil.Authenticated(raw) {
		return
	}
	id, err := pki.PeerIdentity(tc.ConnectionState())
	if err != nil {
		return
	}
	if f := t.mux.filter; f != nil && !f(t.mux.self, id.NodeID) {
		return
	}
	// One byte read from the TLS connection itself: a stream's bytes that follow stay in
	// tls.Conn for memberlist.
	var b [1]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil {
		return
	}
	switch proto := b[0]; proto {
	case gossipProtoStream:
		_ = raw.SetDeadline(time.Time{})
		select {
		case t.streamCh <- &gossipConn{Conn: tc, raw: raw, t: t}:
			handedOff = true
		case <-t.done:
		}
	case gossipProtoPacket:
		br := bufio.NewReader(tc)
		var n [2]byte
		if _, err := io.ReadFull(br, n[:]); err != nil {
			return
		}
		from := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(br, from); err != nil {
			return
		}
		if _, _, err := net.SplitHostPort(string(from)); err != nil {
			return
		}
		_ = raw.SetDeadline(time.Time{})
		t.readPackets(br, gossipAddr(from))
	default:
		t.logger.Warn("unknown gossip protocol", "node-id", id.NodeID, "byte", b[0])
	}
}

func (t *tlsGossipTransport) readPackets(r *bufio.Reader, from net.Addr) {
	var n [4]byte
	for {
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(n[:])
		if size == 0 || size > gossipMaxPacket {
			return
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: buf, From: from, Timestamp: time.Now()}:
		case <-t.done:
			return
		}
	}
}

func (t *tlsGossipTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tlsGossipTransport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// Shutdown implements memberlist.Transport: it stops accepting, ends every connection and
// waits for its goroutines.
func (t *tlsGossipTransport) Shutdown() error {
	t.once.Do(func() {
		t.mu.Lock()
		t.closed = true
		conns := t.conns
		t.conns = map[net.Conn]struct{}{}
		t.mu.Unlock()
		close(t.done)
		t.ln.Close()
		for c := range conns {
			c.Close()
		}
	})
	t.wg.Wait()
	return nil
}

// gossipConn is a gossip TLS connection whose Close ends the TCP connection at once (tls.Conn's
// Close may block sending close_notify to a stalled peer) and forgets it.
type gossipConn struct {
	net.Conn
	raw  net.Conn
	t    *tlsGossipTransport
	once sync.Once
}

func (c *gossipConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.raw.Close()
		c.t.untrack(c.raw)
	})
	return err
}
