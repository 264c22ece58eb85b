package audit

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The syslog sink forwards every audit line to a SIEM as RFC 5424 messages
// over TLS (RFC 5425), framed by octet counting (RFC 6587 section 3.4.1).
//
// It is hand-written because nothing in the standard library or in go.mod
// does this: log/syslog writes the older BSD format (RFC 3164) over plain
// TCP, UDP or a Unix socket, with no structured data and no TLS. The format
// is small (one header line, one structured-data element, the JSON line as
// the message) and is tested against a receiver that parses it.
//
// Delivery is at least once within the queue's bounds: the file log is the
// record, the SIEM a copy. A SIEM outage must never hold up a wrap or a
// revocation, so Forward never blocks: lines wait in a bounded queue, and
// when it is full the oldest line is dropped (the freshest events are the
// ones a responder needs first). Drops are counted
// (krypton_audit_syslog_dropped_total) and logged, and each message carries
// the line's seq, so the SIEM can see a gap and the file can fill it.
//
// Syslog over TLS has no acknowledgements: a write that succeeded put the
// line in the kernel's buffers, not in the SIEM, and a receiver that stops
// (a restart, say) discards what it had not read yet. So a sent line stays
// held for ResendWindow after its write; when the connection breaks, the
// held lines go back to the front of the queue and are sent again, in
// order, on the next connection. The SIEM may get such a line twice (same
// node, seq and hash: the key to deduplicate on); it loses none unless its
// receiver went more than ResendWindow without reading, or the queue
// overflowed (counted).

// SyslogConfig configures NewSyslog. Addr and TLS are required.
type SyslogConfig struct {
	// Addr is the receiver's host:port (6514 is the registered port for
	// syslog over TLS).
	Addr string
	// TLS configures the connection: RootCAs to verify the receiver,
	// Certificates for mutual TLS, ServerName if it differs from Addr's
	// host. TLS 1.2 is the minimum (RFC 5425 requires 1.2; many receivers
	// do not speak 1.3 yet).
	TLS *tls.Config

	// Hostname is the HOSTNAME field; empty means os.Hostname().
	Hostname string
	// AppName is the APP-NAME field; empty means "krypton".
	AppName string
	// Facility is the syslog facility; 0 means 10 (authpriv, "security/
	// authorization messages", RFC 5424 table 1). Facility 0 (kern) is
	// not one an application should use.
	Facility int

	// QueueSize bounds the lines waiting to be sent; 0 means 4096. When
	// it is full the oldest line is dropped.
	QueueSize int
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts (doubling, with jitter); 0 means 250 ms and 30 s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// DialTimeout bounds a connection attempt and its TLS handshake;
	// WriteTimeout one message. 0 means 10 s each.
	DialTimeout  time.Duration
	WriteTimeout time.Duration
	// FlushTimeout bounds how long Close spends sending what is queued;
	// 0 means 2 s.
	FlushTimeout time.Duration
	// ResendWindow is how long a sent line is held to be sent again if
	// the connection breaks (the receiver may not have read it); 0 means
	// 10 s. At most QueueSize lines are held.
	ResendWindow time.Duration

	// Logger receives connection changes and drops; nil discards.
	Logger *slog.Logger
	// Registerer, if set, gets the sink's metrics:
	// krypton_audit_syslog_sent_total, _dropped_total, _resent_total,
	// _queue_length and _connected.
	Registerer prometheus.Registerer
}

// Validate names the first unusable field.
func (c SyslogConfig) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("audit: SyslogConfig.Addr %q: want host:port", c.Addr)
	}
	switch {
	case c.TLS == nil:
		return errors.New("audit: SyslogConfig.TLS is required (syslog goes over TLS only)")
	case c.Facility < 0 || c.Facility > 23:
		return fmt.Errorf("audit: SyslogConfig.Facility %d is outside 0..23", c.Facility)
	case c.QueueSize < 0:
		return errors.New("audit: SyslogConfig.QueueSize is negative")
	case c.MinBackoff < 0 || c.MaxBackoff < 0 || c.DialTimeout < 0 || c.WriteTimeout < 0 || c.FlushTimeout < 0 || c.ResendWindow < 0:
		return errors.New("audit: SyslogConfig durations must not be negative")
	case !printASCII(c.AppName, 48) && c.AppName != "":
		return errors.New("audit: SyslogConfig.AppName must be 1-48 printable ASCII characters")
	case !printASCII(c.Hostname, 255) && c.Hostname != "":
		return errors.New("audit: SyslogConfig.Hostname must be 1-255 printable ASCII characters")
	}
	return nil
}

func (c SyslogConfig) withDefaults() SyslogConfig {
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || !printASCII(h, 255) {
			h = "-"
		}
		c.Hostname = h
	}
	if c.AppName == "" {
		c.AppName = "krypton"
	}
	if c.Facility == 0 {
		c.Facility = 10
	}
	if c.QueueSize == 0 {
		c.QueueSize = 4096
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = 2 * time.Second
	}
	if c.ResendWindow == 0 {
		c.ResendWindow = 10 * time.Second
	}
	return c
}

// Syslog forwards audit lines to a syslog receiver. Give its Forward method
// to Options.Forward; Close it after the Log. Its methods are safe for
// concurrent use.
type Syslog struct {
	cfg  SyslogConfig
	log  *slog.Logger
	tls  *tls.Config
	pid  string
	wake chan struct{} // buffered 1: a line was queued
	ctx  context.Context
	stop context.CancelFunc // called by Close; ends ctx
	done chan struct{}      // closed when run returns

	sent, dropped, resent atomic.Uint64
	connected             atomic.Bool

	now func() time.Time // the clock of the resend window

	// held are the lines sent on the current connection within
	// ResendWindow, oldest first: owned by run.
	held []heldLine

	mu        sync.Mutex // guards the fields below
	queue     [][]byte   // ring buffer of lines, len = QueueSize
	head, n   int        // the oldest line and how many are queued
	dropSince uint64     // drops not yet logged
	closed    bool
}

// NewSyslog starts a sink for cfg: its goroutine connects (and reconnects)
// in the background, so NewSyslog succeeds while the receiver is down.
func NewSyslog(cfg SyslogConfig) (*Syslog, error) { return newSyslog(cfg, time.Now) }

// newSyslog is NewSyslog with a clock for the resend window (a test's).
func newSyslog(cfg SyslogConfig, now func() time.Time) (*Syslog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	tc := cfg.TLS.Clone()
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	if tc.ServerName == "" {
		host, _, _ := net.SplitHostPort(cfg.Addr)
		tc.ServerName = host
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Syslog{
		ctx:   ctx,
		stop:  stop,
		cfg:   cfg,
		log:   cfg.Logger,
		tls:   tc,
		pid:   strconv.Itoa(os.Getpid()),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		queue: make([][]byte, cfg.QueueSize),
		now:   now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer != nil {
		if err := s.register(cfg.Registerer); err != nil {
			stop()
			return nil, err
		}
	}
	go s.run()
	return s, nil
}

func (s *Syslog) register(r prometheus.Registerer) error {
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "krypton_audit_syslog_sent_total",
			Help: "Audit lines written to the syslog receiver."}, func() float64 { return float64(s.sent.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "krypton_audit_syslog_dropped_total",
			Help: "Audit lines dropped because the syslog queue was full (they remain in the audit file)."},
			func() float64 { return float64(s.dropped.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "krypton_audit_syslog_resent_total",
			Help: "Audit lines sent again after a broken connection (the receiver may hold them twice: same node, seq and hash)."},
			func() float64 { return float64(s.resent.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "krypton_audit_syslog_queue_length",
			Help: "Audit lines waiting for the syslog receiver."}, func() float64 { return float64(s.Stats().Queued) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "krypton_audit_syslog_connected",
			Help: "1 while connected to the syslog receiver."}, func() float64 {
			if s.connected.Load() {
				return 1
			}
			return 0
		}),
	}
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("audit: registering syslog metrics: %w", err)
		}
	}
	return nil
}

// SyslogStats is a snapshot of a sink's counters.
type SyslogStats struct {
	Sent, Dropped uint64 // lines written (resent ones again), lines dropped from a full queue
	Resent        uint64 // lines sent again after a broken connection
	Queued        int    // lines waiting
	Connected     bool
}

// Stats returns the sink's counters.
func (s *Syslog) Stats() SyslogStats {
	s.mu.Lock()
	q := s.n
	s.mu.Unlock()
	return SyslogStats{Sent: s.sent.Load(), Dropped: s.dropped.Load(), Resent: s.resent.Load(), Queued: q, Connected: s.connected.Load()}
}

// Forward queues one audit line (as Log passes it to Options.Forward) and
// returns at once. When the queue is full the oldest line is dropped. After
// Close it does nothing.
func (s *Syslog) Forward(line []byte) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.n == len(s.queue) {
		s.queue[s.head] = nil
		s.head = (s.head + 1) % len(s.queue)
		s.n--
		s.dropped.Add(1)
		s.dropSince++
	}
	s.queue[(s.head+s.n)%len(s.queue)] = line
	s.n++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// peek returns the oldest queued line, or nil.
func (s *Syslog) peek() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return nil
	}
	return s.queue[s.head]
}

// pop removes line if it is still the oldest (Forward may have dropped it
// meanwhile), and returns how many drops have not been logged yet.
func (s *Syslog) pop(line []byte) (drops uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n > 0 && &s.queue[s.head][0] == &line[0] {
		s.queue[s.head] = nil
		s.head = (s.head + 1) % len(s.queue)
		s.n--
	}
	drops, s.dropSince = s.dropSince, 0
	return drops
}

// heldLine is a line sent at a time, held in case the receiver did not
// read it.
type heldLine struct {
	line []byte
	at   time.Time
}

// hold keeps line, just sent, for a resend, and forgets the held lines
// older than ResendWindow, or beyond QueueSize.
func (s *Syslog) hold(line []byte, now time.Time) {
	s.held = append(s.held, heldLine{line, now})
	s.expire(now)
	if over := len(s.held) - len(s.queue); over > 0 {
		s.held = slices.Delete(s.held, 0, over)
	}
}

// expire forgets the held lines sent more than ResendWindow before now:
// the receiver has read them.
func (s *Syslog) expire(now time.Time) {
	i := 0
	for i < len(s.held) && now.Sub(s.held[i].at) > s.cfg.ResendWindow {
		i++
	}
	if i > 0 {
		s.held = slices.Delete(s.held, 0, i)
	}
}

// requeue puts the held lines back at the front of the queue, in order, to
// be sent again on the next connection: called when a connection broke.
// Lines the queue cannot take are the oldest, and are dropped (counted).
func (s *Syslog) requeue() int {
	s.expire(s.now())
	held := s.held
	s.held = nil
	if len(held) == 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0
	}
	room := len(s.queue) - s.n
	if drop := len(held) - room; drop > 0 {
		held = held[drop:]
		s.dropped.Add(uint64(drop))
		s.dropSince += uint64(drop)
	}
	for i := len(held) - 1; i >= 0; i-- {
		s.head = (s.head - 1 + len(s.queue)) % len(s.queue)
		s.queue[s.head] = held[i].line
		s.n++
	}
	s.resent.Add(uint64(len(held)))
	return len(held)
}

// Close stops the sink: it spends up to FlushTimeout sending what is queued
// on the current connection, then closes it. Lines still queued are lost to
// the SIEM (not to the file). Later calls return nil.
func (s *Syslog) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	<-s.done
	return nil
}

// conn is one connection to the receiver; dead is closed when its reader
// sees the receiver close it (receivers send nothing, so any read result
// means the connection is over).
type conn struct {
	c    *tls.Conn
	dead chan struct{}
	read chan struct{} // closed when the reader returns
}

func (s *Syslog) dial() (*conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: s.cfg.DialTimeout}, Config: s.tls}
	c, err := d.DialContext(s.ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return nil, err
	}
	cn := &conn{c: c.(*tls.Conn), dead: make(chan struct{}), read: make(chan struct{})}
	go func() {
		defer close(cn.read)
		var b [1]byte
		_, _ = cn.c.Read(b[:])
		close(cn.dead)
	}()
	return cn, nil
}

func (cn *conn) close() {
	cn.c.Close()
	<-cn.read
}

func (cn *conn) alive() bool {
	select {
	case <-cn.dead:
		return false
	default:
		return true
	}
}

// run owns the connection: it connects with backoff, writes queued lines,
// and on Close flushes and returns.
func (s *Syslog) run() {
	defer close(s.done)
	var cn *conn
	defer func() {
		if cn != nil {
			cn.close()
		}
		s.connected.Store(false)
	}()
	backoff := s.cfg.MinBackoff
	lost := func(err error) bool {
		cn.close()
		resend := s.requeue()
		s.log.Warn("audit: syslog connection lost", "addr", s.cfg.Addr, "err", err, "retry-in", backoff,
			"resending", resend)
		cn = nil
		s.connected.Store(false)
		if !s.wait(jitter(backoff)) {
			return false
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
		return true
	}
	for {
		if cn == nil {
			var err error
			cn, err = s.dial()
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				s.log.Warn("audit: syslog receiver unreachable", "addr", s.cfg.Addr, "err", err, "retry-in", backoff)
				if !s.wait(jitter(backoff)) {
					return
				}
				backoff = min(2*backoff, s.cfg.MaxBackoff)
				continue
			}
			s.connected.Store(true)
			s.log.Info("audit: connected to syslog receiver", "addr", s.cfg.Addr)
		}
		sent := s.sent.Load()
		err := s.drain(cn, nil)
		if s.sent.Load() > sent {
			// The receiver takes lines: a later loss starts the backoff
			// afresh. (Resetting on connect instead would spin against a
			// receiver that accepts connections and drops them at once.)
			backoff = s.cfg.MinBackoff
		}
		if err != nil {
			if !lost(err) {
				return
			}
			continue
		}
		select {
		case <-s.wake:
		case <-cn.dead:
			if !lost(errors.New("closed by the receiver")) {
				return
			}
		case <-s.ctx.Done():
			deadline := time.Now().Add(s.cfg.FlushTimeout)
			_ = s.drain(cn, &deadline)
			return
		}
	}
}

// wait waits d or until Close; false means Close.
func (s *Syslog) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// drain writes queued lines until the queue is empty or a write fails. With
// until set (on Close) it stops at that time instead of per-write timeouts.
func (s *Syslog) drain(cn *conn, until *time.Time) error {
	for {
		line := s.peek()
		if line == nil {
			return nil
		}
		if !cn.alive() {
			return errors.New("closed by the receiver")
		}
		msg := s.format(line)
		dl := time.Now().Add(s.cfg.WriteTimeout)
		if until != nil {
			if time.Now().After(*until) {
				return nil
			}
			dl = *until
		}
		cn.c.SetWriteDeadline(dl)
		frame := make([]byte, 0, len(msg)+8)
		frame = strconv.AppendInt(frame, int64(len(msg)), 10)
		frame = append(frame, ' ')
		frame = append(frame, msg...)
		if _, err := cn.c.Write(frame); err != nil {
			return err
		}
		s.hold(line, s.now())
		s.sent.Add(1) // after hold: a test that sees the count sees the line held
		if drops := s.pop(line); drops > 0 {
			s.log.Warn("audit: syslog queue full, oldest lines dropped (they remain in the audit file)",
				"dropped", drops, "dropped-total", s.dropped.Load())
		}
	}
}

// SyslogSDID is the SD-ID of the structured-data element that carries an
// event's fields: "krypton" at IANA private enterprise number 32473, the
// number RFC 5612 reserves for documentation and examples. A deployment
// with its own enterprise number can map it in the SIEM.
const SyslogSDID = "krypton@32473"

// severity of an event kind: warning for refusals, notice for what takes
// keys away, informational otherwise (RFC 5424 table 2).
func severity(kind string) int {
	switch {
	case kind == KindCallRefused:
		return 4
	case kind == KindKeyRevoke || kind == KindKeyDestroy || kind == KindTenantLock ||
		strings.Contains(kind, "revoke") || strings.Contains(kind, "anchor"):
		return 5
	}
	return 6
}

// format renders one audit line as an RFC 5424 message:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [krypton@32473 ...] BOM{json line}
//
// MSGID is the event kind; the structured data carries every field of the
// event (detail keys as "detail.<key>") including seq, prev and hash; the
// message is the audit line itself, byte for byte, so a SIEM can check the
// chain. A line that does not parse (it always does: Log wrote it) is sent
// as the message alone, with MSGID "-".
func (s *Syslog) format(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	var e Event
	parsed := json.Unmarshal(line, &e) == nil && e.Kind != ""
	sev, msgid, ts := 6, "-", "-"
	if parsed {
		sev = severity(e.Kind)
		msgid = sdName(e.Kind)
		ts = e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00") // RFC 5424: at most 6 fraction digits
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s ", s.cfg.Facility*8+sev, ts, s.cfg.Hostname, s.cfg.AppName, s.pid, msgid)
	if !parsed {
		b.WriteString("-")
	} else {
		b.WriteString("[" + SyslogSDID)
		param := func(name, v string) {
			if v == "" {
				return
			}
			b.WriteString(" " + sdName(name) + `="`)
			sdEscape(&b, v)
			b.WriteByte('"')
		}
		param("seq", strconv.FormatUint(e.Seq, 10))
		param("node", e.Node)
		param("kind", e.Kind)
		param("actor", e.Actor)
		param("tenant", e.Tenant)
		param("service", e.Service)
		if e.Version != 0 {
			param("version", strconv.FormatUint(uint64(e.Version), 10))
		}
		param("code", e.Code)
		param("reason", e.Reason)
		param("request-id", e.RequestID)
		for _, k := range sortedKeys(e.Detail) {
			param("detail."+k, e.Detail[k])
		}
		param("prev", e.Prev)
		param("hash", e.Hash)
		b.WriteString("]")
	}
	b.WriteString(" \xef\xbb\xbf") // BOM: the message is UTF-8 (RFC 5424 section 6.4)
	b.Write(line)
	return b.Bytes()
}

// sdName makes s a valid PARAM-NAME or MSGID: printable US-ASCII without
// '=', ' ', ']' or '"', at most 32 characters; anything else becomes '_'.
func sdName(s string) string {
	if s == "" {
		return "_"
	}
	out := []byte(s)
	if len(out) > 32 {
		out = out[:32]
	}
	for i, c := range out {
		if c < 33 || c > 126 || c == '=' || c == ']' || c == '"' {
			out[i] = '_'
		}
	}
	return string(out)
}

// sdEscape writes a PARAM-VALUE: UTF-8 with '"', '\' and ']' escaped by a
// backslash (RFC 5424 section 6.3.3). Invalid UTF-8 is replaced.
func sdEscape(b *bytes.Buffer, v string) {
	for _, r := range strings.ToValidUTF8(v, "\uFFFD") {
		if r == '"' || r == '\\' || r == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func printASCII(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}
