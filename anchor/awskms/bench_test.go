package awskms_test

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkLatency measures Seal and Unseal against local-kms in-process
// and reports median and p99 per call:
//
//	go test -run '^$' -bench Latency -benchtime 500x ./anchor/awskms
func BenchmarkLatency(b *testing.B) {
	h := newHarness(b)
	p := h.openNew(b)
	defer p.Close()
	ctx := context.Background()
	seal := make([]time.Duration, 0, b.N)
	unseal := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		sealed, err := p.Seal(ctx, key32(), ac)
		t1 := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Unseal(ctx, sealed, ac); err != nil {
			b.Fatal(err)
		}
		seal = append(seal, t1.Sub(t0))
		unseal = append(unseal, time.Since(t1))
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), name+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), name+"-p99-µs")
	}
	report("seal", seal)
	report("unseal", unseal)
}
