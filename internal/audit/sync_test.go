package audit

import (
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

func (l *Log) isDirty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dirty
}

// TestBatchedSync checks, on synctest's clock, that the owned goroutine
// fsyncs written lines within SyncInterval and that Close stops it.
func TestBatchedSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	synctest.Test(t, func(t *testing.T) {
		l, err := Open(path, Options{SyncInterval: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Record(Event{Kind: KindKeyCreate}); err != nil {
			t.Fatal(err)
		}
		if !l.isDirty() {
			t.Fatal("batched Record fsynced at once")
		}
		time.Sleep(150 * time.Millisecond)
		synctest.Wait()
		if l.isDirty() {
			t.Fatal("line not fsynced after SyncInterval")
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-l.syncDone:
		default:
			t.Fatal("sync goroutine still running after Close")
		}
	})
}
