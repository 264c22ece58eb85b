// Package gcfloor keeps a floor under the Go garbage collector's heap goal: the heap may grow by at
// least a fixed headroom past the live heap before a collection, whatever GOGC says.
//
// Why: with GOGC=100 the collector runs each time the heap doubles. A region node's live heap is
// small (tens of MiB) while each unary call allocates ~6 KiB on the server, so at 15,000 calls/s
// the collector ran several times a second and cost ~15 % of a call's CPU (docs/performance.md,
// item 11 of "What was changed, and the proof"; the floor's effect: "Unary wrap: region CPU per
// call"). Raising GOGC for every node (krypton server -gc-percent) also
// multiplies the peak heap of a node that holds millions of key versions, which is why it is not
// the default. A floor costs a small node at most the headroom and a large one nothing: its heap
// goal is already further than the headroom.
//
// How: after each collection (a finalizer on a sentinel object, re-armed every cycle, runs on the
// runtime's finalizer goroutine; this package starts no goroutine), the live heap is read from
// runtime/metrics and GOGC set to max(base, headroom*100/live), base being the GOGC in force when
// Start was called. Go's soft memory limit (GOMEMLIMIT) still bounds the heap. This is the
// technique of the GC tuners of Uber and ByteDance (github.com/bytedance/gopkg/util/gctuner);
// those packages bound the heap by a memory limit instead, which Go's own GOMEMLIMIT now does,
// so the few lines here are written out rather than adding a dependency for them.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// DefaultHeadroom is the headroom krypton server and krypton dev keep by default: 64 MiB.
const DefaultHeadroom = 64 << 20

// maxPercent bounds the GOGC the floor sets (a near-empty heap would ask for more).
const maxPercent = 1 << 20

var (
	mu       sync.Mutex // guards the fields below and each setting of GOGC
	active   *floor
	liveName = "/gc/heap/live:bytes"
	gogcName = "/gc/gogc:percent"
)

type floor struct {
	headroom uint64
	base     int
	last     int // the GOGC last set
}

type sentinel struct{ _ [16]byte } // not tiny-allocated: a finalizer on a tiny object may never run

// Start keeps a floor of headroom bytes under the heap goal until stop is called, which restores
// the GOGC in force before. It does nothing (and stop nothing) when headroom is 0, when the
// collector is off (GOGC=off) or when a floor is already kept.
func Start(headroom uint64) (stop func()) {
	mu.Lock()
	defer mu.Unlock()
	base := Percent()
	if headroom == 0 || base < 0 || active != nil {
		return func() {}
	}
	f := &floor{headroom: headroom, base: base, last: base}
	active = f
	f.adjustLocked()
	arm(f)
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if active != f {
			return
		}
		active = nil
		debug.SetGCPercent(f.base)
	}
}

// arm sets a finalizer that adjusts the floor after the next collection and arms the next one.
func arm(f *floor) {
	s := new(sentinel)
	runtime.SetFinalizer(s, func(*sentinel) {
		mu.Lock()
		defer mu.Unlock()
		if active != f {
			return // stopped: let the chain end
		}
		f.adjustLocked()
		arm(f)
	})
}

// adjustLocked sets GOGC from the live heap the last collection marked.
func (f *floor) adjustLocked() {
	s := []metrics.Sample{{Name: liveName}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	p := percentFor(s[0].Value.Uint64(), f.headroom, f.base)
	if p != f.last {
		debug.SetGCPercent(p)
		f.last = p
	}
}

// percentFor is the GOGC that gives a heap goal of at least live+headroom, and never less than base.
func percentFor(live, headroom uint64, base int) int {
	if live == 0 {
		return base
	}
	p := headroom * 100 / live
	if p > maxPercent {
		p = maxPercent
	}
	return max(int(p), base)
}

// Percent is the GOGC in force (-1: off), from runtime/metrics.
func Percent() int {
	s := []metrics.Sample{{Name: gogcName}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	return int(s[0].Value.Uint64())
}
