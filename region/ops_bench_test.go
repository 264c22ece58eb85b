package region_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// BenchmarkOps drives one node of a three-node in-process region (real gRPC with mutual TLS on
// loopback) with unary Wrap, Unwrap and GenerateDataKey, with their batch forms of 256 items and
// with the packed forms of 256 (PackedWrap, PackedUnwrap, PackedGenerateDataKey), from a fixed
// number of callers that each keep one call in flight. b.N counts calls; it reports items per
// second and the p50 and p99 of call latency. The load generator shares the machine's cores with
// the region, as `krypton bench -spawn 3` does. Profile with
//
//	go test -run '^$' -bench 'Ops/wrap/callers=16' -benchtime 20000x -cpuprofile cpu.out ./region/
//
// and compare changes with benchstat over -count 6 runs.
func BenchmarkOps(b *testing.B) {
	r := regiontest.Start(b, 3)
	ctx := context.Background()
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "k", Tenant: "acme", Service: "payments"}); err != nil {
		b.Fatal(err)
	}
	ref := &kv1.KeyRef{Tenant: "acme", Service: "payments"}
	node := r.Followers()[0]
	client := r.WrapClient(node, "acme", "payments")
	plaintext := make([]byte, 32)
	for i := range plaintext {
		plaintext[i] = byte(i + 1)
	}
	wrapReq := &kv1.WrapRequest{Key: ref, Plaintext: plaintext, Context: []byte("bench")}
	var blob []byte
	clustertest.Eventually(b, 10*time.Second, "a first wrap", func() bool {
		resp, err := client.Wrap(ctx, wrapReq)
		blob = resp.GetBlob()
		return err == nil
	})
	batch := &kv1.BatchWrapRequest{}
	for range 256 {
		batch.Items = append(batch.Items, wrapReq)
	}
	// BatchUnwrap opens the blobs of one BatchWrap, as a gateway's would be.
	wrapped, err := client.BatchWrap(ctx, batch)
	if err != nil {
		b.Fatal(err)
	}
	batchUnwrap := &kv1.BatchUnwrapRequest{}
	for _, res := range wrapped.GetResults() {
		batchUnwrap.Items = append(batchUnwrap.Items, &kv1.UnwrapRequest{Blob: res.GetValue().GetBlob(), Context: []byte("bench")})
	}
	batchDataKey := &kv1.BatchGenerateDataKeyRequest{}
	for range 256 {
		batchDataKey.Items = append(batchDataKey.Items, &kv1.GenerateDataKeyRequest{Key: ref, Context: []byte("bench")})
	}
	// The packed forms of the same three batches: one key, the items as repeated bytes.
	packedWrap := &kv1.PackedWrapRequest{Key: ref, Contexts: [][]byte{[]byte("bench")}}
	for range 256 {
		packedWrap.Plaintexts = append(packedWrap.Plaintexts, plaintext)
	}
	packedUnwrap := &kv1.PackedUnwrapRequest{Contexts: [][]byte{[]byte("bench")}}
	for _, item := range batchUnwrap.Items {
		packedUnwrap.Blobs = append(packedUnwrap.Blobs, item.GetBlob())
	}
	packedDataKey := &kv1.PackedGenerateDataKeyRequest{Key: ref, Count: 256, Contexts: [][]byte{[]byte("bench")}}
	ops := []struct {
		name  string
		items int
		call  func() error
	}{
		{"wrap", 1, func() error { _, err := client.Wrap(ctx, wrapReq); return err }},
		{"unwrap", 1, func() error {
			_, err := client.Unwrap(ctx, &kv1.UnwrapRequest{Blob: blob, Context: []byte("bench")})
			return err
		}},
		{"datakey", 1, func() error {
			_, err := client.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: ref, Context: []byte("bench")})
			return err
		}},
		{"batchwrap256", 256, func() error { _, err := client.BatchWrap(ctx, batch); return err }},
		{"batchunwrap256", 256, func() error { _, err := client.BatchUnwrap(ctx, batchUnwrap); return err }},
		{"batchdatakey256", 256, func() error { _, err := client.BatchGenerateDataKey(ctx, batchDataKey); return err }},
		{"packedwrap256", 256, func() error { _, err := client.PackedWrap(ctx, packedWrap); return err }},
		{"packedunwrap256", 256, func() error { _, err := client.PackedUnwrap(ctx, packedUnwrap); return err }},
		{"packeddatakey256", 256, func() error { _, err := client.PackedGenerateDataKey(ctx, packedDataKey); return err }},
	}
	for _, op := range ops {
		for _, callers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/callers=%d", op.name, callers), func(b *testing.B) {
				driveCalls(b, callers, op.items, op.call)
			})
		}
	}
}

// driveCalls makes b.N calls of call from callers goroutines and reports items/s, p50 and p99.
func driveCalls(b *testing.B, callers, items int, call func() error) {
	var left atomic.Int64
	left.Store(int64(b.N))
	hists := make([]*hdrhistogram.Histogram, callers)
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for c := range callers {
		h := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
		hists[c] = h
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				t0 := time.Now()
				if err := call(); err != nil {
					b.Error(err)
					return
				}
				_ = h.RecordValue(time.Since(t0).Microseconds())
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	all := hdrhistogram.New(1, int64(10*time.Second/time.Microsecond), 3)
	for _, h := range hists {
		all.Merge(h)
	}
	b.ReportMetric(float64(b.N*items)/elapsed.Seconds(), "items/s")
	b.ReportMetric(float64(all.ValueAtQuantile(50)), "p50-µs")
	b.ReportMetric(float64(all.ValueAtQuantile(99)), "p99-µs")
	// CPU time of the whole process (region and load generator) per call: what two cores can
	// serve at most is 2 s / cpu-µs/op, and unlike throughput it holds still on a shared machine.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
