package region

import (
	"sync"
	"time"

	"github.com/kryptonkms/krypton/fsm"
)

// leaseBound remembers a longer lease duration that was in force until lately. Grants made under
// it may still run after the region's lease was shortened (a node cut off at the time keeps its
// grant), so a revocation fence must wait for the longer of the two until such grants have surely
// run out (DESIGN.md, "The revocation fence").
type leaseBound struct {
	mu      sync.Mutex    // guards the fields below
	inForce time.Duration // the lease duration as this node last applied it; 0 before the first
	longer  time.Duration // a longer duration in force until lately
	until   time.Time     // when grants made under longer have run out
}

// note records the lease duration now in force (on every settings change and restore). drift is
// Config.ClockDrift.
func (b *leaseBound) note(d time.Duration, drift float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	prev := b.inForce
	if prev == 0 {
		// Replaying the log from the start: the defaults were in force before.
		prev = fsm.DefaultSettings().LeaseDuration
	}
	b.inForce = d
	if prev > d {
		// A grant made under prev was requested before this change committed, so before now.
		until := time.Now().Add(time.Duration(float64(prev) * (1 + drift)))
		if prev > b.longer || time.Now().After(b.until) {
			b.longer = prev
		}
		if until.After(b.until) {
			b.until = until
		}
	}
}

// max returns the longest lease a node may still hold, given the one in force now.
func (b *leaseBound) max(current time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.longer > current && time.Now().Before(b.until) {
		return b.longer
	}
	return current
}
