package audit_test

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/audit/rsyslogtest"
)

// TestSyslogRsyslogRestart sends a stream of audit lines to Debian's real rsyslogd (imtcp, gtls
// driver, mutual TLS) and restarts it in the middle of the stream, while lines are being
// written: rsyslog discards what it had not read when SIGTERM stops it, and the sink resends
// the lines of its resend window on the next connection. Every line arrives, as rsyslog parsed
// it, byte for byte; copies are only the resent lines, at most two of each.
func TestSyslogRsyslogRestart(t *testing.T) {
	t.Parallel()
	fix := newPKI(t)
	rs := rsyslogtest.Start(t, fix.ca)
	sink := newSink(t, fix, rs.Addr, func(c *audit.SyslogConfig) {
		c.TLS = rs.ClientTLS(fix.client)
		c.QueueSize = 1 << 16 // room for every line recorded while rsyslog restarts on a loaded machine
	})
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{Node: "n1", Forward: sink.Forward, SyncInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// The writer records lines until stopped: it is owned by this test and stopped below.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	written := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := l.Record(audit.Event{Kind: audit.KindKeyCreate, Tenant: "acme", Service: "payments"}); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			written++
			mu.Unlock()
			time.Sleep(200 * time.Microsecond) // pace the stream: a few thousand lines a second
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	count := func() int { mu.Lock(); defer mu.Unlock(); return written }
	received := func() int { m, _ := rs.Messages(); return len(m) }

	waitFor(t, "rsyslog to receive 200 lines", func() bool { return received() >= 200 })
	rs.Stop()
	atStop := count()
	waitFor(t, "100 lines recorded while rsyslog is down", func() bool { return count() >= atStop+100 })
	rs.Start()
	atStart := count()
	waitFor(t, "rsyslog to receive lines recorded after its restart", func() bool { return received() >= atStart+200 })
	close(stop)
	wg.Wait()
	stop = make(chan struct{})

	d := rs.WaitDelivered(t, time.Minute, path)
	st := sink.Stats()
	t.Logf("%d lines, %d messages received (%d copies); sink: %d resent, %d dropped", d.Lines, d.Received, d.Duplicates, st.Resent, st.Dropped)
	if d.Lines != count() {
		t.Fatalf("the audit file has %d lines, %d were recorded", d.Lines, count())
	}
	if st.Dropped != 0 {
		t.Fatalf("%d lines dropped from the queue", st.Dropped)
	}
	if d.MaxCopies > 2 || uint64(d.Duplicates) > st.Resent {
		t.Fatalf("%d copies (at most %d of one line) beyond the %d lines the sink resent after one restart", d.Duplicates, d.MaxCopies, st.Resent)
	}
}
