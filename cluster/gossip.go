package cluster

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"sort"
	"strconv"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/kryptonkms/krypton/internal/netutil"
)

// nodeMeta is what every node gossips about itself. Bootstrap and the
// leader's reconcile loop decide from it alone.
type nodeMeta struct {
	ID       string            `json:"id"`
	RaftAddr string            `json:"raft"`
	Expect   int               `json:"expect,omitempty"`
	HasState bool              `json:"state,omitempty"`
	Leaving  bool              `json:"leaving,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
}

// MemberStatus is a node's gossip health. Suspicion is not reported:
// memberlist exposes it only through state its goroutines mutate, and a
// suspect node is reported alive until it is declared dead.
type MemberStatus string

// Member statuses.
const (
	StatusAlive MemberStatus = "alive"
	StatusDead  MemberStatus = "dead"
	StatusLeft  MemberStatus = "left"
)

// Member is a node as gossip sees it.
type Member struct {
	ID         string
	GossipAddr string
	RaftAddr   string
	Status     MemberStatus
	// Leaving is set while the node leaves gracefully.
	Leaving bool
	// Meta is the node's Config.Meta.
	Meta map[string]string
	// Removed is set when the replicated state holds a tombstone for the node: it was removed
	// from the configuration and stays out until an operator joins it (tombstone.go).
	Removed bool
}

// gossip owns the memberlist and the delegate callbacks.
type gossip struct {
	list *memberlist.Memberlist

	mu   sync.Mutex // guards meta, seen
	meta nodeMeta
	// seen remembers nodes that are dead or left: memberlist.Members
	// lists only live ones, and operators want to see the others.
	seen  map[string]Member
	metas map[string]nodeMeta

	// events is poked (without blocking) on every membership change so
	// that bootstrap and reconcile react at once instead of at their next
	// tick.
	events chan struct{}
}

func (g *gossip) setMeta(f func(*nodeMeta)) {
	g.mu.Lock()
	f(&g.meta)
	g.mu.Unlock()
}

// NodeMeta implements memberlist.Delegate.
func (g *gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, err := json.Marshal(g.meta)
	if err != nil || len(b) > limit {
		// Config.Validate bounds Meta, so this is a bug; an empty meta
		// makes the node invisible to bootstrap rather than wrong.
		return nil
	}
	return b
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState implement
// memberlist.Delegate; cluster sends no user messages.
func (g *gossip) NotifyMsg([]byte)                           {}
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin, NotifyLeave and NotifyUpdate implement
// memberlist.EventDelegate.
func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.note(n, false) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.note(n, true) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.note(n, false) }

// note records a node; memberlist calls the event delegate with its node
// lock held, so reading n here does not race with its updates.
func (g *gossip) note(n *memberlist.Node, gone bool) {
	m, meta := toMember(n, gone)
	g.mu.Lock()
	if g.seen == nil {
		g.seen = make(map[string]Member)
		g.metas = make(map[string]nodeMeta)
	}
	g.seen[n.Name] = m
	g.metas[n.Name] = meta
	g.mu.Unlock()
	select {
	case g.events <- struct{}{}:
	default:
	}
}

// toMember converts a node from an event. Node.State is not the node's
// current state (memberlist keeps that in a private field), so the status
// comes from the event: a departure is "left" when the node had announced
// it was leaving (Leave sets that in its metadata before it leaves gossip)
// and "dead" otherwise.
func toMember(n *memberlist.Node, gone bool) (Member, nodeMeta) {
	m := Member{
		ID:         n.Name,
		GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		Status:     StatusAlive,
	}
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err == nil && meta.ID == n.Name {
		m.RaftAddr = meta.RaftAddr
		m.Leaving = meta.Leaving
		m.Meta = meta.Tags
	} else {
		meta = nodeMeta{}
	}
	if gone {
		m.Status = StatusDead
		if meta.Leaving {
			m.Status = StatusLeft
		}
	}
	return m, meta
}

// members returns every node gossip has told us about, sorted by id, and
// the metadata of the alive ones. It works from the event delegate's
// copies only: memberlist.Members hands out pointers into state that its
// goroutines keep writing, and reading them races.
func (g *gossip) members() ([]Member, map[string]nodeMeta) {
	g.mu.Lock()
	defer g.mu.Unlock()
	list := make([]Member, 0, len(g.seen))
	metas := make(map[string]nodeMeta, len(g.seen))
	for id, m := range g.seen {
		list = append(list, m)
		if m.Status == StatusAlive {
			metas[id] = g.metas[id]
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	return list, metas
}

func newGossip(c *Cluster) (*gossip, error) {
	cfg := c.cfg
	g := &gossip{
		events: make(chan struct{}, 1),
		meta: nodeMeta{
			ID:       cfg.NodeID,
			RaftAddr: cfg.raftAdvertise(),
			Expect:   cfg.BootstrapExpect,
			Tags:     cfg.Meta,
		},
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	host, port, err := splitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, err
	}
	mc.BindAddr, mc.BindPort = host, port
	ahost, aport, err := splitHostPort(cfg.gossipAdvertise())
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(ahost); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport
	}
	overTLS := cfg.gossipOverTLS()
	if !overTLS {
		kr, err := memberlist.NewKeyring(nil, cfg.GossipKey)
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.GossipInterval = cfg.GossipInterval
	mc.ProbeInterval = cfg.GossipProbeInterval
	mc.ProbeTimeout = cfg.GossipProbeTimeout
	if cfg.GossipProbeInterval < mc.PushPullInterval/10 {
		// Fast test timings: push-pull often enough that a restarted
		// node's metadata converges within a test's patience.
		mc.PushPullInterval = 10 * cfg.GossipProbeInterval
	}
	mc.Delegate = g
	mc.Events = g
	mc.LogOutput = memberlistWriter{l: c.logger}
	mc.TCPTimeout = cfg.GossipTCPTimeout
	if mc.TCPTimeout == 0 {
		mc.TCPTimeout = DefaultGossipTCPTimeout
	}
	maxStreams, perSource := cfg.GossipMaxStreams, cfg.GossipMaxStreamsPerSource
	if maxStreams == 0 {
		maxStreams = DefaultGossipMaxStreams
	}
	if perSource == 0 {
		perSource = DefaultGossipMaxStreamsPerSource
	}
	limits := netutil.HandshakeLimits{
		Listener:            "gossip",
		MaxPending:          maxStreams,
		MaxPendingPerSource: perSource,
		HandshakeTimeout:    mc.TCPTimeout,
		Registerer:          cfg.Registerer,
	}
	var tr memberlist.Transport
	if overTLS {
		limits.HandshakeTimeout = handshakeTimeout
		tt, err := newTLSGossipTransport(c.mux, host, port, cfg.GossipAdvertise, limits, mc.TCPTimeout)
		if err != nil {
			return nil, err
		}
		mc.BindPort = tt.bindPort
		if mc.AdvertiseAddr != "" && aport == 0 {
			mc.AdvertisePort = tt.bindPort
		}
		tr = tt
	} else {
		nt, err := newNetTransport(mc, host, port, log.New(mc.LogOutput, "", 0))
		if err != nil {
			return nil, err
		}
		tr = newGossipTransport(nt, &net.TCPAddr{IP: net.ParseIP(host), Port: mc.BindPort}, limits)
	}
	mc.Transport = tr
	list, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("cluster: gossip: %w", err)
	}
	g.list = list
	return g, nil
}

func splitHostPort(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: %q: %w", s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: %q: bad port", s)
	}
	return host, p, nil
}
