package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawIO reads and writes a socket with raw system calls. The net package's Read and Write enter
// the system call through the scheduler (entersyscall), and when the process was idle just
// before, as it is between the bursts of a closed-loop client, that entry wakes the runtime's
// monitor thread (sysmon) from its long sleep: a futex wake and context switches in every round
// trip (golang/go#18236). Measured on the 2-core development machine with perf, the monitor's
// wake-ups and the entries that woke it were about a fifth of the gateway's CPU at 16 callers on
// its framed socket, and raw calls cut a node's CPU per unary wrap by 9–13 % (docs/performance.md,
// "The framed socket without the runtime's monitor wake-ups").
//
// The socket is non-blocking (net opens it so), so a read or write returns at once, with what
// the socket's buffers hold or have room for. The thread can still sleep in the kernel for a
// moment: a page fault on the buffer, the socket's lock held by the other direction's call,
// memory reclaim when socket buffers are charged to a memory cgroup under pressure (which a
// remote peer can add to with unread data, within the servers' pre-authentication limits). For
// that time its P is neither handed off to another thread nor stoppable for the collector, as
// for any code that runs without a system call; through the net package, the monitor would hand
// the P off after 20 µs. Bounded by the kernel's own stalls, which slow the whole process alike.
// The socket stays in the net package's poller, which waits when there is nothing to read or no
// room to write (RawConn.Read, RawConn.Write), and keeps the deadlines, Close and the read and
// write locks. Race-detector builds make the same calls through syscall.Read and syscall.Write
// (race_linux.go), which tell the detector what the kernel read and wrote.
type rawIO struct {
	net.Conn
	rc syscall.RawConn

	// The state of the Read and the Write under way, kept here with the callbacks bound once, so
	// that a call allocates nothing; rmu and wmu serialize Reads and Writes (as the fd's own
	// locks do, but from before the state is set).
	rmu, wmu       sync.Mutex
	rbuf, wbuf     []byte
	rn, wn         int
	rerrno, werrno syscall.Errno
	readFn         func(fd uintptr) bool
	writeFn        func(fd uintptr) bool
}

// Wrap returns c, a *net.TCPConn or *net.UnixConn, reading and writing with raw system calls;
// any other connection it returns as it is: a type that embeds one of those and reads otherwise
// (TLS, a connection that peeked at its first bytes) must not have its socket read under it, the
// hazard gRPC's own readyreader guards against the same way. The result has net.Conn's methods
// only (not CloseWrite, SyscallConn or File).
func Wrap(c net.Conn) net.Conn {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawIO{Conn: c, rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	return r
}

// read is RawConn.Read's callback: false asks the poller to wait for something to read.
func (r *rawIO) read(fd uintptr) bool {
	if len(r.rbuf) == 0 {
		return true // a zero-length read: only the checks of closed and deadline
	}
	for {
		n, e := sysRead(int(fd), r.rbuf)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.rn, r.rerrno = n, e
		return true
	}
}

// write is RawConn.Write's callback: it writes all of wbuf, or asks the poller (false) to wait
// for room.
func (r *rawIO) write(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		n, e := sysWrite(int(fd), r.wbuf[r.wn:])
		switch {
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			return false
		case e != 0:
			r.werrno = e
			return true
		case n <= 0 || n > len(r.wbuf)-r.wn: // not a socket's answer; net fails it the same way
			r.werrno = unix.EIO
			return true
		default:
			r.wn += n
		}
	}
	return true
}

func (r *rawIO) Read(p []byte) (int, error) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	err := r.fail("read", r.rc.Read(r.readFn), r.rerrno)
	n := r.rn
	r.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) Write(p []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.wbuf, r.wn, r.werrno = p, 0, 0
	err := r.fail("write", r.rc.Write(r.writeFn), r.werrno)
	r.wbuf = nil
	return r.wn, err
}

// fail is the error net.Conn gives for a call whose RawConn call ended in err (closed, or the
// deadline passed; its own net.OpError is unwrapped) or whose system call failed with errno; nil
// if neither.
func (r *rawIO) fail(op string, err error, errno syscall.Errno) error {
	var oe *net.OpError
	switch {
	case err != nil && errors.As(err, &oe):
		err = oe.Err
	case err != nil:
	case errno != 0:
		err = os.NewSyscallError(op, errno)
	default:
		return nil
	}
	return &net.OpError{Op: op, Net: r.LocalAddr().Network(), Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
}

// Listener returns l with every connection it accepts wrapped (Wrap).
func Listener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Wrapped tells whether c reads and writes with raw system calls (for tests).
func Wrapped(c net.Conn) bool {
	_, ok := c.(*rawIO)
	return ok
}
