package region

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/kryptonkms/krypton/wrap"
)

// DefaultKeyringSize is the keyring a node sizes for itself (keys of each kind) when nothing bounds
// its locked memory (CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK) and Config.KeyringSize is unset:
// the largest it would pick under a limit. The keyring grows only as keys are used, so a small
// working set locks no more for it; a working set of 10,000 keys drawn Zipf (s=1.1) finds ~98 % of
// its calls' keys open in 8192 where 512 thrashed through opens (docs/performance.md, "Keys at
// scale"). Under a limit the node takes three quarters of what fits (keyringBudgetShare), at least
// MinKeyringSize and at most MaxAutoKeyringSize.
const DefaultKeyringSize = MaxAutoKeyringSize

// MaxAutoKeyringSize caps the size a node picks from RLIMIT_MEMLOCK (keys of each kind).
const MaxAutoKeyringSize = 8192

// keyringBudgetShare is the part of the free locked-memory budget an unconfigured keyring takes; the
// rest is headroom for writes, hand-offs and the feed's keys, which lock pages outside the keyring.
const keyringBudgetShare = 0.75

// MinKeyringSize is the smallest keyring a node sizes for itself from RLIMIT_MEMLOCK: below it a
// node would spend its time reopening keys, so it refuses to start instead.
const MinKeyringSize = 16

// keyringSize returns the size of a node's keyring (keys of each kind) from the configured size and
// the process's locked-memory budget (wrap/locked.go; DESIGN.md, "Locked memory"). A configured
// size must fit beside what the process has locked already, or the node refuses to start with an
// error that names the fixes; with none configured the node takes autoKeyringSize.
func keyringSize(configured int) (int, error) {
	size := configured
	if size <= 0 {
		size = autoKeyringSize(wrap.LockedKeysThatFit())
	}
	need := 2 * int64(size) * wrap.KeyLockedBytes
	what := fmt.Sprintf("a keyring of %d L2 and %d L3 keys", size, size)
	if err := wrap.CheckLockedFit(need, what, "a smaller -keyring-size (Config.KeyringSize)"); err != nil {
		return 0, fmt.Errorf("region: %w", err)
	}
	return size, nil
}

// autoKeyringSize is the keyring (keys of each kind) for fit keys free in the locked-memory budget
// (math.MaxInt: unbounded): three quarters of it shared by L2 and L3, within
// [MinKeyringSize, MaxAutoKeyringSize]; DefaultKeyringSize when unbounded. With the 8 MiB an
// unprivileged process gets, that is 744 of each kind.
func autoKeyringSize(fit int) int {
	if fit == math.MaxInt {
		return DefaultKeyringSize
	}
	return min(MaxAutoKeyringSize, max(int(float64(fit)*keyringBudgetShare)/2, MinKeyringSize))
}

// keyring holds the unsealed keys of one node: each tenant's L2 versions and the L3 versions opened
// under them. It lives in RAM only; the key types keep their bytes in memguard (see wrap/DESIGN.md)
// and every key taken out of the keyring is destroyed exactly once, by the keyring.
//
// The keyring is a cache, not the authority: whether a key may be used is decided by the state
// machine on every call (fsm's Usable). Wiping on revocation is hygiene — the bytes of a key that
// will never be used again should not stay in memory — and makes a lookup miss, so a racing call
// that slipped past the state check fails rather than using a wiped key.
//
// It is bounded: a region of 100,000 tenants cannot hold every key open (each costs locked
// memory, which the kernel limits). When a kind is full, putting a key evicts and destroys one that
// was not looked up since the last eviction passed it (the CLOCK, or second-chance, approximation
// of least recently used: a lookup only sets a flag under the read lock, where true LRU would need
// the write lock on every call). A key put starts unflagged, so a burst of keys opened once
// (a batch naming many services, say) evicts among themselves, not the keys in steady use. An evicted L3 is opened again from its sealed blob on its next use
// (~0.1 ms); an evicted L2 is fetched from the leader, or unsealed through the anchor on the leader.
// A call pins the key it uses (acquire ... release) and eviction passes pinned keys by, so a cold
// key costs a call latency, never an error: with every key pinned the bound is overrun (by at most
// the calls in flight) rather than a key in use destroyed. Wipes (revocation, shutdown, restore)
// destroy pinned keys too: a call whose key was wiped gets wrap.ErrDestroyed and looks the key up
// once more through the state check (wrapsvc.go), which refuses a revoked key.
//
// Locked memory is also a budget of the whole process (wrap/locked.go): when a new key does not fit
// in RLIMIT_MEMLOCK, the budget asks every keyring for a key back (evictOne) before it refuses the
// allocation with wrap.ErrLockedMemory (Unavailable), so a full process sheds its least recently
// used keys instead of failing, and never lets memguard purge every key.
type keyring struct {
	mu      sync.RWMutex // guards the maps below, not the keys (each key has its own lock)
	tenants bounded[tenantVersion, *wrap.TenantKey]
	svc     bounded[wrap.KeyID, *wrap.ServiceKey]

	pressure    atomic.Uint64 // keys given back to the locked-memory budget
	tenantOpens atomic.Uint64 // L2 versions unsealed or fetched into the keyring
	svcOpens    atomic.Uint64 // L3 versions opened from their sealed blobs into the keyring
	warmed      atomic.Uint64 // L3 versions opened by the warm-up (warmup.go), before a call asked
	stopEvictor func()
}

// tenantVersion names an L2 version.
type tenantVersion struct {
	tenant  string
	version uint32
}

// bounded is one kind of key, at most max of them. Its map is guarded by the keyring's mu.
type bounded[K comparable, V interface{ Destroy() }] struct {
	m         map[K]*held[V]
	max       int
	evictions atomic.Uint64
}

type held[V any] struct {
	key  V
	used atomic.Bool  // looked up since the last eviction sweep passed it
	pins atomic.Int32 // calls using the key now: eviction passes it by (wipes do not)
	// unpin is release, bound once when the entry is made: handing out the method value h.release
	// allocated a closure on every call that pinned the key (one of a unary wrap's allocations).
	unpin func()
}

// release unpins a key taken with acquire or putPinned. It touches only the entry, which may have
// left the map meanwhile (a wipe), so it needs no lock.
func (h *held[V]) release() { h.pins.Add(-1) }

func newBounded[K comparable, V interface{ Destroy() }](max int) bounded[K, V] {
	return bounded[K, V]{m: make(map[K]*held[V]), max: max}
}

// get returns the key for k (the zero V if none); the caller holds mu for reading.
func (b *bounded[K, V]) get(k K) (v V) {
	h := b.m[k]
	if h == nil {
		return v
	}
	if !h.used.Load() { // a store only when the flag changes: no shared cache line written per call
		h.used.Store(true)
	}
	return h.key
}

// acquire returns the entry for k pinned (nil if none); the caller holds mu for reading and
// calls release when done with the key. An entry pinned under the read lock cannot be evicted
// before release: eviction runs under the write lock and passes pinned entries by.
func (b *bounded[K, V]) acquire(k K) *held[V] {
	h := b.m[k]
	if h == nil {
		return nil
	}
	h.pins.Add(1)
	if !h.used.Load() {
		h.used.Store(true)
	}
	return h
}

// put stores v for k, or destroys v and returns the key already held; the caller holds mu.
func (b *bounded[K, V]) put(k K, v V) V {
	return b.putPinned(k, v, false).key
}

// putPinned is put, returning the entry; with pin it is pinned for the caller (who releases it).
// When every held key is pinned the bound is overrun rather than a key in use destroyed: by at
// most the number of calls in flight, and the next puts evict back down to it.
func (b *bounded[K, V]) putPinned(k K, v V, pin bool) *held[V] {
	h := b.m[k]
	if h != nil {
		v.Destroy()
	} else {
		for len(b.m) >= b.max && b.evict() {
		}
		h = &held[V]{key: v} // not yet used: it earns its second chance by a lookup
		h.unpin = h.release
		b.m[k] = h
	}
	if pin {
		h.pins.Add(1)
	}
	return h
}

// evict destroys one key that was not used since the last sweep passed it and is not pinned,
// clearing the flags of those it passes, and reports whether there was one to destroy. Go's map
// order starts each sweep at a random place; a second sweep finds a key unless every key is
// pinned, since the first cleared every flag (lookups cannot run: the caller holds mu; a pin
// released meanwhile only makes a key evictable).
func (b *bounded[K, V]) evict() bool {
	for range 2 {
		for k, h := range b.m {
			if h.pins.Load() > 0 {
				continue
			}
			if h.used.Load() {
				h.used.Store(false)
				continue
			}
			h.key.Destroy()
			delete(b.m, k)
			b.evictions.Add(1)
			return true
		}
	}
	return false
}

// wipe destroys the keys for which match is true and returns how many.
func (b *bounded[K, V]) wipe(match func(K) bool) int {
	n := 0
	for k, h := range b.m {
		if match(k) {
			h.key.Destroy()
			delete(b.m, k)
			n++
		}
	}
	return n
}

// newKeyring returns a keyring that holds at most size keys of each kind (0: DefaultKeyringSize).
func newKeyring(size int) *keyring {
	if size <= 0 {
		size = DefaultKeyringSize
	}
	r := &keyring{
		tenants: newBounded[tenantVersion, *wrap.TenantKey](size),
		svc:     newBounded[wrap.KeyID, *wrap.ServiceKey](size),
	}
	r.stopEvictor = wrap.AddLockedEvictor(r.evictOne)
	return r
}

// evictOne gives one key back to the locked-memory budget: an L3 not used lately if any is held
// (it reopens from its sealed blob in ~0.1 ms), else an L2 (fetched again from the leader or the
// anchor). It reports whether it destroyed a key.
func (r *keyring) evictOne() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.svc.evict() || r.tenants.evict() {
		r.pressure.Add(1)
		return true
	}
	return false
}

// close wipes every key and stops answering the budget's evictions: the node is shutting down.
func (r *keyring) close() {
	r.stopEvictor()
	r.wipeAll()
}

func (r *keyring) tenantKey(tenant string, version uint32) *wrap.TenantKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tenants.get(tenantVersion{tenant, version})
}

// putTenantKey stores k unless a key for the same version is already held, in which case k is
// destroyed and the held one returned: two nodes' fetches racing must not leak a LockedBuffer.
func (r *keyring) putTenantKey(k *wrap.TenantKey) *wrap.TenantKey {
	id := k.ID()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tenants.put(tenantVersion{id.Tenant, id.Version}, k)
}

// acquireTenantKey returns the L2 version pinned, and its release (nil, nil if not held).
func (r *keyring) acquireTenantKey(tenant string, version uint32) (*wrap.TenantKey, func()) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if h := r.tenants.acquire(tenantVersion{tenant, version}); h != nil {
		return h.key, h.unpin
	}
	return nil, nil
}

// putTenantKeyPinned is putTenantKey, the key returned pinned with its release.
func (r *keyring) putTenantKeyPinned(k *wrap.TenantKey) (*wrap.TenantKey, func()) {
	id := k.ID()
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.tenants.putPinned(tenantVersion{id.Tenant, id.Version}, k, true)
	return h.key, h.unpin
}

// acquireServiceKey returns the L3 version pinned, and its release (nil, nil if not held).
func (r *keyring) acquireServiceKey(id wrap.KeyID) (*wrap.ServiceKey, func()) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if h := r.svc.acquire(id); h != nil {
		return h.key, h.unpin
	}
	return nil, nil
}

// putServiceKeyPinned is putServiceKey, the key returned pinned with its release.
func (r *keyring) putServiceKeyPinned(k *wrap.ServiceKey) (*wrap.ServiceKey, func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.svc.putPinned(k.ID(), k, true)
	return h.key, h.unpin
}

func (r *keyring) serviceKey(id wrap.KeyID) *wrap.ServiceKey {
	r.mu.RLock()
	k := r.svc.get(id)
	r.mu.RUnlock()
	return k
}

// putServiceKey stores k, or destroys it and returns the one already held for its id.
func (r *keyring) putServiceKey(k *wrap.ServiceKey) *wrap.ServiceKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svc.put(k.ID(), k)
}

// wipeTenant destroys every key of a tenant: its L2 versions and all its L3 versions.
func (r *keyring) wipeTenant(tenant string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tenants.wipe(func(k tenantVersion) bool { return k.tenant == tenant }) +
		r.svc.wipe(func(id wrap.KeyID) bool { return id.Tenant == tenant })
}

// wipeService destroys the L3 versions of one service, or of one version when version > 0.
func (r *keyring) wipeService(tenant, service string, version uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svc.wipe(func(id wrap.KeyID) bool {
		return id.Tenant == tenant && id.Service == service && (version == 0 || id.Version == version)
	})
}

// wipeAll destroys every key; used on shutdown and when a restored snapshot replaces the state.
func (r *keyring) wipeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tenants.wipe(func(tenantVersion) bool { return true })
	r.svc.wipe(func(wrap.KeyID) bool { return true })
}

// counts returns the number of L2 and of L3 versions held.
func (r *keyring) counts() (tenantKeys, serviceKeys int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.tenants.m), len(r.svc.m)
}

// size is the number of keys held: L2 and L3 versions together.
func (r *keyring) size() int {
	t, s := r.counts()
	return t + s
}

// evictions returns how many L2 and L3 versions were evicted to keep within the bound.
func (r *keyring) evictions() (tenantKeys, serviceKeys uint64) {
	return r.tenants.evictions.Load(), r.svc.evictions.Load()
}
