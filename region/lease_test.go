package region

import (
	"errors"
	"testing"
	"time"
)

func TestLease(t *testing.T) {
	l := newLease()
	if err := l.check(); !errors.Is(err, ErrNoLease) {
		t.Fatalf("a new node serves: %v", err)
	}
	drops := l.dropped()
	sent := l.now()
	l.grant(drops, sent, time.Hour, 1)
	if err := l.check(); err != nil {
		t.Fatalf("a node with a lease refuses: %v", err)
	}
	// An older, shorter grant does not shorten the lease.
	l.grant(drops, sent, time.Millisecond, 1)
	if l.expiresIn() < 59*time.Minute {
		t.Fatalf("an older grant shortened the lease to %v", l.expiresIn())
	}
	l.drop()
	if err := l.check(); !errors.Is(err, ErrNoLease) {
		t.Fatalf("a dropped lease serves: %v", err)
	}
	// A grant to a renewal sent before the drop (renewals overlap) does not bring it back.
	l.grant(drops, l.now(), time.Hour, 1)
	if err := l.check(); !errors.Is(err, ErrNoLease) {
		t.Fatalf("a grant to a renewal sent before the drop made the node serve: %v", err)
	}
	// A lease counted from a send time in the past is already shorter by that much.
	l.grant(l.dropped(), l.now()-int64(2*time.Second), time.Second, 2)
	if err := l.check(); !errors.Is(err, ErrNoLease) {
		t.Fatalf("an expired grant serves: %v", err)
	}
	if l.term.Load() != 2 {
		t.Fatalf("term %d, want 2", l.term.Load())
	}
}
