package wrap

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"

	"github.com/awnumar/memguard"
	"golang.org/x/sys/unix"
)

// Locked memory is a budget, counted here and only here. Every memguard
// LockedBuffer of the process is made by newLockedBuffer (L2 and L3 keys)
// or NewLockedBuffer (the gateway's cache arena), which first reserves the
// buffer's locked pages against the process's RLIMIT_MEMLOCK less a margin.
//
// Why: memguard v0.23 answers a failed mlock with core.Panic, which
// destroys every LockedBuffer in the process before it panics. Recovering
// is no cure (every key held is gone, and later calls fail on destroyed
// buffers), so an mlock must never be allowed to fail: a buffer that would
// not fit is refused here, before memguard is called. A refusal first asks
// the registered evictors (each node's keyring: AddLockedEvictor) to give
// back a key at a time, and fails with ErrLockedMemory only when nothing is
// left to evict.
//
// The kernel ignores RLIMIT_MEMLOCK for a process with CAP_IPC_LOCK (root,
// usually) and for an infinite limit; the budget is then unbounded.

// ErrLockedMemory is returned when a key (or another locked buffer) does
// not fit in the process's locked-memory budget, even after evicting every
// key the keyrings would give back. The caller may retry later, or the
// operator raises the limit.
var ErrLockedMemory = errors.New("wrap: locked memory exhausted; raise RLIMIT_MEMLOCK (ulimit -l, systemd LimitMEMLOCK=)")

// LockedMargin is the part of RLIMIT_MEMLOCK the budget leaves to locked
// memory it does not count: memguard's own key (the Coffer: three buffers,
// and one more while an Enclave is made or opened), and what a PKCS#11
// module locks for itself (SoftHSM locks its secure heap). 256 KiB is 64
// pages.
const LockedMargin = 256 << 10

var pageSize = int64(os.Getpagesize())

// KeyLockedBytes is the locked memory one L2 or L3 key holds: its buffer
// rounded up to whole pages (memguard locks the pages between its two
// guard pages, which are not locked).
var KeyLockedBytes = LockedBytes(lockedSize)

// LockedBytes returns the locked memory a buffer of size bytes holds.
func LockedBytes(size int) int64 {
	return (int64(size) + pageSize - 1) / pageSize * pageSize
}

// budget is the process's locked-memory account.
var budget = newLockedBudget(readMemlockLimit())

type lockedBudget struct {
	mu       sync.Mutex
	limit    int64 // bytes the budget may hold; math.MaxInt64: unbounded
	rlimit   uint64
	enforced bool
	used     int64

	evictors map[uint64]func() bool
	nextID   uint64
	turn     atomic.Uint64 // which evictor is asked first, in turn
}

// memlockLimit is what the kernel enforces: the soft RLIMIT_MEMLOCK, and
// whether it is enforced at all.
type memlockLimit struct {
	soft     uint64
	enforced bool
}

func readMemlockLimit() memlockLimit {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		// Getrlimit does not fail on Linux; if it did, assume the common
		// unprivileged default rather than no limit.
		return memlockLimit{soft: 8 << 20, enforced: true}
	}
	if rl.Cur == unix.RLIM_INFINITY || hasIPCLock() {
		return memlockLimit{soft: rl.Cur, enforced: false}
	}
	return memlockLimit{soft: rl.Cur, enforced: true}
}

// hasIPCLock reports whether the process holds CAP_IPC_LOCK in its
// effective set, with which mlock ignores RLIMIT_MEMLOCK.
func hasIPCLock() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	const bit = unix.CAP_IPC_LOCK
	return data[bit/32].Effective&(1<<(bit%32)) != 0
}

func newLockedBudget(l memlockLimit) *lockedBudget {
	b := &lockedBudget{rlimit: l.soft, enforced: l.enforced, limit: math.MaxInt64, evictors: map[uint64]func() bool{}}
	if l.enforced {
		b.limit = max(int64(min(l.soft, math.MaxInt64/2))-LockedMargin, 0)
	}
	return b
}

// LockedMemory reports the locked memory the budget holds now (used), the
// process's soft RLIMIT_MEMLOCK (limit), and whether the kernel enforces it
// (false with CAP_IPC_LOCK or an infinite limit: the budget is then
// unbounded).
func LockedMemory() (used int64, limit uint64, enforced bool) {
	budget.mu.Lock()
	defer budget.mu.Unlock()
	return budget.used, budget.rlimit, budget.enforced
}

// CheckLockedFit returns nil if need more bytes of locked memory fit in the
// budget beside what is locked now, and otherwise an error that names the
// limit and the fixes. what names the consumer (e.g. "a keyring of 512 L2
// and 512 L3 keys"); fix names its own knob (e.g. "a smaller
// -keyring-size").
func CheckLockedFit(need int64, what, fix string) error {
	return budget.checkFit(need, what, fix)
}

func (b *lockedBudget) checkFit(need int64, what, fix string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if need <= b.limit-b.used {
		return nil
	}
	return fmt.Errorf("locked memory: %s needs %d KiB, but RLIMIT_MEMLOCK is %d KiB, of which %d KiB "+
		"are in use and %d KiB kept for memguard and PKCS#11 modules; raise the limit (ulimit -l, "+
		"systemd LimitMEMLOCK=, docker --ulimit memlock=) or use %s",
		what, need>>10, b.rlimit>>10, b.used>>10, LockedMargin>>10, fix)
}

// LockedKeysThatFit returns how many more L2/L3 keys fit in the budget
// beside what is locked now (math.MaxInt when it is unbounded).
func LockedKeysThatFit() int {
	budget.mu.Lock()
	defer budget.mu.Unlock()
	if !budget.enforced {
		return math.MaxInt
	}
	return int(max(budget.limit-budget.used, 0) / KeyLockedBytes)
}

// AddLockedEvictor registers evict, which the budget calls when a locked
// buffer does not fit: it should destroy one key it holds (least recently
// used first) and report whether it did. It must not allocate locked memory
// and is called with no lock of the budget held. The returned function
// unregisters it.
func AddLockedEvictor(evict func() bool) (remove func()) {
	return budget.addEvictor(evict)
}

func (b *lockedBudget) addEvictor(evict func() bool) func() {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.nextID
	b.nextID++
	b.evictors[id] = evict
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.evictors, id)
	}
}

// reserve accounts n more bytes, evicting keys until they fit, or returns
// ErrLockedMemory.
func (b *lockedBudget) reserve(n int64) error {
	for {
		b.mu.Lock()
		if n <= b.limit-b.used {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		evictors := make([]func() bool, 0, len(b.evictors))
		for _, e := range b.evictors {
			evictors = append(evictors, e)
		}
		b.mu.Unlock()
		if !b.evictOne(evictors) {
			return ErrLockedMemory
		}
	}
}

// evictOne asks the evictors in turn, starting at a rotating one so that
// no keyring alone pays for the others, until one gives a key back.
func (b *lockedBudget) evictOne(evictors []func() bool) bool {
	if len(evictors) == 0 {
		return false
	}
	start := int(b.turn.Add(1) % uint64(len(evictors)))
	for i := range evictors {
		if evictors[(start+i)%len(evictors)]() {
			return true
		}
	}
	return false
}

func (b *lockedBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

// LockedBuffer is a memguard LockedBuffer counted in the budget. Destroy
// (idempotent) wipes it and gives its pages back.
type LockedBuffer struct {
	*memguard.LockedBuffer
	budget *lockedBudget
	n      int64
	done   atomic.Bool
}

// NewLockedBuffer returns a locked buffer of size bytes, or
// ErrLockedMemory if it does not fit in the budget even after evicting
// keys. It is for locked memory outside the key types (the gateway's cache
// arena); the caller must Destroy it.
func NewLockedBuffer(size int) (*LockedBuffer, error) { return budget.newBuffer(size) }

func newLockedBuffer(size int) (*LockedBuffer, error) { return budget.newBuffer(size) }

func (b *lockedBudget) newBuffer(size int) (*LockedBuffer, error) {
	if size < 1 {
		return nil, fmt.Errorf("wrap: locked buffer of %d bytes", size)
	}
	n := LockedBytes(size)
	if err := b.reserve(n); err != nil {
		return nil, err
	}
	return &LockedBuffer{LockedBuffer: memguard.NewBuffer(size), budget: b, n: n}, nil
}

// Destroy wipes the buffer, unlocks and unmaps it, and gives its pages back
// to the budget.
func (l *LockedBuffer) Destroy() {
	if l == nil || !l.done.CompareAndSwap(false, true) {
		return
	}
	l.LockedBuffer.Destroy()
	l.budget.release(l.n)
}
