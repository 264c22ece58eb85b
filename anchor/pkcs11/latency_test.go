package pkcs11

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"
)

// BenchmarkLatency measures Seal and Unseal against SoftHSM2, one call at a time (the key's
// find-by-label included), and reports median and p99 per call, on the scale of the other
// providers' benchmarks:
//
//	go test -run '^$' -bench Latency -benchtime 500x ./anchor/pkcs11/
func BenchmarkLatency(b *testing.B) {
	if env.skip != "" {
		b.Skip(env.skip)
	}
	p := openNew(b, Options{})
	ctx := context.Background()
	k := make([]byte, 32)
	seal := make([]time.Duration, 0, b.N)
	unseal := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		rand.Read(k)
		t0 := time.Now()
		sealed, err := p.Seal(ctx, k, ac)
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
	for name, d := range map[string][]time.Duration{"seal": seal, "unseal": unseal} {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Nanoseconds())/1e3, name+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds())/1e3, name+"-p99-µs")
	}
}
