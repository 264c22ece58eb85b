package gateway

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawIO reads and writes a Unix socket with raw system calls, for the framed protocol's
// connections. The net package's Read and Write enter the system call through the scheduler
// (entersyscall), and when the process was idle just before, as it is between the bursts of a
// closed-loop client, that entry wakes the runtime's monitor thread (sysmon) from its long sleep:
// a futex wake and a context switch in every round trip (golang/go#18236). Measured on the 2-core
// development machine with perf, the monitor's wake-ups and the entries that woke it were about a
// fifth of the gateway's CPU at 16 callers (docs/performance.md, "The framed socket's round trip").
// A read or write of a non-blocking socket never blocks, so telling the scheduler is not needed:
// the socket stays in the net package's poller, which waits when there is nothing to read or no
// room to write (RawConn.Read, RawConn.Write) and keeps the deadlines and Close.
type rawIO struct {
	net.Conn
	rc syscall.RawConn
}

// newRawIO returns c reading and writing with raw system calls, or c itself if it has no
// file descriptor to call them on.
func newRawIO(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawIO{Conn: c, rc: rc}
}

func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // nothing yet: the poller waits for more
			}
			n, errno = int(m), e
			return true
		}
	})
	switch {
	case err != nil: // closed, or the deadline passed
		return 0, &net.OpError{Op: "read", Net: "unix", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "unix", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) Write(p []byte) (int, error) {
	var (
		n     int
		errno syscall.Errno
	)
	err := r.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
			switch e {
			case 0:
				n += int(m)
			case unix.EINTR:
			case unix.EAGAIN:
				return false // the socket's buffer is full: the poller waits for room
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return n, &net.OpError{Op: "write", Net: "unix", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
	case errno != 0:
		return n, &net.OpError{Op: "write", Net: "unix", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: os.NewSyscallError("write", errno)}
	}
	return n, nil
}
