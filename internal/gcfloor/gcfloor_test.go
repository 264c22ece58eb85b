package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		base, want     int
	}{
		{10 << 20, 64 << 20, 100, 640},   // a small heap: the floor decides
		{640 << 20, 64 << 20, 100, 100},  // a large heap: GOGC decides
		{10 << 20, 64 << 20, 1000, 1000}, // a higher GOGC is kept
		{0, 64 << 20, 100, 100},          // nothing marked yet
		{1, 64 << 20, 100, maxPercent},   // bounded
	} {
		if got := percentFor(c.live, c.headroom, c.base); got != c.want {
			t.Errorf("percentFor(%d, %d, %d) = %d, want %d", c.live, c.headroom, c.base, got, c.want)
		}
	}
}

// TestFloorFollowsCollections starts a floor, lets collections happen and waits (with a deadline)
// until GOGC is raised past the base as the live heap asks; stop restores the base.
func TestFloorFollowsCollections(t *testing.T) {
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)
	stop := Start(1 << 40) // a headroom far past any live heap: GOGC must rise to its bound
	deadline := time.Now().Add(20 * time.Second)
	for Percent() != maxPercent {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("GOGC is %d after collections, want %d", Percent(), maxPercent)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // let the finalizer goroutine run; the loop waits on the condition
	}
	if again := Start(1 << 20); Percent() != maxPercent {
		t.Errorf("a second Start changed GOGC to %d", Percent())
	} else {
		again()
	}
	stop()
	if p := Percent(); p != 100 {
		t.Fatalf("after stop GOGC is %d, want the base 100", p)
	}
	runtime.GC()
	runtime.GC()
	if p := Percent(); p != 100 {
		t.Fatalf("a collection after stop set GOGC to %d", p)
	}
}

func TestOffAndZeroDoNothing(t *testing.T) {
	base := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(base)
	Start(64 << 20)()
	if p := Percent(); p != -1 {
		t.Fatalf("GOGC=off became %d", p)
	}
	debug.SetGCPercent(100)
	stop := Start(0)
	runtime.GC()
	stop()
	if p := Percent(); p != 100 {
		t.Fatalf("headroom 0 changed GOGC to %d", p)
	}
}
