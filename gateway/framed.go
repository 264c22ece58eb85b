package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/rawio"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// The framed protocol is the Unix socket's second language, for local callers to whom a gRPC call
// costs more than the data key it carries (docs/gateway.md, "The framed protocol"). Measured on
// the 2-core development machine, gRPC's HTTP/2 server and client took most of the gateway's CPU
// per data key on the socket; the work behind a data key (its share of one packed region call and
// of one crypto/rand read) is a few microseconds. It is hand-written because the protocol is two
// operations over a local socket, whose access control is the socket file's mode: no library
// offers less than gRPC's framing and stream machinery, and that is the cost to be removed.
//
// A connection opens with the four bytes of framedMagic (a gRPC client's first bytes are "PRI ",
// so one socket serves both). Then each side sends frames: a big-endian uint32 length and that
// many bytes. Requests may be pipelined; answers come in any order, matched by id.
//
//	request:  id u32 | op u8 | timeout-ms u32 | op's fields
//	  op 1 GenerateDataKey: tenant str | service str | version u32 | context bytes
//	  op 2 Unwrap:          blob bytes | context bytes
//	answer:   id u32 | code u8 (a gRPC code, 0 OK) | OK: plaintext bytes | blob bytes |
//	                                                   tenant str | service str | version u32
//	                                               | else: message str
//
// str and bytes are a big-endian uint32 length and the bytes. An empty tenant or service means the
// gateway's own, as on gRPC; a timeout of 0 means none.
const framedMagic = "KRF1"

// Framed operations.
const (
	framedGenerateDataKey = 1
	framedUnwrap          = 2
)

// framedMaxFrame bounds a frame: a request holds at most a blob and a context.
const framedMaxFrame = 64 << 10

// framedMaxPending bounds the requests of one connection that are read but whose answers are not
// yet written: past it the reader stops reading until the writer has written answers. Without a
// bound, a client that pipelines requests and never reads its answers would make the gateway
// queue answers (holding data keys) without end. A var so that a test may lower it; a gateway
// reads it once, in New.
var framedMaxPending = 1024

// errFramed is a malformed frame: the connection is closed.
var errFramed = errors.New("gateway: malformed frame on the framed protocol")

// sniffListener serves the Unix socket's two languages: a connection that opens with framedMagic
// is served the framed protocol by serve; any other is handed, its first bytes put back, to the
// gRPC server through Accept.
type sniffListener struct {
	net.Listener
	serve func(net.Conn, *bufio.Reader)
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup // the accept loop and the connections being sniffed

	mu       sync.Mutex // guards sniffing
	sniffing map[net.Conn]struct{}
}

func newSniffListener(ln net.Listener, serve func(net.Conn, *bufio.Reader)) *sniffListener {
	l := &sniffListener{Listener: ln, serve: serve, conns: make(chan net.Conn), done: make(chan struct{}),
		sniffing: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.loop()
	return l
}

func (l *sniffListener) loop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.Close()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.sniff(c)
		}()
	}
}

// sniff reads the first four bytes of c (within ten seconds) and routes it.
func (l *sniffListener) sniff(c net.Conn) {
	c = rawio.Wrap(c)
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		c.Close()
		return
	default:
	}
	l.sniffing[c] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.sniffing, c)
		l.mu.Unlock()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 32<<10)
	head, err := br.Peek(len(framedMagic))
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	if string(head) == framedMagic {
		br.Discard(len(framedMagic))
		l.serve(c, br)
		return
	}
	select {
	case l.conns <- &bufferedConn{Conn: c, r: br}:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next gRPC connection.
func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes connections not yet routed; framed connections are closed by
// their owner (framedServer.close).
func (l *sniffListener) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		close(l.done)
		for c := range l.sniffing {
			c.Close()
		}
		l.mu.Unlock()
		err = l.Listener.Close()
	})
	return err
}

// wait waits for the accept loop and the connections being routed (after Close).
func (l *sniffListener) wait() { l.wg.Wait() }

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// framedServer tracks the framed connections, so that Close ends them.
type framedServer struct {
	g     *Gateway
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	shut  bool
	wg    sync.WaitGroup // connections and their requests
}

// serve serves one framed connection until it closes or the gateway does.
func (s *framedServer) serve(c net.Conn, br *bufio.Reader) {
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	fc := &framedConn{s: s, c: c, kick: make(chan struct{}, 1), room: make(chan struct{}, 1)}
	// ctx is the requests' (their spans' parent). Requests in a batch when the connection closes
	// are answered to nobody: their keys are wiped as they come.
	ctx, cancel := context.WithCancel(context.Background())
	stop, writerDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(writerDone); fc.writer(stop) }()
	err := fc.read(ctx, br)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		s.g.log.Debug("framed connection closed", "err", err)
	}
	cancel()
	fc.mu.Lock()
	fc.closed = true
	fc.mu.Unlock()
	close(stop)
	<-writerDone
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// close closes every framed connection and waits for their requests.
func (s *framedServer) close() {
	s.mu.Lock()
	s.shut = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

type framedConn struct {
	s *framedServer
	c net.Conn

	mu      sync.Mutex
	out     []byte        // answers not yet written
	outN    int           // how many answers out holds
	pending int           // requests read whose answers are not yet written (framedMaxPending)
	broken  bool          // a write failed: nothing more is written
	closed  bool          // the connection is done: answers still coming are wiped and dropped
	kick    chan struct{} // 1-buffered: out has something
	room    chan struct{} // 1-buffered: answers were written (or dropped), pending went down

	// wmu serializes writes to c: the writer goroutine's, and the reader's own when it writes the
	// answers it gave at once (writeOut). spare is the buffer the last write used, reused for the
	// next answers.
	wmu   sync.Mutex
	spare []byte
}

// written counts n answers as written (or dropped) and wakes a reader waiting for room.
func (fc *framedConn) written(n int) {
	fc.mu.Lock()
	fc.pending -= n
	fc.mu.Unlock()
	select {
	case fc.room <- struct{}{}:
	default:
	}
}

// full says whether framedMaxPending requests of the connection are unanswered.
func (fc *framedConn) full() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.pending >= fc.s.g.framedMaxPending
}

// waitRoom counts one more request read, first waiting while framedMaxPending requests of the
// connection are unanswered. It fails once the connection can write no more.
func (fc *framedConn) waitRoom() error {
	for {
		fc.mu.Lock()
		if fc.broken {
			fc.mu.Unlock()
			return net.ErrClosed
		}
		if fc.pending < fc.s.g.framedMaxPending {
			fc.pending++
			fc.mu.Unlock()
			return nil
		}
		fc.mu.Unlock()
		<-fc.room
	}
}

// read reads requests and hands each to its batcher without a goroutine waiting for it
// (generateDataKeyAsync, unwrapAsync), with the others of the same read: they are submitted
// together once no whole frame is left in the buffer, so that the requests a client wrote at once
// go in one batch and their answers in one write. Measured before, with a worker goroutine per
// request in flight that called GenerateDataKey and waited: the first request of a read went
// alone and the others behind it, and the hand-offs and per-request timers cost the gateway
// about half of its CPU per data key at 16 callers (docs/performance.md).
func (fc *framedConn) read(ctx context.Context, br *bufio.Reader) error {
	g := fc.s.g
	var (
		datakeys []*call[dataKeyReq, dataKeyRes]
		unwraps  []*call[*kv1.UnwrapRequest, *kv1.UnwrapResponse]
	)
	answered := false // answers queued at once (refusals, cache hits), written once per read
	submit := func() {
		if answered {
			// Written here rather than by the writer goroutine: when every answer of a read was
			// given at once (delegated data keys, cache hits, refusals), handing them to another
			// goroutine costs a wake-up, often on the other core, in every round trip.
			fc.writeOut()
			answered = false
		}
		g.datakeys.submit(datakeys)
		g.unwraps.submit(unwraps)
		clear(datakeys)
		clear(unwraps)
		datakeys, unwraps = datakeys[:0], unwraps[:0]
	}
	defer submit() // what was read before the connection failed: answered to nobody, wiped
	var hdr [4]byte
	for {
		if (answered || len(datakeys)+len(unwraps) > 0) && !frameBuffered(br) {
			submit()
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return err
		}
		if fc.full() {
			submit() // what was read must go before the reader waits for its answers
		}
		if err := fc.waitRoom(); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < 9 || n > framedMaxFrame {
			return errFramed
		}
		body := make([]byte, n) // the request's fields are slices of it while it is served
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		id, op := binary.BigEndian.Uint32(body), body[4]
		var deadline time.Time
		if ms := binary.BigEndian.Uint32(body[5:]); ms > 0 {
			deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
		}
		d := framedDecoder{b: body[9:]}
		switch op {
		case framedGenerateDataKey:
			var key wrap.KeyID
			key.Tenant, key.Service, key.Version = string(d.bytes()), string(d.bytes()), d.u32()
			aad := d.bytes()
			answer := fc.answerer(id, "generate-data-key", deadline)
			if d.err != nil {
				answer(nil, nil, wrap.KeyID{}, status.Error(codes.InvalidArgument, d.err.Error()))
				answered = true
				continue
			}
			if c := g.generateDataKeyAsync(ctx, key, aad, fc, answer); c != nil {
				datakeys = append(datakeys, c)
			} else {
				answered = true
			}
		case framedUnwrap:
			blob, aad := d.bytes(), d.bytes()
			answer := fc.answerer(id, "unwrap", deadline)
			if d.err != nil {
				answer(nil, nil, wrap.KeyID{}, status.Error(codes.InvalidArgument, d.err.Error()))
				answered = true
				continue
			}
			c := g.unwrapAsync(ctx, blob, aad, fc, func(pt []byte, used wrap.KeyID, err error) {
				answer(pt, nil, used, err)
			})
			if c != nil {
				unwraps = append(unwraps, c)
			} else {
				answered = true
			}
		default:
			fc.answer(id, nil, nil, wrap.KeyID{}, status.Errorf(codes.Unimplemented,
				"gateway: framed operation %d is not known (1 GenerateDataKey, 2 Unwrap)", op))
			answered = true
		}
	}
}

// frameBuffered tells whether br holds a whole frame, so that reading it will not wait.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < 4 {
		return false
	}
	hdr, _ := br.Peek(4)
	return uint64(binary.BigEndian.Uint32(hdr)) <= uint64(br.Buffered()-4)
}

// answerer returns what answers request id of operation name (for the metrics), which its batch
// calls with the outcome. A request whose timeout passed before is answered DEADLINE_EXCEEDED,
// its key wiped, as GenerateDataKey's and Unwrap's callers get when their context ends first.
func (fc *framedConn) answerer(id uint32, name string, deadline time.Time) func(pt, blob []byte, used wrap.KeyID, err error) {
	return func(pt, blob []byte, used wrap.KeyID, err error) {
		if err == nil && !deadline.IsZero() && time.Now().After(deadline) {
			clear(pt)
			pt, blob, err = nil, nil, status.FromContextError(context.DeadlineExceeded).Err()
		}
		fc.s.g.metrics.request(name, err)
		fc.answer(id, pt, blob, used, err)
	}
}

// answer queues the answer to request id (the writer sends it once flushed), and wipes pt: the
// queued answer holds the only copy. An answer to a connection that is closing is dropped.
func (fc *framedConn) answer(id uint32, pt, blob []byte, used wrap.KeyID, err error) {
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = transport.ToStatus(err)
		}
	}
	fc.mu.Lock()
	if fc.closed || fc.broken {
		fc.mu.Unlock()
		clear(pt)
		fc.written(1)
		return
	}
	start := len(fc.out)
	var st *status.Status
	need := 4 + 4 + 1 + 4 + len(pt) + 4 + len(blob) + 4 + len(used.Tenant) + 4 + len(used.Service) + 4
	if err != nil {
		st = status.Convert(err)
		need = 4 + 4 + 1 + 4 + len(st.Message())
	}
	if cap(fc.out)-start < need {
		// Grown here rather than by append, so that the old buffer, which holds the data keys of
		// answers not yet written, is wiped.
		grown := make([]byte, start, 2*cap(fc.out)+need)
		copy(grown, fc.out)
		clear(fc.out)
		fc.out = grown
	}
	fc.out = append(fc.out, 0, 0, 0, 0)
	fc.out = binary.BigEndian.AppendUint32(fc.out, id)
	if err != nil {
		fc.out = append(fc.out, byte(st.Code()))
		fc.out = appendBytes(fc.out, []byte(st.Message()))
	} else {
		fc.out = append(fc.out, 0)
		fc.out = appendBytes(fc.out, pt)
		fc.out = appendBytes(fc.out, blob)
		fc.out = appendBytes(fc.out, []byte(used.Tenant))
		fc.out = appendBytes(fc.out, []byte(used.Service))
		fc.out = binary.BigEndian.AppendUint32(fc.out, used.Version)
	}
	binary.BigEndian.PutUint32(fc.out[start:], uint32(len(fc.out)-start-4))
	fc.outN++
	fc.mu.Unlock()
	clear(pt)
}

// flush wakes the writer for the answers queued.
func (fc *framedConn) flush() {
	select {
	case fc.kick <- struct{}{}:
	default:
	}
}

// writeOut writes the answers queued, as many as have queued, in one write. Once a write has
// failed it writes nothing more: what is queued is wiped and counted as dropped, and the
// connection is closed so that the reader stops.
func (fc *framedConn) writeOut() {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.mu.Lock()
	buf, n, broken := fc.out, fc.outN, fc.broken
	fc.out, fc.outN = fc.spare[:0], 0
	fc.mu.Unlock()
	fc.spare = buf
	if n == 0 {
		return
	}
	if !broken {
		if _, err := fc.c.Write(buf); err != nil {
			fc.mu.Lock()
			fc.broken = true
			fc.mu.Unlock()
			fc.c.Close() // the reader then stops; answers still coming are dropped
		}
	}
	clear(buf) // answers hold data keys
	fc.written(n)
}

// writer writes the answers that batches give (call.notify kicks it once a batch's answers are
// all queued, so that one write carries them together) until stop is closed, after the last
// request was answered, and then once more.
func (fc *framedConn) writer(stop chan struct{}) {
	for {
		select {
		case <-fc.kick:
			fc.writeOut()
		case <-stop:
			fc.writeOut()
			return
		}
	}
}

func appendBytes(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// framedDecoder reads a frame's fields; the first error sticks.
type framedDecoder struct {
	b   []byte
	err error
}

func (d *framedDecoder) u32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.err = errFramedShort
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *framedDecoder) bytes() []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if uint32(len(d.b)) < n {
		d.err = errFramedShort
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

var errFramedShort = errors.New("gateway: framed request too short for its fields")

// FramedClient calls a gateway's Unix socket in the framed protocol (see framedMagic): a local
// application's cheapest way to the gateway. It is safe for concurrent use; calls in flight share
// the one connection.
type FramedClient struct {
	c    net.Conn
	done chan struct{} // closed when the reader has stopped

	mu      sync.Mutex
	next    uint32
	waiting map[uint32]*framedCall
	out     []byte         // requests not yet written
	writing bool           // a caller is writing out (see send); spare is its
	spare   []byte         // the buffer of the last write, reused for the next requests
	wdl     time.Time      // the write deadline set on c (by the one writing); zero: none
	wg      sync.WaitGroup // finishWrite
	err     error          // set when the connection failed: every later call gets it
}

type framedCall struct {
	done chan struct{}
	body []byte // the answer after id
}

var framedCalls = sync.Pool{New: func() any { return &framedCall{done: make(chan struct{}, 1)} }}

// DialFramed connects to the gateway's Unix socket at path in the framed protocol.
func DialFramed(ctx context.Context, path string) (*FramedClient, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("gateway: dial %s: %w", path, err)
	}
	c = rawio.Wrap(c)
	if _, err := c.Write([]byte(framedMagic)); err != nil {
		c.Close()
		return nil, fmt.Errorf("gateway: dial %s: %w", path, err)
	}
	fc := &FramedClient{c: c, done: make(chan struct{}), waiting: map[uint32]*framedCall{}}
	go fc.reader()
	return fc, nil
}

// Close closes the connection; calls in flight fail.
func (fc *FramedClient) Close() error {
	err := fc.c.Close()
	<-fc.done
	fc.wg.Wait()
	return err
}

func (fc *FramedClient) reader() {
	defer close(fc.done)
	br := bufio.NewReaderSize(fc.c, 32<<10)
	var hdr [4]byte
	var err error
	for {
		if _, err = io.ReadFull(br, hdr[:]); err != nil {
			break
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < 5 || n > framedMaxFrame {
			err = errFramed
			break
		}
		body := make([]byte, n)
		if _, err = io.ReadFull(br, body); err != nil {
			break
		}
		id := binary.BigEndian.Uint32(body)
		fc.mu.Lock()
		call := fc.waiting[id]
		delete(fc.waiting, id)
		fc.mu.Unlock()
		if call == nil {
			clear(body) // an answer nobody waits for any more
			continue
		}
		call.body = body[4:]
		call.done <- struct{}{}
	}
	fc.c.Close()
	fc.mu.Lock()
	fc.err = status.Errorf(codes.Unavailable, "gateway: framed connection closed: %v", err)
	for id, call := range fc.waiting {
		delete(fc.waiting, id)
		call.body = nil
		call.done <- struct{}{}
	}
	fc.mu.Unlock()
}

// writeOut is called, with fc.mu held, by a caller that queued a request while no other caller
// was writing: it writes what is queued, and again what others queued during that write, until
// nothing is, and returns with fc.mu unlocked. The caller writes rather than a writer goroutine,
// because handing each write to another goroutine costs a wake-up in every round trip; requests
// that callers queue while a write is under way still go together in the next.
//
// A caller must not be held in a write past its own deadline, nor may its deadline cut other
// callers' requests: a write that has not gone out within framedWriteStall (the gateway is not
// reading) is handed, with the writing, to a goroutine that writes without a deadline
// (finishWrite), and the caller goes back to waiting for its answer or its context.
func (fc *FramedClient) writeOut() {
	fc.writing = true
	// Callers made ready with this one (the reader wakes them by the batch) queue theirs first,
	// so that one write carries them: a write costs more than the request it carries.
	fc.mu.Unlock()
	runtime.Gosched()
	fc.mu.Lock()
	for len(fc.out) > 0 {
		buf := fc.out
		fc.out = fc.spare[:0]
		fc.mu.Unlock()
		// The deadline is moved on only when less than half of the stall is left, so that a
		// write costs a timer update at most once per half stall.
		if now := time.Now(); fc.wdl.Sub(now) < framedWriteStall/2 {
			fc.wdl = now.Add(framedWriteStall)
			fc.c.SetWriteDeadline(fc.wdl)
		}
		n, err := fc.c.Write(buf)
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() {
			fc.wg.Add(1)
			go fc.finishWrite(buf, n)
			return
		}
		if err != nil {
			fc.c.Close() // the reader then fails the calls in flight
		}
		fc.mu.Lock()
		fc.spare = buf
		if err != nil {
			fc.out = fc.out[:0]
			break
		}
	}
	fc.writing = false
	fc.mu.Unlock()
}

// framedWriteStall is how long a caller may spend in a write before it is handed to finishWrite.
const framedWriteStall = 20 * time.Millisecond

// finishWrite writes buf[n:], the rest of a write that stalled, and then what callers queue
// meanwhile, without a deadline, until nothing is queued; then callers write again.
func (fc *FramedClient) finishWrite(buf []byte, n int) {
	defer fc.wg.Done()
	fc.wdl = time.Time{}
	fc.c.SetWriteDeadline(time.Time{})
	_, err := fc.c.Write(buf[n:])
	fc.mu.Lock()
	for {
		fc.spare = buf
		if err != nil {
			fc.c.Close() // the reader then fails the calls in flight
			fc.out = fc.out[:0]
		}
		if len(fc.out) == 0 {
			break
		}
		buf = fc.out
		fc.out = fc.spare[:0]
		fc.mu.Unlock()
		_, err = fc.c.Write(buf)
		fc.mu.Lock()
	}
	fc.writing = false
	fc.mu.Unlock()
}

// do sends a request whose fields are appended by fields, and waits for its answer.
func (fc *FramedClient) do(ctx context.Context, op byte, fields func([]byte) []byte) ([]byte, error) {
	call := framedCalls.Get().(*framedCall)
	var ms uint32
	if dl, ok := ctx.Deadline(); ok {
		ms = uint32(max(time.Until(dl).Milliseconds(), 1))
	}
	if err := ctx.Err(); err != nil {
		framedCalls.Put(call)
		return nil, errOr(nil, err) // not queued: a request no one waits for
	}
	fc.mu.Lock()
	if fc.err != nil {
		err := fc.err
		fc.mu.Unlock()
		framedCalls.Put(call)
		return nil, err
	}
	fc.next++
	id := fc.next
	fc.waiting[id] = call
	start := len(fc.out)
	fc.out = append(fc.out, 0, 0, 0, 0)
	fc.out = binary.BigEndian.AppendUint32(fc.out, id)
	fc.out = append(fc.out, op)
	fc.out = binary.BigEndian.AppendUint32(fc.out, ms)
	fc.out = fields(fc.out)
	binary.BigEndian.PutUint32(fc.out[start:], uint32(len(fc.out)-start-4))
	if fc.writing {
		fc.mu.Unlock() // the caller writing takes this one too
	} else {
		fc.writeOut()
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		fc.mu.Lock()
		_, still := fc.waiting[id]
		delete(fc.waiting, id)
		fc.mu.Unlock()
		if still {
			framedCalls.Put(call)
			return nil, errOr(nil, ctx.Err())
		}
		<-call.done // answered meanwhile
	}
	body := call.body
	call.body = nil
	framedCalls.Put(call)
	if body == nil {
		fc.mu.Lock()
		err := fc.err
		fc.mu.Unlock()
		return nil, err
	}
	if body[0] != 0 {
		d := framedDecoder{b: body[1:]}
		return nil, status.Error(codes.Code(body[0]), string(d.bytes()))
	}
	return body[1:], nil
}

// GenerateDataKey is the gateway's GenerateDataKey over the framed protocol.
func (fc *FramedClient) GenerateDataKey(ctx context.Context, key wrap.KeyID, context []byte) (plaintext, blob []byte, used wrap.KeyID, err error) {
	body, err := fc.do(ctx, framedGenerateDataKey, func(b []byte) []byte {
		b = appendBytes(b, []byte(key.Tenant))
		b = appendBytes(b, []byte(key.Service))
		b = binary.BigEndian.AppendUint32(b, key.Version)
		return appendBytes(b, context)
	})
	if err != nil {
		return nil, nil, wrap.KeyID{}, err
	}
	return decodeFramedAnswer(body)
}

// Unwrap is the gateway's Unwrap over the framed protocol.
func (fc *FramedClient) Unwrap(ctx context.Context, blob, context []byte) (plaintext []byte, used wrap.KeyID, err error) {
	body, err := fc.do(ctx, framedUnwrap, func(b []byte) []byte {
		return appendBytes(appendBytes(b, blob), context)
	})
	if err != nil {
		return nil, wrap.KeyID{}, err
	}
	plaintext, _, used, err = decodeFramedAnswer(body)
	return plaintext, used, err
}

func decodeFramedAnswer(body []byte) (plaintext, blob []byte, used wrap.KeyID, err error) {
	d := framedDecoder{b: body}
	plaintext, blob = d.bytes(), d.bytes()
	used.Tenant, used.Service = string(d.bytes()), string(d.bytes())
	used.Version = d.u32()
	if d.err != nil {
		clear(body)
		return nil, nil, wrap.KeyID{}, status.Error(codes.Internal, d.err.Error())
	}
	if len(blob) == 0 {
		blob = nil
	}
	return plaintext, blob, used, nil
}
