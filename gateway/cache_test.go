package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/wrap"
)

func testCache(t *testing.T, entries, bytes int, ttl time.Duration, valid func() bool) *cache {
	t.Helper()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.CacheEntries, cfg.CacheBytes, cfg.CacheTTL = entries, bytes, ttl
	c, err := newCache(cfg, valid, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

func key(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, 32) }

func blob(i int) []byte { return fmt.Appendf(nil, "blob-%04d", i) }

var idA = wrap.KeyID{Tenant: "a", Service: "s", Version: 1}

// TestCacheBounds: count, bytes and age each bound the cache; the least recently used goes first.
func TestCacheBounds(t *testing.T) {
	always := func() bool { return true }
	dst := make([]byte, 32)

	c := testCache(t, 3, 1<<20, time.Hour, always)
	for i := range 4 {
		c.put(c.startEpoch(), idA, blob(i), nil, key(i))
		if i == 1 {
			c.get(blob(0), nil, dst) // 0 becomes the most recently used: 1 goes first
		}
	}
	if c.len() != 3 {
		t.Fatalf("%d entries, want 3", c.len())
	}
	if _, ok := c.get(blob(1), nil, dst); ok {
		t.Errorf("the least recently used entry survived")
	}
	if _, ok := c.get(blob(0), nil, dst); !ok || !bytes.Equal(dst, key(0)) {
		t.Errorf("entry 0: ok=%v", ok)
	}

	// Bytes: each entry counts blob (9) + context (1) + key (32) = 42 bytes.
	c = testCache(t, 100, 100, time.Hour, always)
	for i := range 5 {
		c.put(c.startEpoch(), idA, blob(i), []byte("x"), key(i))
	}
	if c.len() != 2 || c.size > 100 {
		t.Fatalf("%d entries of %d bytes, want 2 within 100", c.len(), c.size)
	}

	// Age.
	c = testCache(t, 10, 1<<20, time.Minute, always)
	clock := time.Now()
	c.now = func() time.Time { return clock }
	c.put(c.startEpoch(), idA, blob(0), nil, key(0))
	if _, ok := c.get(blob(0), nil, dst); !ok {
		t.Fatal("a fresh entry was not served")
	}
	clock = clock.Add(time.Minute + 1)
	if _, ok := c.get(blob(0), nil, dst); ok {
		t.Errorf("an entry older than the TTL was served")
	}
	if c.len() != 0 {
		t.Errorf("the expired entry was kept")
	}
}

// TestCacheRevocation: no lease, no hit; a revocation wipes its scope and denies it; an answer that
// started before an event is not cached after it.
func TestCacheRevocation(t *testing.T) {
	var mu sync.Mutex
	lease := false
	c := testCache(t, 10, 1<<20, time.Hour, func() bool { mu.Lock(); defer mu.Unlock(); return lease })
	dst := make([]byte, 32)
	other := wrap.KeyID{Tenant: "a", Service: "t", Version: 1}
	c.put(c.startEpoch(), idA, blob(0), nil, key(0))
	c.put(c.startEpoch(), other, blob(1), nil, key(1))
	if _, ok := c.get(blob(0), nil, dst); ok {
		t.Fatal("served without a cache lease")
	}
	mu.Lock()
	lease = true
	mu.Unlock()
	if _, ok := c.get(blob(0), nil, dst); !ok {
		t.Fatal("not served under a lease")
	}
	epoch := c.startEpoch()
	c.revoke(wrap.KeyID{Tenant: "a", Service: "s"})
	if _, ok := c.get(blob(0), nil, dst); ok {
		t.Error("a revoked service's key was served")
	}
	if _, ok := c.get(blob(1), nil, dst); !ok {
		t.Error("another service's key was wiped too")
	}
	c.put(c.startEpoch(), wrap.KeyID{Tenant: "a", Service: "s", Version: 2}, blob(2), nil, key(2))
	if _, ok := c.get(blob(2), nil, dst); ok {
		t.Error("a key of the revoked service was cached after the revocation")
	}
	c.put(epoch, other, blob(3), nil, key(3))
	if _, ok := c.get(blob(3), nil, dst); ok {
		t.Error("an answer that started before the event was cached after it")
	}
	c.reset([]wrap.KeyID{{Tenant: "a"}})
	if c.len() != 0 {
		t.Error("reset kept entries")
	}
	c.put(c.startEpoch(), other, blob(4), nil, key(4))
	if c.len() != 0 {
		t.Error("a key of a denied tenant was cached")
	}
}

// TestCacheWipedOnClose: close wipes and frees the locked memory and serves nothing after.
func TestCacheWipedOnClose(t *testing.T) {
	c := testCache(t, 4, 1<<20, time.Hour, func() bool { return true })
	c.put(c.startEpoch(), idA, blob(0), nil, key(0))
	arena := c.arena.Bytes()[:32]
	c.close()
	if c.arena.IsAlive() {
		t.Error("the locked buffer is still alive after close")
	}
	if c.len() != 0 {
		t.Error("entries left after close")
	}
	dst := make([]byte, 32)
	if _, ok := c.get(blob(0), nil, dst); ok {
		t.Error("served after close")
	}
	_ = arena // memguard unmapped it: reading it now would fault, which is the point
	c.close() // twice is fine
}

// TestBatcher: a request to an idle batcher goes at once; behind a batch in flight, requests
// gather until a batch is full; per-item errors go back to their own callers.
func TestBatcher(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	gate, sending := make(chan struct{}), make(chan struct{}, 16)
	b := &batcher[int, int]{
		size: 4, wait: time.Hour, // no timer closes a batch here
		send: func(_ context.Context, reqs []int) ([]int, []error) {
			sending <- struct{}{}
			<-gate
			res, errs := make([]int, len(reqs)), make([]error, len(reqs))
			for i, r := range reqs {
				if r%3 == 0 {
					errs[i] = fmt.Errorf("item %d refused", r)
				} else {
					res[i] = r * 10
				}
			}
			return res, errs
		},
		onBatch: func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() },
	}
	var wg sync.WaitGroup
	caller := func(i int) {
		defer wg.Done()
		res, err := b.do(context.Background(), i)
		switch {
		case i%3 == 0 && (err == nil || err.Error() != fmt.Sprintf("item %d refused", i)):
			t.Errorf("caller %d: err %v", i, err)
		case i%3 != 0 && (err != nil || res != i*10):
			t.Errorf("caller %d: %d, %v", i, res, err)
		}
	}
	wg.Add(1)
	go caller(0)
	<-sending // caller 0's batch, alone, is in flight
	for i := 1; i <= 8; i++ {
		wg.Add(1)
		go caller(i)
	}
	<-sending
	<-sending // two full batches of four went while the first was in flight
	close(gate)
	wg.Wait()
	b.close()
	if len(sizes) != 3 || sizes[0] != 1 || sizes[1] != 4 || sizes[2] != 4 {
		t.Errorf("batch sizes %v, want [1 4 4]", sizes)
	}
	if _, err := b.do(context.Background(), 1); !errors.Is(err, errShutdown) {
		t.Errorf("after close: %v", err)
	}
}

// TestBatcherLoneRequest: a lone request is not held for company: on an idle batcher it goes at
// once, and behind a batch in flight it goes when its wait is over.
func TestBatcherLoneRequest(t *testing.T) {
	gate, sending := make(chan struct{}), make(chan struct{}, 1)
	b := &batcher[int, int]{
		size: 1024, wait: time.Millisecond,
		send: func(_ context.Context, reqs []int) ([]int, []error) {
			if reqs[0] == 0 {
				sending <- struct{}{}
				<-gate // the first batch stays in flight
			}
			return reqs, make([]error, len(reqs))
		},
	}
	defer b.close()
	done := make(chan error, 1)
	go func() { _, err := b.do(context.Background(), 0); done <- err }()
	<-sending
	if res, err := b.do(context.Background(), 7); err != nil || res != 7 {
		t.Fatalf("%d, %v", res, err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// flushCount counts the flushes of a call.notify.
type flushCount struct{ n atomic.Int32 }

func (f *flushCount) flush() { f.n.Add(1) }

// TestBatcherSubmit: a group handed over by submit is cut into full batches, its rest goes when
// the batches in flight are back; every call's then gets its own answer, and each notify is
// flushed once per batch it had calls in. After close, then gets errShutdown at once.
func TestBatcherSubmit(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	gate := make(chan struct{})
	b := &batcher[int, int]{
		size: 4, wait: time.Hour, // no timer closes a batch here
		send: func(_ context.Context, reqs []int) ([]int, []error) {
			<-gate
			res, errs := make([]int, len(reqs)), make([]error, len(reqs))
			for i, r := range reqs {
				if r == 5 {
					errs[i] = errors.New("item 5 refused")
				}
				res[i] = r * 10
			}
			return res, errs
		},
		onBatch: func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() },
	}
	var f flushCount
	var wg sync.WaitGroup
	calls := make([]*call[int, int], 10)
	for i := range calls {
		c := b.newCall()
		c.req, c.notify = i, &f
		wg.Add(1)
		c.then = func(res int, err error) {
			defer wg.Done()
			switch {
			case i == 5 && (err == nil || err.Error() != "item 5 refused"):
				t.Errorf("call 5: %v", err)
			case i != 5 && (err != nil || res != i*10):
				t.Errorf("call %d: %d, %v", i, res, err)
			}
		}
		calls[i] = c
	}
	b.submit(calls)
	close(gate)
	wg.Wait()
	b.close()
	mu.Lock()
	if !slices.Equal(sizes, []int{4, 4, 2}) {
		t.Errorf("batch sizes %v, want [4 4 2]", sizes)
	}
	mu.Unlock()
	if got := f.n.Load(); got != 3 {
		t.Errorf("notify flushed %d times, want 3 (once a batch)", got)
	}

	c := b.newCall()
	var got error
	c.then = func(_ int, err error) { got = err }
	b.submit([]*call[int, int]{c})
	if !errors.Is(got, errShutdown) {
		t.Errorf("submit after close: %v", got)
	}
}
