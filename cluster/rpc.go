package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kryptonkms/krypton/internal/pki"
)

// The cluster-internal RPC forwards to the leader what only the leader can
// do. It only ever talks to authenticated nodes, so a JSON envelope behind
// a length prefix is enough; the limit keeps a confused peer from making
// us allocate without bound.
const maxFrame = 64 << 20

type rpcOp string

const (
	opApply     rpcOp = "apply"
	opAddVoter  rpcOp = "add-voter"
	opRemove    rpcOp = "remove-server"
	opReadIndex rpcOp = "read-index"
	opTransfer  rpcOp = "transfer-leadership"
)

type rpcRequest struct {
	Op      rpcOp         `json:"op"`
	Cmd     []byte        `json:"cmd,omitempty"`
	ID      string        `json:"id,omitempty"`
	Addr    string        `json:"addr,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
	// Removal (add-voter) is the index of the target's tombstone the asking node knew of when
	// it asked (0: none); absent from older versions (Cluster.Join).
	Removal *uint64 `json:"removal,omitempty"`
	// Trace (apply) is the forwarding call's W3C traceparent, when tracing is on
	// (Config.TracerProvider); older versions ignore it.
	Trace string `json:"trace,omitempty"`
}

// Error codes on the wire. A received code maps to a local sentinel; the
// message only adds context for people reading logs.
const (
	codeOK         = ""
	codeNotLeader  = "not-leader"
	codeLost       = "leadership-lost"
	codeShutdown   = "shutdown"
	codeTimeout    = "timeout"
	codeRejected   = "rejected"
	codeBadRequest = "bad-request"
	codeBadAddress = "bad-address"
	codeUnknown    = "unknown-server"
)

type rpcResponse struct {
	Code  string `json:"code,omitempty"`
	Msg   string `json:"msg,omitempty"`
	Resp  []byte `json:"resp,omitempty"`
	Index uint64 `json:"index,omitempty"`
}

func (r *rpcResponse) err() error {
	var base error
	switch r.Code {
	case codeOK:
		return nil
	case codeNotLeader:
		base = ErrNotLeader
	case codeLost:
		base = ErrLeadershipLost
	case codeShutdown:
		// The leader is shutting down: for us that is no leader.
		base = ErrNotLeader
	case codeTimeout:
		base = context.DeadlineExceeded
	case codeBadAddress:
		base = ErrBadAddress
	case codeUnknown:
		base = ErrUnknownServer
	default:
		base = ErrRejected
	}
	return fmt.Errorf("%w (leader: %s)", base, r.Msg)
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("cluster: frame of %d bytes exceeds %d", len(b), maxFrame)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		return err
	}
	return nil
}

func readFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return fmt.Errorf("cluster: frame of %d bytes exceeds %d", n, maxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// serveRPC answers requests on one connection until it closes.
func (c *Cluster) serveRPC(conn net.Conn, peer pki.Identity) {
	br := bufio.NewReader(conn)
	for {
		var req rpcRequest
		if err := readFrame(br, &req); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.logger.Debug("cluster rpc read failed", "node-id", peer.NodeID, "error", err)
			}
			return
		}
		resp := c.handleRPC(&req, peer)
		if err := writeFrame(conn, resp); err != nil {
			return
		}
	}
}

// PeerRequest is a request another node made of this one over the cluster
// RPC, as Config.OnPeerRequest is told of it.
type PeerRequest struct {
	// Op is the request: "apply", "add-voter", "remove-server",
	// "transfer-leadership" or "read-index".
	Op string
	// Peer is the identity the requesting node's certificate names.
	Peer pki.Identity
	// Target is the node added, removed or transferred to ("" for others).
	Target string
	// Addr is the Raft address of a node added.
	Addr string
	// Err is why the request failed or was refused; nil if it was done.
	Err error
	// Refused is set when the request was refused because the asking node is
	// not in the configuration.
	Refused bool
	// Cmd is the entry a peer forwarded to be applied (op "apply"), as it
	// was proposed; nil for other ops.
	Cmd []byte
}

func (c *Cluster) handleRPC(req *rpcRequest, peer pki.Identity) *rpcResponse {
	// Only the configuration's nodes may ask anything, checked on every
	// request: a pooled connection outlives a removal (issue 14).
	if member, _ := c.isMember(peer.NodeID); !member {
		err := fmt.Errorf("%w: %s is not in the leader's Raft configuration", ErrRejected, peer.NodeID)
		c.logger.Warn("cluster rpc refused", "op", string(req.Op), "peer", peer.String(), "target", req.ID, "error", err)
		c.notePeerRequest(PeerRequest{Op: string(req.Op), Peer: peer, Target: req.ID, Addr: req.Addr, Err: err, Refused: true})
		return &rpcResponse{Code: codeRejected, Msg: err.Error()}
	}
	if req.Op == opAddVoter {
		if err := checkAddVoterRequest(req); err != nil {
			c.logger.Warn("cluster rpc refused", "op", string(req.Op), "peer", peer.String(), "target", req.ID, "error", err)
			c.notePeerRequest(PeerRequest{Op: string(req.Op), Peer: peer, Target: req.ID, Addr: req.Addr, Err: err, Refused: true})
			return &rpcResponse{Code: codeRejected, Msg: err.Error()}
		}
	}
	if req.Op == opApply && req.Trace != "" && c.tracer != nil {
		// The peer is a member, checked above: its trace context may be the parent (the
		// tracer provider's sampler bounds how many such spans are recorded).
		ctx := tracePropagator.Extract(context.Background(), propagation.MapCarrier{"traceparent": req.Trace})
		_, span := c.tracer.Start(ctx, "cluster.apply", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
	}
	resp := c.serveMember(req, peer)
	switch req.Op {
	case opAddVoter, opRemove, opTransfer:
		// Membership and leadership changes are rare and decisive: each is logged and audited
		// with who asked.
		err := resp.err()
		c.logger.Info("cluster rpc", "op", string(req.Op), "peer", peer.String(), "target", req.ID, "addr", req.Addr, "error", err)
		c.notePeerRequest(PeerRequest{Op: string(req.Op), Peer: peer, Target: req.ID, Addr: req.Addr, Err: err})
	case opApply:
		// Every forwarded write: the node that took the request audits it with its caller, and
		// this leader with the peer that forwarded it.
		c.logger.Debug("cluster rpc", "op", string(req.Op), "peer", peer.String(), "bytes", len(req.Cmd), "code", resp.Code)
		if resp.Code != codeNotLeader { // not proposed here: the peer retries at the leader
			c.notePeerRequest(PeerRequest{Op: string(req.Op), Peer: peer, Err: resp.err(), Cmd: req.Cmd})
		}
	}
	return resp
}

// notePeerRequest tells Config.OnPeerRequest, if set.
func (c *Cluster) notePeerRequest(r PeerRequest) {
	if c.cfg.OnPeerRequest != nil {
		c.cfg.OnPeerRequest(r)
	}
}

func (c *Cluster) serveMember(req *rpcRequest, peer pki.Identity) *rpcResponse {
	timeout := req.Timeout
	if timeout <= 0 || timeout > time.Minute {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// A forwarded request is served only by the leader itself: chains of
	// forwards could loop while leadership moves.
	if c.raft.State() != raft.Leader {
		return &rpcResponse{Code: codeNotLeader, Msg: "not the leader"}
	}
	switch req.Op {
	case opApply:
		resp, err := c.applyLocal(ctx, req.Cmd)
		if err != nil {
			return errResponse(err)
		}
		b, err := c.codec.EncodeResponse(resp)
		if err != nil {
			return &rpcResponse{Code: codeRejected, Msg: err.Error()}
		}
		return &rpcResponse{Resp: b}
	case opReadIndex:
		idx, err := c.leaderReadIndex(ctx)
		if err != nil {
			return errResponse(err)
		}
		return &rpcResponse{Index: idx}
	case opAddVoter:
		if err := c.addVoterLocal(ctx, req.ID, req.Addr, req.Removal, req.ID == peer.NodeID); err != nil {
			return errResponse(err)
		}
		return &rpcResponse{}
	case opRemove:
		if err := c.removeLocal(ctx, req.ID); err != nil {
			return errResponse(err)
		}
		return &rpcResponse{}
	case opTransfer:
		if err := c.transferLocal(ctx, req.ID); err != nil {
			return errResponse(err)
		}
		return &rpcResponse{}
	}
	return &rpcResponse{Code: codeBadRequest, Msg: "unknown op"}
}

// checkAddVoterRequest refuses an add-voter without the removal index an operator's join always
// sends: that index is what lets the leader refuse a join asked before a later removal. An older
// node that sends none is refused (join at the leader while the region is upgraded).
func checkAddVoterRequest(req *rpcRequest) error {
	if req.Removal == nil {
		return fmt.Errorf("%w: add-voter for %s carries no removal index (a node of an older version forwarded it); run krypton join at the leader", ErrRejected, req.ID)
	}
	return nil
}

func errResponse(err error) *rpcResponse {
	code := codeRejected
	switch {
	case errors.Is(err, ErrNotLeader):
		code = codeNotLeader
	case errors.Is(err, ErrLeadershipLost):
		code = codeLost
	case errors.Is(err, ErrShutdown):
		code = codeShutdown
	case errors.Is(err, context.DeadlineExceeded):
		code = codeTimeout
	case errors.Is(err, ErrBadAddress):
		code = codeBadAddress
	case errors.Is(err, ErrUnknownServer):
		code = codeUnknown
	}
	return &rpcResponse{Code: code, Msg: err.Error()}
}

// rpcClient keeps a few idle connections per leader (node ID and address).
type rpcClient struct {
	m *mux

	mu   sync.Mutex // guards idle
	idle map[string][]*rpcConn
}

type rpcConn struct {
	net.Conn
	br *bufio.Reader
}

const maxIdlePerAddr = 4

// alive reports whether an idle connection is still open: the peer sends
// nothing unasked, so a read that times out at once means alive, and EOF
// means the peer (say, a restarted leader) closed it. Checking first keeps a
// stale connection from turning a forwarded Apply into an ambiguous failure.
func (c *rpcConn) alive() bool {
	_ = c.SetReadDeadline(time.Now())
	_, err := c.br.Peek(1)
	_ = c.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// call sends req to node id at addr (the leader) and returns its answer.
func (rc *rpcClient) call(ctx context.Context, id, addr string, req *rpcRequest) (*rpcResponse, error) {
	if dl, ok := ctx.Deadline(); ok {
		req.Timeout = time.Until(dl)
	}
	key := id + "@" + addr
	conn, err := rc.get(ctx, id, addr)
	if err != nil {
		return nil, err
	}
	// The deadline bounds the whole exchange; a context without one still
	// ends the exchange when cancelled. The deadline is set first: a
	// cancellation that came meanwhile (a forward abandoning a replaced
	// leader) must not be overridden by it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl.Add(time.Second))
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if err := writeFrame(conn, req); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrForward, err)
	}
	var resp rpcResponse
	if err := readFrame(conn.br, &resp); err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ErrForward, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %v", ErrForward, err)
	}
	if !stop() {
		conn.Close() // the deadline was poked: do not reuse
		return &resp, nil
	}
	_ = conn.SetDeadline(time.Time{})
	rc.put(key, conn)
	return &resp, nil
}

// get returns an idle connection to node id at addr, or dials one; idle
// connections are kept by node and address, so that one to a node is never
// used for another that took its address.
func (rc *rpcClient) get(ctx context.Context, id, addr string) (*rpcConn, error) {
	key := id + "@" + addr
	for {
		rc.mu.Lock()
		l := rc.idle[key]
		if len(l) == 0 {
			rc.mu.Unlock()
			break
		}
		c := l[len(l)-1]
		rc.idle[key] = l[:len(l)-1]
		rc.mu.Unlock()
		if c.alive() {
			return c, nil
		}
		c.Close()
	}
	conn, err := rc.m.dial(ctx, addr, id, protoRPC)
	if err != nil {
		if errors.Is(err, ErrShutdown) {
			return nil, err
		}
		// Nothing was sent: the request was certainly not performed.
		return nil, fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	return &rpcConn{Conn: conn, br: bufio.NewReader(conn)}, nil
}

func (rc *rpcClient) put(key string, c *rpcConn) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.idle == nil || len(rc.idle[key]) >= maxIdlePerAddr {
		c.Close()
		return
	}
	rc.idle[key] = append(rc.idle[key], c)
}

func (rc *rpcClient) close() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, l := range rc.idle {
		for _, c := range l {
			c.Close()
		}
	}
	rc.idle = nil
}
