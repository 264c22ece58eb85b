package file_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor"
)

// BenchmarkLatency measures Seal and Unseal of a 32-byte tenant key under a development root key
// and reports median and p99 per call, as the cloud and HSM providers' benchmarks do, so that the
// providers compare on one scale:
//
//	go test -run '^$' -bench Latency -benchtime 2000x ./anchor/file
func BenchmarkLatency(b *testing.B) {
	path := filepath.Join(b.TempDir(), "anchor", "root.key")
	p, err := anchor.Open(context.Background(), "file://"+path, anchor.Options{Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 3}
	key := make([]byte, 32)
	seal := make([]time.Duration, 0, b.N)
	unseal := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		rand.Read(key)
		t0 := time.Now()
		sealed, err := p.Seal(ctx, key, ac)
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
		b.ReportMetric(float64(d[len(d)/2].Nanoseconds())/1e3, name+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds())/1e3, name+"-p99-µs")
	}
	report("seal", seal)
	report("unseal", unseal)
}
