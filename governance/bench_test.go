package governance_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// BenchmarkRevokeWait measures governance's share of a revocation's
// latency: Revoke with wait, on a cluster of n nodes, while a stand-in for
// a region's leader follows the feed and reports each event as soon as it
// arrives (no region fence). One op is one revocation, from the call to its
// return after the report.
//
//	go test -run '^$' -bench RevokeWait -benchtime 200x ./governance/
func BenchmarkRevokeWait(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			g := governancetest.Start(b, n, governancetest.WithHeartbeat(time.Second))
			g.CreateTenant("acme", devAnchor, "eu")
			leader := g.WaitLeader()
			op := g.Client(leader)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			defer func() { cancel(); wg.Wait() }()
			if _, err := op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "svc", Tenant: "acme", Service: "billing"}); err != nil {
				b.Fatal(err)
			}
			feed := g.NodeClient((leader+1)%n, "eu", "eu-1")
			s, err := feed.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "eu"})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					m, err := s.Recv()
					if err != nil {
						return
					}
					if _, err := feed.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: m.GetHeadCursor()}); err != nil {
						return
					}
				}
			}()
			b.ResetTimer()
			for i := range b.N {
				_, err := op.Revoke(ctx, &kv1.RevokeRequest{RequestId: fmt.Sprintf("b-%d", i), Reason: "bench", Wait: true,
					Target: &kv1.KeyScope{Tenant: "acme", Service: "billing", Version: uint32(i + 1)}})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
