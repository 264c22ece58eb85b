package netutil

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of HandshakeLimits. A TLS 1.3 handshake takes a few round trips: a legitimate client
// holds a pending slot for milliseconds, so these bound what a flood can hold, not what clients
// need. Behind a NAT many clients share an address, hence the per-source cap is not tiny.
const (
	DefaultMaxPending          = 1024
	DefaultMaxPendingPerSource = 64
	DefaultHandshakeTimeout    = 5 * time.Second
)

// Reasons of krypton_handshakes_refused_total.
const (
	ReasonPendingLimit = "pending_limit" // MaxPending connections were already handshaking
	ReasonSourceLimit  = "source_limit"  // the source address had MaxPendingPerSource handshaking
	ReasonTimeout      = "timeout"       // the handshake did not complete within HandshakeTimeout
	ReasonConnLimit    = "conn_limit"    // MaxConns authenticated connections were already open
)

// HandshakeLimits bound what a TLS listener gives to peers that have not authenticated yet. Zero
// fields take the defaults above; MaxConns zero means no limit.
type HandshakeLimits struct {
	// Listener names the listener in the metric (api, raft, kmip, gateway ...).
	Listener string
	// MaxPending bounds the connections accepted and not yet authenticated, in total; more are
	// closed at once.
	MaxPending int
	// MaxPendingPerSource bounds them per source address (an IPv4 address, or an IPv6 /64,
	// since one host is routinely given a whole /64).
	MaxPendingPerSource int
	// HandshakeTimeout closes a connection that has not authenticated this long after it was
	// accepted, whatever deadlines the server sets on it. Negative means no such timer: for a
	// listener whose connections never authenticate (plain HTTP, gossip streams), where the
	// server's own deadlines (http.Server's ReadHeaderTimeout and IdleTimeout) bound how long
	// a silent connection is kept, and a timer would cut a healthy long-lived one.
	HandshakeTimeout time.Duration
	// MaxConns bounds the authenticated connections: Authenticated reports false beyond it.
	// Only connections that completed the handshake count, so a flood of connections that never
	// handshake cannot take these slots from the clients that do.
	MaxConns int
	// Registerer receives krypton_handshakes_refused_total and krypton_handshakes_pending; nil
	// registers nowhere. Several listeners may share one registry (they are told apart by
	// Listener).
	Registerer prometheus.Registerer
}

func (l HandshakeLimits) withDefaults() HandshakeLimits {
	if l.Listener == "" {
		l.Listener = "tls"
	}
	if l.MaxPending <= 0 {
		l.MaxPending = DefaultMaxPending
	}
	if l.MaxPendingPerSource <= 0 {
		l.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return l
}

// HandshakeListener is a listener wrapped by LimitHandshakes.
type HandshakeListener struct {
	net.Listener
	lim     HandshakeLimits
	refused *prometheus.CounterVec
	pending prometheus.Gauge

	mu        sync.Mutex // guards the counts
	nPending  int
	perSource map[string]int
	nAuth     int
}

// LimitHandshakes wraps l, a listener of raw TCP connections on which the server does a TLS
// handshake, so that connections are counted in two stages. Accept hands out a connection only
// while fewer than MaxPending (in total) and MaxPendingPerSource (from its source) are still
// handshaking; any other is closed at once and counted, and Accept goes on to the next. A
// connection stays pending until the server calls Authenticated on it after its handshake, it
// is closed, or HandshakeTimeout passes (then it is closed).
//
// golang.org/x/net/netutil.LimitListener is not used: it takes its slot at Accept and holds it
// until Close, so peers that never send a byte hold every slot for the whole handshake timeout
// (1,030 raw TCP connections locked every client out of KMIP that way), and it blocks Accept
// when full instead of refusing, which leaves the excess in the kernel's backlog. Here the
// unauthenticated stage has its own, per-source bounded budget, and the server's connection
// slots (MaxConns) are taken only by connections that authenticated.
func LimitHandshakes(l net.Listener, lim HandshakeLimits) *HandshakeListener {
	lim = lim.withDefaults()
	hl := &HandshakeListener{
		Listener:  l,
		lim:       lim,
		perSource: map[string]int{},
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krypton_handshakes_refused_total",
		Help: "Connections closed before or at authentication by the pre-authentication limits, by listener and reason.",
	}, []string{"listener", "reason"})
	pending := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "krypton_handshakes_pending",
		Help: "Connections accepted and not yet authenticated, by listener.",
	}, []string{"listener"})
	if lim.Registerer != nil {
		refused = register(lim.Registerer, refused)
		pending = register(lim.Registerer, pending)
	}
	hl.refused = refused
	hl.pending = pending.WithLabelValues(lim.Listener)
	// Make the series visible at zero, so that a dashboard sees the listener before a refusal.
	for _, r := range []string{ReasonPendingLimit, ReasonSourceLimit, ReasonTimeout, ReasonConnLimit} {
		refused.WithLabelValues(lim.Listener, r)
	}
	return hl
}

// register registers c, or returns the collector of the same name another listener of this
// registry registered first.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if ex, ok := are.ExistingCollector.(T); ok {
				return ex
			}
		}
	}
	return c
}

// Accept returns the next connection within the limits; connections beyond them are closed
// here and never seen by the caller.
func (hl *HandshakeListener) Accept() (net.Conn, error) {
	for {
		c, err := hl.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceKey(c.RemoteAddr())
		hl.mu.Lock()
		reason := ""
		switch {
		case hl.nPending >= hl.lim.MaxPending:
			reason = ReasonPendingLimit
		case hl.perSource[src] >= hl.lim.MaxPendingPerSource:
			reason = ReasonSourceLimit
		default:
			hl.nPending++
			hl.perSource[src]++
		}
		hl.mu.Unlock()
		if reason != "" {
			// Close at once: holding it, even in the kernel's backlog, is what the limit is
			// against. No log line: a flood would make one per connection.
			c.Close()
			hl.refused.WithLabelValues(hl.lim.Listener, reason).Inc()
			continue
		}
		hl.pending.Inc()
		pc := &pendingConn{Conn: c, hl: hl, src: src}
		if hl.lim.HandshakeTimeout > 0 {
			pc.timer = time.AfterFunc(hl.lim.HandshakeTimeout, pc.expire)
		}
		return pc, nil
	}
}

// sourceKey is the address a per-source limit counts by.
func sourceKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String()
}

const (
	statePending = iota
	stateAuthenticated
	stateClosed
)

// pendingConn is a connection handed out by a HandshakeListener.
type pendingConn struct {
	net.Conn
	hl    *HandshakeListener
	src   string
	timer *time.Timer // nil when HandshakeTimeout is negative
	state int         // guarded by hl.mu
}

func (c *pendingConn) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
	}
}

// leavePending releases c's pending slot; the caller holds hl.mu and c is pending.
func (c *pendingConn) leavePending() {
	hl := c.hl
	hl.nPending--
	if hl.perSource[c.src]--; hl.perSource[c.src] == 0 {
		delete(hl.perSource, c.src)
	}
	hl.pending.Dec()
}

// authenticate moves c from pending to authenticated, if a slot is free.
func (c *pendingConn) authenticate() bool {
	c.stopTimer()
	hl := c.hl
	hl.mu.Lock()
	defer hl.mu.Unlock()
	if c.state != statePending {
		return c.state == stateAuthenticated
	}
	c.leavePending()
	if hl.lim.MaxConns > 0 && hl.nAuth >= hl.lim.MaxConns {
		c.state = stateClosed // the caller closes it; nothing is left to release
		hl.refused.WithLabelValues(hl.lim.Listener, ReasonConnLimit).Inc()
		return false
	}
	hl.nAuth++
	c.state = stateAuthenticated
	return true
}

// expire closes c if it is still pending when its handshake time is up.
func (c *pendingConn) expire() {
	hl := c.hl
	hl.mu.Lock()
	pending := c.state == statePending
	if pending {
		// Closed under the lock's decision, so that an Authenticated racing with the timer
		// sees a closed connection and reports false.
		c.leavePending()
		c.state = stateClosed
	}
	hl.mu.Unlock()
	if pending {
		hl.refused.WithLabelValues(hl.lim.Listener, ReasonTimeout).Inc()
		c.Conn.Close()
	}
}

func (c *pendingConn) Close() error {
	c.stopTimer()
	hl := c.hl
	hl.mu.Lock()
	switch c.state {
	case statePending:
		c.leavePending()
	case stateAuthenticated:
		hl.nAuth--
	}
	c.state = stateClosed
	hl.mu.Unlock()
	return c.Conn.Close()
}

// Authenticated tells the listener that accepted c that its peer has completed the handshake
// and authenticated, so that c leaves the pending budget and the handshake timer stops. It
// reports false when c must be closed instead: the listener's MaxConns authenticated
// connections are open, or c was closed (its handshake time ran out). For a connection not
// accepted through LimitHandshakes it reports true.
func Authenticated(c net.Conn) bool {
	pc, ok := c.(*pendingConn)
	if !ok {
		return true
	}
	return pc.authenticate()
}

// Counts reports the connections pending and authenticated; for tests and diagnostics.
func (hl *HandshakeListener) Counts() (pending, authenticated int) {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	return hl.nPending, hl.nAuth
}
