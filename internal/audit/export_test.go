package audit

import (
	"io"
	"time"
)

// WrapWriter makes l write through wrap(its file): a test's way to make writes to a real file
// fail part way, as on a full disk.
func WrapWriter(l *Log, wrap func(io.Writer) io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w = wrap(l.w)
}

// NewSyslogClock is NewSyslog with now as the clock of the resend window.
func NewSyslogClock(cfg SyslogConfig, now func() time.Time) (*Syslog, error) {
	return newSyslog(cfg, now)
}
