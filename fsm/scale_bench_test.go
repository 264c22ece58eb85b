package fsm

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkScale loads a state at three sizes, each ten times the last, up to
// the performance issue's 100,000 tenants holding 1,000,000 service key
// versions (tenants × 2 services × 5 versions), and reports per key version
// what a region pays for it: snapshot bytes, persist and restore time, and
// live heap. Linear growth shows as flat per-version figures across sizes.
//
//	go test -run '^$' -bench Scale -benchtime 1x ./fsm/
func BenchmarkScale(b *testing.B) {
	for _, tenants := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("tenants=%d/versions=%d", tenants, tenants*10), func(b *testing.B) {
			versions := float64(tenants * 10)
			heapBefore := liveHeap()
			start := time.Now()
			s := benchState(b, tenants, 2, 5)
			load := time.Since(start)
			heap := liveHeap() - heapBefore

			var buf bytes.Buffer
			var persist, restore time.Duration
			for b.Loop() {
				buf.Reset()
				t0 := time.Now()
				if err := s.WriteSnapshot(&buf); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				r := NewState(Options{})
				if err := r.Restore(bytes.NewReader(buf.Bytes())); err != nil {
					b.Fatal(err)
				}
				persist += t1.Sub(t0)
				restore += time.Since(t1)
				if r.Hash() != s.Hash() {
					b.Fatal("restored state differs")
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(buf.Len())/versions, "snapshot-B/version")
			b.ReportMetric(float64(persist.Nanoseconds())/n/versions, "persist-ns/version")
			b.ReportMetric(float64(restore.Nanoseconds())/n/versions, "restore-ns/version")
			b.ReportMetric(float64(heap)/versions, "heap-B/version")
			b.ReportMetric(float64(load.Nanoseconds())/versions, "apply-ns/version")
			b.ReportMetric(float64(buf.Len())/(1<<20), "snapshot-MiB")
			b.ReportMetric(restore.Seconds()/n, "restore-s")
			runtime.KeepAlive(s)
		})
	}
}

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
