package wrap

import (
	"errors"
	"strings"
	"testing"
)

// TestLockedBudgetRefusesAndEvicts: a buffer that does not fit is refused with ErrLockedMemory
// before memguard is asked (so no mlock fails and nothing is purged), an evictor is asked to make
// room first, and the buffers already held stay usable throughout.
func TestLockedBudgetRefusesAndEvicts(t *testing.T) {
	b := newLockedBudget(memlockLimit{soft: LockedMargin + 4*uint64(KeyLockedBytes), enforced: true})
	var held []*LockedBuffer
	for i := range 4 {
		buf, err := b.newBuffer(lockedSize)
		if err != nil {
			t.Fatalf("buffer %d of 4: %v", i, err)
		}
		buf.Bytes()[0] = byte(i + 1)
		held = append(held, buf)
	}
	if _, err := b.newBuffer(lockedSize); !errors.Is(err, ErrLockedMemory) {
		t.Fatalf("fifth buffer with no evictor: err = %v, want ErrLockedMemory", err)
	}
	if b.used != 4*KeyLockedBytes {
		t.Fatalf("used = %d after a refusal, want %d", b.used, 4*KeyLockedBytes)
	}
	evicted := 0
	remove := b.addEvictor(func() bool {
		if len(held) == 0 {
			return false
		}
		held[0].Destroy()
		held = held[1:]
		evicted++
		return true
	})
	fifth, err := b.newBuffer(lockedSize)
	if err != nil {
		t.Fatalf("fifth buffer with an evictor: %v", err)
	}
	defer fifth.Destroy()
	if evicted != 1 {
		t.Fatalf("evicted %d buffers to make room for one, want 1", evicted)
	}
	for i, h := range held {
		if got := h.Bytes()[0]; got != byte(i+2) {
			t.Fatalf("held buffer %d reads %d after an eviction, want %d (purged?)", i, got, i+2)
		}
	}
	remove()
	if _, err := b.newBuffer(lockedSize); !errors.Is(err, ErrLockedMemory) {
		t.Fatalf("after the evictor is removed: err = %v, want ErrLockedMemory", err)
	}
	for _, h := range held {
		h.Destroy()
		h.Destroy() // idempotent: gives its pages back once
	}
	fifth.Destroy()
	if b.used != 0 {
		t.Fatalf("used = %d after every buffer is destroyed, want 0", b.used)
	}
}

// TestLockedBudgetFit: the start-time check names the limit and the fixes.
func TestLockedBudgetFit(t *testing.T) {
	b := newLockedBudget(memlockLimit{soft: 1 << 20, enforced: true})
	if err := b.checkFit(512<<10, "a keyring", "a smaller -keyring-size"); err != nil {
		t.Fatalf("512 KiB in a 1 MiB limit: %v", err)
	}
	err := b.checkFit(1<<20, "a keyring of 128 L2 and 128 L3 keys", "a smaller -keyring-size")
	if err == nil {
		t.Fatal("1 MiB in a 1 MiB limit less the margin fitted")
	}
	for _, want := range []string{"RLIMIT_MEMLOCK is 1024 KiB", "ulimit -l", "LimitMEMLOCK=", "a smaller -keyring-size", "128 L2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if u := newLockedBudget(memlockLimit{soft: 1 << 20, enforced: false}); u.checkFit(1<<40, "x", "y") != nil {
		t.Error("an unenforced limit (CAP_IPC_LOCK) refused a fit")
	}
}
