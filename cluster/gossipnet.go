package cluster

import (
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kryptonkms/krypton/internal/netutil"
)

// Defaults of the gossip stream limits (Config.GossipMaxStreams, GossipMaxStreamsPerSource,
// GossipTCPTimeout): those of the TLS listeners. memberlist opens one TCP stream per exchange (a
// push/pull every PushPullInterval, a join, a probe's TCP fallback when UDP fails) and closes it
// when done, so a peer rarely has more than a few open to a node; but in tests every node of a
// cluster shares 127.0.0.1, and a stalled node collects the TCP fallbacks of every peer's probes,
// hence a per-source cap well above what one peer needs.
const (
	DefaultGossipMaxStreams          = netutil.DefaultMaxPending          // 1024
	DefaultGossipMaxStreamsPerSource = netutil.DefaultMaxPendingPerSource // 64
	DefaultGossipTCPTimeout          = 10 * time.Second                   // memberlist's LAN default
)

// gossipTransport is memberlist's own NetTransport (UDP packets, TCP dialing and accepting are
// unchanged) whose accepted TCP streams pass through netutil.LimitHandshakes before memberlist
// serves them: at most GossipMaxStreams at once, GossipMaxStreamsPerSource from one source
// address, and none for longer than GossipTCPTimeout. The rest are closed as soon as they are
// accepted, and counted in krypton_handshakes_refused_total{listener="gossip"}.
//
// Why this design: NetTransport accepts every TCP connection and hands each to memberlist, which
// serves it in a goroutine of its own until its TCPTimeout, so connections that never send a
// byte held a descriptor and a goroutine each, without bound (memberlist has no knob for it:
// its only cap, 128 concurrent push/pulls, counts streams after they have been read). Wrapping
// NetTransport's stream channel reuses memberlist's transport whole (writing a transport would
// copy its UDP and dialing code) and the limiter the gRPC, Raft and KMIP listeners use. A stream
// never "authenticates" here (memberlist decrypts and verifies inside its handler, out of
// reach), so every stream is pending for its whole life; that is short, one exchange, and
// memberlist's own deadline on it is TCPTimeout, the same as the timer here.
type gossipTransport struct {
	*memberlist.NetTransport
	hl      *netutil.HandshakeListener
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func newGossipTransport(nt *memberlist.NetTransport, addr net.Addr, lim netutil.HandshakeLimits) *gossipTransport {
	t := &gossipTransport{NetTransport: nt, streams: make(chan net.Conn), done: make(chan struct{})}
	t.hl = netutil.LimitHandshakes(streamListener{t: t, addr: addr}, lim)
	t.wg.Add(1)
	go t.forward()
	return t
}

// forward hands memberlist the streams the limits let through.
func (t *gossipTransport) forward() {
	defer t.wg.Done()
	for {
		c, err := t.hl.Accept()
		if err != nil {
			return
		}
		select {
		case t.streams <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}

// StreamCh implements memberlist.Transport: the streams within the limits.
func (t *gossipTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport.
func (t *gossipTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	// NetTransport's accept loop may be blocked handing over a stream nobody takes any more:
	// take and close those until it has stopped.
	stop, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case c := <-t.NetTransport.StreamCh():
				c.Close()
			case <-stop:
				return
			}
		}
	}()
	err := t.NetTransport.Shutdown()
	close(stop)
	<-drained
	return err
}

// streamListener presents NetTransport's accepted streams as a net.Listener, for
// netutil.LimitHandshakes.
type streamListener struct {
	t    *gossipTransport
	addr net.Addr
}

func (l streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.t.NetTransport.StreamCh():
		return c, nil
	case <-l.t.done:
		return nil, net.ErrClosed
	}
}

func (l streamListener) Close() error {
	l.t.once.Do(func() { close(l.t.done) })
	return nil
}

func (l streamListener) Addr() net.Addr { return l.addr }

// newNetTransport binds memberlist's NetTransport on host:port, and fills in mc's bind and
// advertise ports when port is 0 (as memberlist.Create does for a transport of its own, with
// the same retries: the kernel's free TCP port may be taken for UDP).
func newNetTransport(mc *memberlist.Config, host string, port int, logger *log.Logger) (*memberlist.NetTransport, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host}, BindPort: port, Logger: logger,
		})
		if err == nil {
			if port == 0 {
				mc.BindPort = nt.GetAutoBindPort()
				mc.AdvertisePort = mc.BindPort
			}
			return nt, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("cluster: gossip: bind %s: %w", net.JoinHostPort(host, fmt.Sprint(port)), err)
}
