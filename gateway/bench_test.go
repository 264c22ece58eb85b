package gateway_test

import (
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/wrap"
)

// BenchmarkGenerateDataKey measures data keys made through an in-process gateway against a
// three-node region on loopback, from 64 goroutines, with batching on and off. (krypton bench
// -spawn 3 -spawn-gateway measures the same through the gRPC front end.)
func BenchmarkGenerateDataKey(b *testing.B) {
	r := regiontest.Start(b, 3)
	setupTenant(b, r, "acme", "payments")
	for _, bc := range []struct {
		name string
		size int
		wait time.Duration
	}{{"batched", 128, 500 * time.Microsecond}, {"unbatched", 1, 0}} {
		b.Run(bc.name, func(b *testing.B) {
			g := startGateway(b, r, "acme", "payments", func(c *gateway.Config) {
				c.BatchSize, c.BatchWait = bc.size, bc.wait
				c.Logger = nil
			})
			if _, _, _, err := g.GenerateDataKey(ctxT(b), wrap.KeyID{}, nil); err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(32) // 64 goroutines on two cores
			b.ResetTimer()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				ctx := ctxT(b)
				for pb.Next() {
					if _, _, _, err := g.GenerateDataKey(ctx, wrap.KeyID{}, []byte("bench")); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportCPU(b, cpu0)
		})
	}
}

// BenchmarkUnwrap measures data keys opened through an in-process gateway (cache off, batching
// on) against a three-node region on loopback, from 64 goroutines: every Unwrap goes to the
// region in a batch.
func BenchmarkUnwrap(b *testing.B) {
	r := regiontest.Start(b, 3)
	setupTenant(b, r, "acme", "payments")
	g := startGateway(b, r, "acme", "payments", func(c *gateway.Config) { c.Logger = nil })
	const pool = 256
	blobs := make([][]byte, pool)
	for i := range blobs {
		_, blob, _, err := g.GenerateDataKey(ctxT(b), wrap.KeyID{}, []byte("bench"))
		if err != nil {
			b.Fatal(err)
		}
		blobs[i] = blob
	}
	var next atomic.Int64
	b.SetParallelism(32) // 64 goroutines on two cores
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		ctx := ctxT(b)
		for pb.Next() {
			pt, _, err := g.Unwrap(ctx, blobs[next.Add(1)%pool], []byte("bench"))
			if err != nil {
				b.Error(err)
				return
			}
			clear(pt)
		}
	})
	reportCPU(b, cpu0)
}

// reportCPU reports the CPU time the whole process (region, gateway and callers) used per
// operation since cpu0: what two cores can serve at most is 2 s / cpu-µs/op, and unlike ns/op it
// holds still on a shared machine.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGenerateDataKeyFramed measures data keys made through the Unix socket's framed
// protocol (one connection, 64 goroutines) against a three-node region on loopback: the
// front end's cost on top of BenchmarkGenerateDataKey/batched.
func BenchmarkGenerateDataKeyFramed(b *testing.B) {
	r := regiontest.Start(b, 3)
	setupTenant(b, r, "acme", "payments")
	g := startGateway(b, r, "acme", "payments", func(c *gateway.Config) { c.Logger = nil })
	fc, err := gateway.DialFramed(ctxT(b), g.UnixSocket())
	if err != nil {
		b.Fatal(err)
	}
	defer fc.Close()
	if _, _, _, err := fc.GenerateDataKey(ctxT(b), wrap.KeyID{}, nil); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(32) // 64 goroutines on two cores
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		ctx := ctxT(b)
		for pb.Next() {
			pt, _, _, err := fc.GenerateDataKey(ctx, wrap.KeyID{}, []byte("bench"))
			if err != nil {
				b.Error(err)
				return
			}
			clear(pt)
		}
	})
	reportCPU(b, cpu0)
}
