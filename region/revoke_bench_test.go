package region_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// BenchmarkRevokeToRefusal revokes one key version per iteration through a follower's admin API
// (AdminService.RevokeKey, which returns once the revocation is fenced on every voter) on an
// in-process three-node region, and reports the p50 and p99 of two delays: until the last node's
// state machine refuses the version (polled every 100 µs on every node), and until RevokeKey
// returns. Each iteration first rotates the service to make a new version to revoke.
//
// It runs with the test regions' Raft commit timeout (5 ms) and with the production default
// (cluster.DefaultConfig): followers learn that an entry committed on the next append the leader
// sends them, at the latest one commit timeout later when no other write is under way, so the
// commit timeout bounds how soon an idle region's followers apply a revocation.
//
//	go test -run '^$' -bench RevokeToRefusal -benchtime 200x ./region/
func BenchmarkRevokeToRefusal(b *testing.B) {
	for _, ct := range []struct {
		name string
		d    time.Duration
	}{{"commit=5ms", 5 * time.Millisecond}, {"commit=default", cluster.DefaultConfig().CommitTimeout}} {
		b.Run(ct.name, func(b *testing.B) { benchmarkRevokeToRefusal(b, ct.d) })
	}
}

func benchmarkRevokeToRefusal(b *testing.B, commitTimeout time.Duration) {
	r := regiontest.Start(b, 3, regiontest.WithConfig(func(c *region.Config) {
		tune := c.Tune
		c.Tune = func(cc *cluster.Config) {
			if tune != nil {
				tune(cc)
			}
			cc.CommitTimeout = commitTimeout
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	admin := r.AdminClient(r.Followers()[0])
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "k", Tenant: "acme", Service: "payments"}); err != nil {
		b.Fatal(err)
	}
	refused := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	returned := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		key, err := admin.RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "rot-" + strconv.Itoa(i), Tenant: "acme", Service: "payments"})
		if err != nil {
			b.Fatal(err)
		}
		v := key.GetCurrentVersion()
		for _, n := range r.Nodes { // every node has the version before it is revoked
			for _, err := n.State().Usable("acme", "payments", v, fsm.OpUnwrap); err != nil; _, err = n.State().Usable("acme", "payments", v, fsm.OpUnwrap) {
				time.Sleep(100 * time.Microsecond)
			}
		}
		b.StartTimer()
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "rev-" + strconv.Itoa(i), Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: v}, Reason: "test"})
			done <- err
		}()
		for _, n := range r.Nodes {
			for {
				if _, err := n.State().Usable("acme", "payments", v, fsm.OpUnwrap); err != nil {
					break
				}
				time.Sleep(100 * time.Microsecond) // a benchmark's poll, not a test's wait
			}
		}
		_ = refused.RecordValue(time.Since(start).Microseconds())
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		_ = returned.RecordValue(time.Since(start).Microseconds())
	}
	b.StopTimer()
	b.ReportMetric(float64(refused.ValueAtQuantile(50))/1000, "refused-p50-ms")
	b.ReportMetric(float64(refused.ValueAtQuantile(99))/1000, "refused-p99-ms")
	b.ReportMetric(float64(returned.ValueAtQuantile(50))/1000, "returned-p50-ms")
	b.ReportMetric(float64(returned.ValueAtQuantile(99))/1000, "returned-p99-ms")
}
