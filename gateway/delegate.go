package gateway

import (
	"context"
	"crypto/rand"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// delegates holds the gateway's delegated wrapping keys (region DelegateWrap, wrap.WrapDelegate):
// one per key reference the gateway's callers name (a version 0 reference: the current version
// when the key was delegated). With one, a GenerateDataKey is made and wrapped here, with no
// region round trip: a crypto/rand read and one AES-GCM seal. Without one (none yet, used up,
// expired, or the region hands out none) the request takes the batched region path, so a data key
// never fails for want of a delegate.
//
// Revocation. A delegated key is used only while, exactly as a cached unwrapped key is served
// (cache.go):
//   - the gateway holds a fresh cache lease from a region node (the watcher's), and
//   - no key event or snapshot says its key is unusable, and
//   - its own lifetime (the region's ttl, counted from when the gateway asked) has not run out.
//
// Key events destroy the delegated keys they concern under mu before the watcher acknowledges them
// (the region's fence waits for the acknowledgement), and a Wrap holds mu's read side for its
// whole length, so no data key is wrapped under a key once its revocation has been acknowledged.
// An answer to a DelegateWrap sent before an event is not installed after it (the epoch).
type delegates struct {
	pool    *pool
	valid   func() bool  // the watcher's cache lease
	now     func() int64 // the watcher's clock
	log     *slog.Logger
	metrics *metrics

	mu     sync.RWMutex // guards everything below; a Wrap holds the read side
	held   map[wrap.KeyID]*delegated
	epoch  uint64
	deny   denySet
	floor  map[[2]string]uint32 // by tenant and service: the current version the last rotation event named
	closed bool
	// salts are those of the last maxSalts delegated keys checked: one handed out twice (a
	// region node's broken random source, a replayed answer) would seal under nonces the first
	// already used, with the same key.
	salts    map[[wrap.SaltSize]byte]struct{}
	saltRing [][wrap.SaltSize]byte

	stop chan struct{}
	wg   sync.WaitGroup // fetches in flight
}

// delegated is one delegated key and its state.
type delegated struct {
	d        *wrap.WrapDelegate
	limit    int   // data keys it may wrap (the region's max_items)
	until    int64 // watcher clock: when it may no longer be used
	refresh  int64 // watcher clock: when to fetch its successor
	off      int64 // watcher clock: not asked for again before (the region refused)
	fetching bool  // a fetch for this key reference is in flight
}

// maxDelegated bounds the key references the gateway holds delegated keys for: a caller naming
// ever new services (each refused by the region) must not grow the map without end. The gateway
// acts for one tenant and, almost always, one service.
const maxDelegated = 64

// maxSalts is how many salts of delegated keys the gateway remembers, to refuse one handed out
// again: at one delegated key per 22 s per key reference (three quarters of 30 s), hours' worth.
const maxSalts = 4096

// delegateRetry is how long the gateway waits before asking again after a DelegateWrap failed.
// A region that hands out no delegated keys (an older version: UNIMPLEMENTED, or delegation off:
// FAILED_PRECONDITION) is asked again after delegateOffRetry; a node that has not applied the
// last rotation yet, after delegateLagRetry.
const (
	delegateRetry    = time.Second
	delegateOffRetry = time.Minute
	delegateLagRetry = 20 * time.Millisecond
)

func newDelegates(p *pool, w *watcher, log *slog.Logger, m *metrics) *delegates {
	d := &delegates{pool: p, valid: w.leaseValid, now: w.now, log: log, metrics: m,
		held: map[wrap.KeyID]*delegated{}, floor: map[[2]string]uint32{}, stop: make(chan struct{})}
	d.deny.reset()
	return d
}

// generate makes a data key and wraps it under key's delegated key: ok is false when there is no
// usable one (the caller then takes the region path), and a fetch starts if none is under way.
func (d *delegates) generate(key wrap.KeyID, context []byte) (plaintext, blob []byte, used wrap.KeyID, ok bool) {
	d.mu.RLock()
	h := d.held[key]
	now := d.now()
	usable := h != nil && h.d != nil && !d.closed && now < h.until && !d.deny.denies(h.d.ID()) && d.valid()
	if usable {
		plaintext = make([]byte, wrap.KeySize)
		if _, err := rand.Read(plaintext); err != nil {
			panic("gateway: crypto/rand failed: " + err.Error()) // crypto/rand.Read never fails on Linux
		}
		var err error
		if blob, err = h.d.Wrap(plaintext, context); err != nil {
			// Used up (or a concurrent install destroyed it): the region path, and a fetch.
			clear(plaintext)
			plaintext, usable = nil, false
		} else {
			used = h.d.ID()
		}
	}
	want := !usable || now >= h.refresh || h.d.Remaining() < h.limit/4
	if h != nil && (h.fetching || now < h.off) {
		want = false
	}
	d.mu.RUnlock()
	if want {
		d.fetch(key)
	}
	if usable {
		d.metrics.delegatedKey()
	}
	return plaintext, blob, used, usable
}

// fetch asks the region for a delegated key for key on a goroutine of its own, unless one is
// already being asked for, the gateway is closing, or the region said it hands out none.
func (d *delegates) fetch(key wrap.KeyID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	h := d.held[key]
	if h == nil {
		if !d.roomLocked() {
			return
		}
		h = &delegated{}
		d.held[key] = h
	}
	if h.fetching || d.now() < h.off {
		return
	}
	h.fetching = true
	epoch := d.epoch
	d.wg.Add(1)
	go d.run(key, epoch)
}

// roomLocked makes room for one more key reference if the map is full, by forgetting one that
// holds no delegated key and has no fetch in flight (one the region refused, a caller's mistyped
// version, or one wiped by an event): key references a caller names and the region refuses must
// not keep the gateway's real keys from ever getting a delegated key. false: every entry is in use.
func (d *delegates) roomLocked() bool {
	if len(d.held) < maxDelegated {
		return true
	}
	for k, h := range d.held {
		if h.d == nil && !h.fetching {
			delete(d.held, k)
			return true
		}
	}
	return false
}

// run is one DelegateWrap and the install of its answer.
func (d *delegates) run(key wrap.KeyID, epoch uint64) {
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), d.pool.cfg.RetryBudget)
	defer cancel()
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	sent := d.now()
	var resp *kv1.DelegateWrapResponse
	err := d.pool.call(ctx, "DelegateWrap", func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
		resp, err = c.DelegateWrap(ctx, &kv1.DelegateWrapRequest{Key: keyRef(key)})
		return err
	})
	var wd *wrap.WrapDelegate
	if err == nil {
		wd, err = d.check(key, resp)
		clear(resp.GetDerivedKey())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.held[key]
	h.fetching = false
	if err != nil {
		if wd != nil {
			wd.Destroy()
		}
		switch status.Code(err) {
		case codes.Unimplemented, codes.FailedPrecondition, codes.PermissionDenied, codes.NotFound, codes.InvalidArgument, codes.Internal:
			// The region's word (an older version, delegation off, or this key refused), or an
			// answer check refused (Internal: another key, limits out of range, another suite in
			// FIPS mode), which asking again every second would not change: the region path
			// answers the callers, with the region's own error where there is one. The errors name
			// keys, codes and limits, never key bytes.
			h.off = d.now() + int64(delegateOffRetry)
			d.log.Info("no delegated wrapping key from the region; data keys of this key are wrapped at the region",
				"tenant", key.Tenant, "service", key.Service, "version", key.Version,
				"code", status.Code(err).String(), "err", err, "retry-in", delegateOffRetry)
		default:
			h.off = d.now() + int64(delegateRetry)
		}
		return
	}
	if d.closed || d.epoch != epoch || d.deny.denies(wd.ID()) {
		// A key event came in while the request was out: the answer may predate it.
		wd.Destroy()
		return
	}
	if d.belowFloor(wd.ID()) {
		// A node that has not applied the last rotation yet: ask again shortly.
		wd.Destroy()
		h.off = d.now() + int64(delegateLagRetry)
		return
	}
	ttl := int64(resp.GetTtl().AsDuration())
	if h.d != nil {
		h.d.Destroy()
	}
	h.d, h.limit = wd, int(resp.GetMaxItems())
	h.until, h.refresh = sent+ttl, sent+ttl*3/4
}

// check makes the WrapDelegate of a region's answer for key, refusing an answer for another key
// than the one asked for or with limits out of range.
func (d *delegates) check(key wrap.KeyID, resp *kv1.DelegateWrapResponse) (*wrap.WrapDelegate, error) {
	got := keyID(resp.GetKey())
	if got.Tenant != key.Tenant || got.Service != key.Service || (key.Version != 0 && got.Version != key.Version) {
		return nil, status.Errorf(codes.Internal, "gateway: the region delegated a key of %v for %v", got, key)
	}
	if n := resp.GetMaxItems(); n == 0 || n > wrap.ItemsPerDerivedKey {
		return nil, status.Errorf(codes.Internal, "gateway: the region delegated a key for %d items (at most %d)", n, wrap.ItemsPerDerivedKey)
	}
	if ttl := resp.GetTtl().AsDuration(); ttl <= 0 || ttl > time.Hour {
		return nil, status.Errorf(codes.Internal, "gateway: the region delegated a key for %v", ttl)
	}
	wd, err := wrap.NewWrapDelegate(got, wrap.KDF(resp.GetKdf()), resp.GetSalt(), resp.GetDerivedKey())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "gateway: the region's delegated key: %v", err)
	}
	if !d.newSalt([wrap.SaltSize]byte(resp.GetSalt())) {
		wd.Destroy()
		return nil, status.Error(codes.Internal, "gateway: the region handed out a delegated key of a salt it handed out before; refused (its nonces would repeat)")
	}
	// The region's max_items, not the format's bound: the key seals no more than it was handed
	// out for.
	return wd.Limit(int(resp.GetMaxItems())), nil
}

// newSalt records salt and reports whether it is not among the last maxSalts recorded.
func (d *delegates) newSalt(salt [wrap.SaltSize]byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.salts == nil {
		d.salts = map[[wrap.SaltSize]byte]struct{}{}
	}
	if _, seen := d.salts[salt]; seen {
		return false
	}
	if len(d.saltRing) >= maxSalts {
		delete(d.salts, d.saltRing[0])
		d.saltRing = d.saltRing[1:]
	}
	d.salts[salt] = struct{}{}
	d.saltRing = append(d.saltRing, salt)
	return true
}

// wipeLocked destroys the delegated keys that scope covers (every one for an empty scope).
func (d *delegates) wipeLocked(scope wrap.KeyID, all bool) {
	for k, h := range d.held {
		if h.d != nil && (all || covers(scope, h.d.ID()) || covers(scope, k)) {
			h.d.Destroy()
			h.d, h.until = nil, 0
		}
	}
}

// revoke destroys every delegated key under scope and denies it from now on (a key event).
func (d *delegates) revoke(scope wrap.KeyID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.epoch++
	d.deny.add(scope)
	d.wipeLocked(scope, false)
}

// rotated is scope.Version becoming its service's current version: the delegated keys of older
// versions are destroyed, and none is taken any more (an answer from a node that has not applied
// the rotation yet is refused, and asked again shortly), since the region wraps under the current
// version only. Nothing is denied.
func (d *delegates) rotated(scope wrap.KeyID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	svc := [2]string{scope.Tenant, scope.Service}
	if scope.Version <= d.floor[svc] {
		return
	}
	d.floor[svc] = scope.Version
	for _, h := range d.held {
		if h.d != nil && h.d.ID().Tenant == scope.Tenant && h.d.ID().Service == scope.Service && h.d.ID().Version < scope.Version {
			h.d.Destroy()
			h.d, h.until = nil, 0
		}
	}
}

// belowFloor says whether id is a version older than its service's current one, as the last
// rotation event said. Run under mu.
func (d *delegates) belowFloor(id wrap.KeyID) bool {
	return id.Version < d.floor[[2]string{id.Tenant, id.Service}]
}

// reset destroys every delegated key and replaces the deny set (a new stream's snapshot, a
// restored region state).
func (d *delegates) reset(deny []wrap.KeyID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.epoch++
	d.wipeLocked(wrap.KeyID{}, true)
	d.deny.reset()
	for _, id := range deny {
		d.deny.add(id)
	}
	for _, h := range d.held {
		h.off = 0 // a policy change flushes too: it may allow what was refused
	}
	// The current versions are learned afresh: a restored state may have a rotation undone, and
	// a floor above the region's current version would refuse every delegated key it hands out
	// (asking again every delegateLagRetry, for good).
	clear(d.floor)
}

// denyAll uses no delegated key until the next reset.
func (d *delegates) denyAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.epoch++
	d.deny.all = true
	d.wipeLocked(wrap.KeyID{}, true)
}

// close destroys every delegated key and waits for the fetches in flight.
func (d *delegates) close() {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		close(d.stop)
		d.wipeLocked(wrap.KeyID{}, true)
	}
	d.mu.Unlock()
	d.wg.Wait()
}

// len reports the usable delegated keys held (tests).
func (d *delegates) len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := 0
	for _, h := range d.held {
		if h.d != nil && !h.d.IsZero() {
			n++
		}
	}
	return n
}
