package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// planes is a governance cluster of three nodes and two regions of three nodes that follow its
// feed: "eu" directly, "us" through a replayProxy that duplicates, replays and cuts.
type planes struct {
	t     *testing.T
	g     *governancetest.Cluster
	eu    *regiontest.Region
	us    *regiontest.Region
	proxy *replayProxy

	mu      sync.Mutex // guards clients and wraps
	clients map[int]kv1.GovernanceServiceClient
	wraps   map[string]kv1.WrapServiceClient // by region, node, tenant and service
}

// wrapClient returns a (cached) wrap-service client of node i of r, calling as tenant/service: a
// new certificate and handshake per call would cost more than the calls under -race.
func (p *planes) wrapClient(r *regiontest.Region, i int, tenant, service string) kv1.WrapServiceClient {
	key := r.Cfgs[i].Region + "/" + r.Cfgs[i].NodeID + "/" + tenant + "/" + service
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.wraps[key]
	if c == nil {
		c = r.WrapClient(i, tenant, service)
		p.wraps[key] = c
	}
	return c
}

func startPlanes(t *testing.T) *planes {
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(100*time.Millisecond))
	p := &planes{t: t, g: g, clients: map[int]kv1.GovernanceServiceClient{}, wraps: map[string]kv1.WrapServiceClient{}}
	// An event waits at most this long for an anchor that does not answer (testFlakyAnchor).
	anchorWait := regiontest.WithConfig(func(c *region.Config) { c.GovernanceAnchorWait = 2 * time.Second })
	p.eu = regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...), anchorWait)
	p.proxy = startReplayProxy(t, g.CA, "us", g.Addrs())
	p.us = regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("us"), regiontest.WithAnchor(p.eu.Anchor),
		regiontest.WithGovernance(p.proxy.Addr()), anchorWait)
	return p
}

func (p *planes) regions() map[string]*regiontest.Region {
	return map[string]*regiontest.Region{"eu": p.eu, "us": p.us}
}

// eachNode calls f for every running node of both regions.
func (p *planes) eachNode(f func(name string, r *regiontest.Region, i int)) {
	for _, name := range []string{"eu", "us"} {
		r := p.regions()[name]
		for i, n := range r.Nodes {
			if n != nil {
				f(name, r, i)
			}
		}
	}
}

func (p *planes) client(i int) kv1.GovernanceServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.clients[i]
	if c == nil {
		c = p.g.Client(i)
		p.clients[i] = c
	}
	return c
}

// gov runs an operator call against governance, the leader first, retrying on any node while
// governance is unavailable (a call that may have committed is retried with the same request id
// by the caller's closure). It fails the test after a minute.
func (p *planes) gov(what string, call func(ctx context.Context, c kv1.GovernanceServiceClient) error) {
	p.t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		i := p.g.Leader()
		if i < 0 || attempt%2 == 1 {
			i = attempt % len(p.g.Cfgs)
		}
		if p.g.Nodes[i] == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		last = call(ctx, p.client(i))
		cancel()
		if last == nil {
			return
		}
		switch status.Code(last) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
			t := time.NewTimer(50 * time.Millisecond)
			<-t.C
			continue
		}
		p.t.Fatalf("%s: %v", what, last)
	}
	p.t.Fatalf("%s: still failing after a minute: %v", what, last)
}

// createTenant creates a tenant in both regions with its services, through governance, and waits
// until every node of both regions has them.
func (p *planes) createTenant(tenant string, services ...string) {
	p.t.Helper()
	p.createTenantOn(tenant, p.eu.Anchor, services...)
}

// createTenantOn is createTenant with the tenant's root key at anchorURI.
func (p *planes) createTenantOn(tenant, anchorURI string, services ...string) {
	p.t.Helper()
	id := governancetest.RequestID()
	p.gov("create tenant "+tenant, func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: tenant, AnchorUri: anchorURI, Regions: []string{"eu", "us"}, OwnerPublicKey: p.g.Owner.Public})
		return err
	})
	p.createServices(tenant, services...)
}

// createServices creates services of a tenant through governance and waits until every node of
// both regions has them.
func (p *planes) createServices(tenant string, services ...string) {
	p.t.Helper()
	for _, s := range services {
		id := governancetest.RequestID()
		p.gov("create service "+s, func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			_, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: tenant, Service: s})
			return err
		})
	}
	p.waitEveryNode(tenant+" and its services on every node", func(n *region.Node) bool {
		for _, s := range services {
			if _, err := n.State().Usable(tenant, s, 0, fsm.OpWrap); err != nil {
				return false
			}
		}
		return true
	})
}

// waitEveryNode waits until cond holds on every running node of both regions.
func (p *planes) waitEveryNode(what string, cond func(n *region.Node) bool) {
	p.t.Helper()
	clustertest.Eventually(p.t, 60*time.Second, what, func() bool {
		ok := true
		p.eachNode(func(_ string, r *regiontest.Region, i int) {
			if ok && !cond(r.Nodes[i]) {
				ok = false
			}
		})
		return ok
	})
}

// wrapEverywhere wraps one data key per node of both regions as tenant/service and returns the
// blobs by node, with the plaintexts.
type wrapped struct {
	region string
	node   int
	blob   []byte
	plain  []byte
}

func (p *planes) wrapEverywhere(tenant, service string) []wrapped {
	p.t.Helper()
	var out []wrapped
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		plain := bytes.Repeat([]byte{byte(len(out) + 1)}, 32)
		var resp *kv1.WrapResponse
		var err error
		c := p.wrapClient(r, i, tenant, service)
		clustertest.Eventually(p.t, 20*time.Second, "a wrap on "+name+"/"+r.Cfgs[i].NodeID, func() bool {
			resp, err = c.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: tenant, Service: service}, Plaintext: plain})
			return err == nil
		})
		out = append(out, wrapped{region: name, node: i, blob: resp.GetBlob(), plain: plain})
	})
	return out
}

// governanceLog reads governance's event log for region, as the feed sees it, up to head.
func (p *planes) governanceLog(regionName string, head uint64) []*kv1.RevocationEvent {
	p.t.Helper()
	var events []*kv1.RevocationEvent
	ld := p.g.WaitLeader()
	// Governance serves a region's feed only to the voters of its configuration.
	c := p.g.NodeClient(ld, regionName, p.regions()[regionName].Cfgs[0].NodeID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: regionName})
	if err != nil {
		p.t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			p.t.Fatalf("reading governance's log: %v", err)
		}
		events = append(events, msg.GetEvents()...)
		if msg.GetHeadCursor() >= head {
			return events
		}
	}
}

// head returns governance's head cursor.
func (p *planes) head() uint64 {
	p.t.Helper()
	var head uint64
	p.gov("status", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		s, err := c.Status(ctx, &kv1.GovernanceStatusRequest{})
		head = s.GetHeadCursor()
		return err
	})
	return head
}

// checkExactlyOnce compares every node's revocation log with governance's log for its region:
// the governance events must appear once each, in cursor order, with the same event ids. It
// returns the number of events compared per region.
func (p *planes) checkExactlyOnce() map[string]int {
	p.t.Helper()
	head := p.head()
	counts := map[string]int{}
	for name, r := range p.regions() {
		want := p.governanceLog(name, head)
		counts[name] = len(want)
		var last uint64
		if len(want) > 0 {
			last = want[len(want)-1].GetCursor()
		}
		clustertest.Eventually(p.t, 60*time.Second, "region "+name+" applying governance's log", func() bool {
			for _, n := range r.Nodes {
				if n != nil && n.State().GovernanceCursor() < last {
					return false
				}
			}
			return true
		})
		for i, n := range r.Nodes {
			if n == nil {
				continue
			}
			var got []fsm.Revocation
			for _, rv := range n.State().RevocationLog(0) {
				if rv.Cursor != 0 {
					got = append(got, rv)
				}
			}
			if len(got) != len(want) {
				p.t.Fatalf("%s/%s applied %d governance events, governance sent %d", name, r.Cfgs[i].NodeID, len(got), len(want))
			}
			for j := range want {
				if got[j].Cursor != want[j].GetCursor() || got[j].EventID != want[j].GetEventId() {
					p.t.Fatalf("%s/%s: event %d is cursor %d (%s), governance's is cursor %d (%s)", name, r.Cfgs[i].NodeID, j,
						got[j].Cursor, got[j].EventID, want[j].GetCursor(), want[j].GetEventId())
				}
			}
		}
	}
	return counts
}

// auditLines returns the lines of node i's audit log that contain every one of parts.
func auditLines(t *testing.T, r *regiontest.Region, i int, parts ...string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.Cfgs[i].DataDir, "audit.log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
next:
	for _, line := range strings.Split(string(b), "\n") {
		for _, part := range parts {
			if !strings.Contains(line, part) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}
