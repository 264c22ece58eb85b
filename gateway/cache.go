package gateway

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/kryptonkms/krypton/wrap"
)

// cache holds unwrapped data keys, as the AWS Encryption SDK's caching materials manager does, so
// that repeated Decrypts of data under one data key do not each cost a region round trip. It is
// off unless Config.CacheEntries > 0, and bounded by count (CacheEntries), bytes (CacheBytes: each
// entry counts its blob, context and key) and age (CacheTTL); the least recently used entry goes
// first.
//
// The keys live in one memguard buffer (mlocked, guard pages, wiped on Destroy) cut into 32-byte
// slots: one LockedBuffer per key would cost three pages of locked memory and tens of
// microseconds each (wrap/DESIGN.md, "Where secrets live, honestly"). The arena is counted in the
// process's locked-memory budget (wrap.NewLockedBuffer): a gateway whose arena does not fit in
// RLIMIT_MEMLOCK refuses to start rather than let memguard's failed mlock purge every buffer.
//
// Revocation. An entry is served only while:
//   - the gateway holds a fresh cache lease from a region node (watcher.leaseValid), and
//   - no key event or snapshot from the region says its key is unusable (denied).
//
// Events wipe the entries they concern before the gateway acknowledges them, and bump epoch: a
// region answer to an unwrap sent before an event is not cached after it (put checks the epoch
// the request started in), so an answer computed before a revocation applied cannot outlive it.
type cache struct {
	max     int
	maxSize int
	ttl     time.Duration
	valid   func() bool // the watcher's cache lease
	now     func() time.Time
	metrics *metrics

	mu      sync.Mutex // guards everything below
	arena   *wrap.LockedBuffer
	free    []int
	entries map[[32]byte]*list.Element // of *cacheEntry
	lru     *list.List                 // front: most recently used
	size    int
	epoch   uint64
	deny    denySet
	closed  bool
}

type cacheEntry struct {
	hash  [32]byte
	slot  int
	id    wrap.KeyID
	size  int
	added time.Time
}

// denySet holds the scopes the region says are unusable.
type denySet struct {
	tenants  map[string]bool
	services map[[2]string]bool
	versions map[wrap.KeyID]bool
	all      bool
}

func (d *denySet) reset() {
	d.tenants, d.services, d.versions = map[string]bool{}, map[[2]string]bool{}, map[wrap.KeyID]bool{}
	d.all = false
}

func (d *denySet) add(id wrap.KeyID) {
	switch {
	case id.Service == "":
		d.tenants[id.Tenant] = true
	case id.Version == 0:
		d.services[[2]string{id.Tenant, id.Service}] = true
	default:
		d.versions[id] = true
	}
}

func (d *denySet) denies(id wrap.KeyID) bool {
	return d.all || d.tenants[id.Tenant] || d.services[[2]string{id.Tenant, id.Service}] || d.versions[id]
}

// covers says whether scope (a tenant, service or version; empty fields are wildcards) covers id.
func covers(scope, id wrap.KeyID) bool {
	return scope.Tenant == id.Tenant &&
		(scope.Service == "" || scope.Service == id.Service) &&
		(scope.Version == 0 || scope.Version == id.Version)
}

func newCache(cfg Config, valid func() bool, m *metrics) (*cache, error) {
	need := wrap.LockedBytes(cfg.CacheEntries * wrap.KeySize)
	what := fmt.Sprintf("a data key cache of %d entries", cfg.CacheEntries)
	if err := wrap.CheckLockedFit(need, what, "fewer -cache-entries (Config.CacheEntries)"); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	arena, err := wrap.NewLockedBuffer(cfg.CacheEntries * wrap.KeySize)
	if err != nil {
		return nil, fmt.Errorf("gateway: data key cache: %w", err)
	}
	c := &cache{
		max:     cfg.CacheEntries,
		maxSize: cfg.CacheBytes,
		ttl:     cfg.CacheTTL,
		valid:   valid,
		now:     time.Now,
		metrics: m,
		arena:   arena,
		entries: map[[32]byte]*list.Element{},
		lru:     list.New(),
	}
	c.deny.reset()
	c.free = make([]int, cfg.CacheEntries)
	for i := range c.free {
		c.free[i] = cfg.CacheEntries - 1 - i
	}
	return c, nil
}

func cacheKey(blob, context []byte) [32]byte {
	h := sha256.New()
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(blob)))
	h.Write(n[:])
	h.Write(blob)
	h.Write(context)
	return [32]byte(h.Sum(nil))
}

// startEpoch is read before an unwrap is sent to the region; put takes it back.
func (c *cache) startEpoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// get copies the cached key for (blob, context) into dst, if it may be served.
func (c *cache) get(blob, context []byte, dst []byte) (wrap.KeyID, bool) {
	k := cacheKey(blob, context)
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[k]
	if c.closed || el == nil {
		c.metrics.cacheMiss()
		return wrap.KeyID{}, false
	}
	e := el.Value.(*cacheEntry)
	if c.now().Sub(e.added) > c.ttl || c.deny.denies(e.id) {
		c.removeLocked(el)
		c.metrics.cacheEvict("expired")
		c.metrics.cacheMiss()
		return wrap.KeyID{}, false
	}
	if !c.valid() {
		// No fresh word from the region that nothing was revoked: ask the region.
		c.metrics.cacheMiss()
		return wrap.KeyID{}, false
	}
	copy(dst, c.arena.Bytes()[e.slot*wrap.KeySize:][:wrap.KeySize])
	c.lru.MoveToFront(el)
	c.metrics.cacheHit()
	return e.id, true
}

// put caches key for (blob, context) unless an event arrived since epoch or the key is denied.
func (c *cache) put(epoch uint64, id wrap.KeyID, blob, context, key []byte) {
	size := len(blob) + len(context) + len(key)
	k := cacheKey(blob, context)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || epoch != c.epoch || c.deny.denies(id) || size > c.maxSize || len(key) != wrap.KeySize {
		return
	}
	if el := c.entries[k]; el != nil {
		c.lru.MoveToFront(el)
		return
	}
	for len(c.free) == 0 || c.size+size > c.maxSize {
		c.removeLocked(c.lru.Back())
		c.metrics.cacheEvict("capacity")
	}
	slot := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.arena.CopyAt(slot*wrap.KeySize, key)
	e := &cacheEntry{hash: k, slot: slot, id: id, size: size, added: c.now()}
	c.entries[k] = c.lru.PushFront(e)
	c.size += size
	c.metrics.cacheSize(len(c.entries), c.size)
}

func (c *cache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.entries, e.hash)
	clear(c.arena.Bytes()[e.slot*wrap.KeySize:][:wrap.KeySize])
	c.free = append(c.free, e.slot)
	c.size -= e.size
	c.metrics.cacheSize(len(c.entries), c.size)
}

// revoke wipes every entry under scope and denies it from now on.
func (c *cache) revoke(scope wrap.KeyID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.deny.add(scope)
	for el := c.lru.Front(); el != nil; {
		next := el.Next()
		if covers(scope, el.Value.(*cacheEntry).id) {
			c.removeLocked(el)
			c.metrics.cacheEvict("revoked")
		}
		el = next
	}
}

// rotated is a service's new current version: cached keys of the old one stay valid.
func (c *cache) rotated(wrap.KeyID) {}

// reset wipes every entry and replaces the deny set (a new event stream's snapshot, a restored
// region state).
func (c *cache) reset(deny []wrap.KeyID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.wipeLocked("flushed")
	c.deny.reset()
	for _, id := range deny {
		c.deny.add(id)
	}
}

func (c *cache) wipeLocked(reason string) {
	for el := c.lru.Front(); el != nil; el = c.lru.Front() {
		c.removeLocked(el)
		c.metrics.cacheEvict(reason)
	}
}

// len reports the entries held (tests).
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// close wipes and frees the cache; it serves nothing after.
func (c *cache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.wipeLocked("shutdown")
	c.arena.Destroy()
}

// denyAll makes the cache serve nothing until the next reset (a new stream's snapshot).
func (c *cache) denyAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.deny.all = true
}
