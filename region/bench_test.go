package region_test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// benchmarkWraps drives unary Wrap calls from callers goroutines, each with one request in flight,
// against the given nodes (round robin by caller), over real gRPC with mutual TLS, and reports
// throughput and latency percentiles. The load generator runs on the same two cores as the region.
func benchmarkWraps(b *testing.B, nodes []int, callers int) {
	r := regiontest.Start(b, 3)
	admin := r.AdminClient(r.Leader())
	ctx := context.Background()
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "k", Tenant: "acme", Service: "payments"}); err != nil {
		b.Fatal(err)
	}
	clients := make([]kv1.WrapServiceClient, len(nodes))
	for i, n := range nodes {
		clients[i] = r.WrapClient(n, "acme", "payments")
		// Warm the node's keyring (its first wrap fetches L2 and opens L3).
		var err error
		clustertest.Eventually(b, 10*time.Second, "a first wrap", func() bool {
			_, err = clients[i].Wrap(ctx, &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: bytes.Repeat([]byte{1}, 32)})
			return err == nil
		})
	}
	per := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := clients[c%len(clients)]
			lat := make([]time.Duration, 0, b.N/callers+1)
			for i := c; i < b.N; i += callers {
				t0 := time.Now()
				_, err := client.Wrap(ctx, &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: bytes.Repeat([]byte{byte(i) | 1}, 32)})
				if err != nil {
					b.Error(err)
					return
				}
				lat = append(lat, time.Since(t0))
			}
			per[c] = lat
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(per...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "wraps/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func BenchmarkWrapOneNode16(b *testing.B)    { benchmarkWraps(b, []int{0}, 16) }
func BenchmarkWrapThreeNodes16(b *testing.B) { benchmarkWraps(b, []int{0, 1, 2}, 16) }
func BenchmarkWrapOneNode64(b *testing.B)    { benchmarkWraps(b, []int{0}, 64) }
func BenchmarkWrapThreeNodes64(b *testing.B) { benchmarkWraps(b, []int{0, 1, 2}, 64) }
