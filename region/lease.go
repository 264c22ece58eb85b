package region

import (
	"sync/atomic"
	"time"
)

// lease is this node's serving lease (see DESIGN.md, "Serving leases"). It is read on every wrap,
// so it is lock-free: the deadline is kept as nanoseconds on the process's monotonic clock, which
// wall-clock jumps cannot move. A lease is only ever extended once the node has applied the log up
// to the commit index its grant carries (leaseLoop), so holding one means being current.
type lease struct {
	epoch time.Time    // process start; the origin of the monotonic readings below
	until atomic.Int64 // nanoseconds since epoch when the lease runs out; 0 = no lease
	term  atomic.Uint64
}

func newLease() *lease { return &lease{epoch: time.Now()} }

// now reads the monotonic clock as nanoseconds since epoch.
func (l *lease) now() int64 { return int64(time.Since(l.epoch)) }

// grant extends the lease to sentAt+d, where sentAt is when the renewal request was sent (a
// monotonic reading from now()), so that network delay only ever shortens a lease. A grant never
// shortens a lease already held.
func (l *lease) grant(sentAt int64, d time.Duration, term uint64) {
	until := sentAt + int64(d)
	for {
		t := l.term.Load()
		if term <= t || l.term.CompareAndSwap(t, term) {
			break
		}
	}
	for {
		cur := l.until.Load()
		if until <= cur || l.until.CompareAndSwap(cur, until) {
			return
		}
	}
}

// drop ends the lease at once: on shutdown, or when the node learns it may be stale.
func (l *lease) drop() { l.until.Store(0) }

// check reports whether the node may serve now.
func (l *lease) check() error {
	if unsafeServeWithoutLease {
		return nil
	}
	until := l.until.Load()
	if until == 0 || l.now() >= until {
		return ErrNoLease
	}
	return nil
}

// expiresIn is how long the lease has left; zero or negative when there is none.
func (l *lease) expiresIn() time.Duration {
	until := l.until.Load()
	if until == 0 {
		return 0
	}
	return time.Duration(until - l.now())
}
