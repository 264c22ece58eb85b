package governance_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// watcher follows the feed of one region like a region's leader would: it
// reconnects to the next governance node on any error, from the last cursor
// it saw, and records every event, failing on a duplicate or a step back.
type watcher struct {
	t       *testing.T
	clients []kv1.GovernanceServiceClient
	region  string

	mu      sync.Mutex
	events  []*kv1.RevocationEvent
	head    uint64
	dup     error
	streams int
}

func (w *watcher) run(ctx context.Context) {
	var last uint64
	for i := 0; ctx.Err() == nil; i++ {
		c := w.clients[i%len(w.clients)]
		s, err := c.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: w.region, AfterCursor: last})
		if err != nil {
			continue
		}
		w.mu.Lock()
		w.streams++
		w.mu.Unlock()
		for {
			m, err := s.Recv()
			if err != nil {
				break
			}
			w.mu.Lock()
			for _, e := range m.GetEvents() {
				if e.GetCursor() <= last && w.dup == nil {
					w.dup = fmt.Errorf("event %d after %d: duplicate or out of order", e.GetCursor(), last)
				}
				last = e.GetCursor()
				w.events = append(w.events, e)
			}
			if m.GetHeadCursor() > last {
				last = m.GetHeadCursor()
			}
			w.head = last
			w.mu.Unlock()
		}
		// Do not spin while no node answers.
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *watcher) seen() (uint64, []*kv1.RevocationEvent, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.head, append([]*kv1.RevocationEvent(nil), w.events...), w.dup
}

// retry calls f with the same request until it succeeds or fails with
// something other than UNAVAILABLE (leader moving), trying each node in
// turn: what a careful client does with ambiguous outcomes.
func retry(t *testing.T, g *governancetest.Cluster, clients []kv1.GovernanceServiceClient, f func(kv1.GovernanceServiceClient) error) {
	t.Helper()
	var err error
	clustertest.Eventually(t, 30*time.Second, "a write to succeed", func() bool {
		for i, c := range clients {
			if g.Nodes[i] == nil {
				continue
			}
			err = f(c)
			if err == nil {
				return true
			}
			if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("write failed: %v", err)
			}
		}
		return false
	})
}

// TestThreeNodeFailover kills the governance leader in the middle of a
// stream of writes: the log stays intact (every write exactly once, cursors
// gapless), writes continue under the new leader, and a watcher that
// reconnects with its last cursor loses nothing and sees no duplicate.
func TestThreeNodeFailover(t *testing.T) {
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(100*time.Millisecond))
	var ops, feeds []kv1.GovernanceServiceClient
	for i := range g.Nodes {
		ops = append(ops, g.Client(i))
		feeds = append(feeds, g.NodeClient(i, "eu", "eu-1"))
	}
	g.CreateTenant("acme", devAnchor, "eu")
	g.CreateTenant("other", devAnchor, "us")

	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{t: t, clients: feeds, region: "eu"}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	const writes = 30
	write := func(i int) {
		tenant := []string{"acme", "other"}[i%2]
		rid := fmt.Sprintf("failover-%d", i)
		retry(t, g, ops, func(c kv1.GovernanceServiceClient) error {
			cctx, cc := context.WithTimeout(ctx, 5*time.Second)
			defer cc()
			var err error
			if i%4 < 2 {
				_, err = c.LockTenant(cctx, &kv1.GovernanceLockTenantRequest{RequestId: rid, Tenant: tenant, Reason: "failover test"})
			} else {
				_, err = c.UnlockTenant(cctx, &kv1.GovernanceUnlockTenantRequest{RequestId: rid, Tenant: tenant})
			}
			return err
		})
	}
	for i := range writes / 2 {
		write(i)
	}
	old := g.WaitLeader()
	g.Kill(old)
	for i := writes / 2; i < writes; i++ {
		write(i)
	}
	leader := g.WaitLeader()
	if leader == old {
		t.Fatal("the killed node leads")
	}
	head := g.Nodes[leader].FSM().Head()
	if want := uint64(2 + writes); head != want {
		t.Fatalf("head %d, want %d: a retried write applied twice or was lost", head, want)
	}

	// Every surviving node holds the same state.
	clustertest.Eventually(t, 20*time.Second, "replicas to agree", func() bool {
		var first []byte
		for _, n := range g.Nodes {
			if n == nil {
				continue
			}
			b, _ := n.FSM().Encode()
			if first == nil {
				first = b
			} else if !bytes.Equal(first, b) {
				return false
			}
		}
		return true
	})

	// The watcher saw every eu event exactly once, in order.
	clustertest.Eventually(t, 30*time.Second, "the watcher to reach the head", func() bool {
		h, _, _ := w.seen()
		return h >= head
	})
	_, events, dup := w.seen()
	if dup != nil {
		t.Fatal(dup)
	}
	var want []uint64
	for c := uint64(1); c <= head; c++ {
		if e := g.Nodes[leader].FSM().Event(c); e.Tenant == "acme" {
			want = append(want, c)
		}
	}
	if len(events) != len(want) {
		t.Fatalf("watcher saw %d events, want %d", len(events), len(want))
	}
	for i, e := range events {
		if e.GetCursor() != want[i] || e.GetTarget().GetTenant() != "acme" {
			t.Fatalf("event %d: cursor %d tenant %s, want cursor %d", i, e.GetCursor(), e.GetTarget().GetTenant(), want[i])
		}
	}
	// Restarted, the old leader catches up with the same log.
	g.Restart(old)
	clustertest.Eventually(t, 30*time.Second, "the restarted node to catch up", func() bool {
		return g.Nodes[old].FSM().Head() == head
	})
}

// TestFollowerServesFeedAndWrites checks that reads, writes and the feed
// work through a follower (writes forwarded, feed after a barrier).
func TestFollowerServesFeedAndWrites(t *testing.T) {
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(50*time.Millisecond))
	leader := g.WaitLeader()
	f := (leader + 1) % 3
	op := g.Client(f)
	ctx := g.Context(30 * time.Second)
	if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "acme", AnchorUri: devAnchor, Regions: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"}); err != nil {
		t.Fatalf("read after write through a follower: %v", err)
	}
	feed := g.NodeClient(f, "eu", "eu-1")
	s, err := feed.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	if ev := recvEvents(t, s, 1); ev[0].GetCursor() != 1 {
		t.Fatal(ev)
	}
	// A revoke waiting on the follower wakes on a report sent to the leader.
	done := make(chan error, 1)
	go func() {
		_, err := op.Revoke(ctx, &kv1.RevokeRequest{RequestId: "r", Target: &kv1.KeyScope{Tenant: "acme"}, Reason: "test", Wait: true})
		done <- err
	}()
	ev := recvEvents(t, s, 1)[0]
	if _, err := g.NodeClient(leader, "eu", "eu-2").ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: ev.GetCursor()}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
