package fsm

import (
	"bytes"
	"fmt"
	"testing"
)

// benchState builds tenants × services × versions key versions.
func benchState(b *testing.B, tenants, services, versions int) *State {
	s := NewState(Options{})
	var idx uint64
	apply := func(c Command) {
		idx++
		if _, err := s.Apply(idx, Entry{At: int64(idx), Command: c}); err != nil {
			b.Fatal(err)
		}
	}
	sealed := bytes.Repeat([]byte{0xa5}, 60) // a sealed 32-byte key: salt, nonce, tag
	for t := range tenants {
		tn := fmt.Sprintf("tenant-%04d", t)
		apply(CreateTenant{Tenant: tn, Anchor: "awskms://alias/" + tn + "?region=eu-west-1", SealedL2: sealed})
		for sv := range services {
			sn := fmt.Sprintf("service-%04d", sv)
			apply(CreateService{Tenant: tn, Service: sn, SealedL3: sealed, SealedBy: 1})
			for v := 2; v <= versions; v++ {
				apply(RotateServiceKey{Tenant: tn, Service: sn, Version: uint32(v), SealedL3: sealed, SealedBy: 1})
			}
		}
	}
	return s
}

// BenchmarkUsable is the wrap hot path: one check per wrap or unwrap.
func BenchmarkUsable(b *testing.B) {
	s := benchState(b, 100, 10, 10)
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Usable("tenant-0042", "service-0007", 0, OpWrap); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Usable("tenant-0042", "service-0007", 3, OpUnwrap); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkApplyRotateServiceKey measures Apply of a rotation with a request
// id: "apply" on a decoded entry, "decode+apply" from log bytes, as
// FSM.Apply does.
func BenchmarkApplyRotateServiceKey(b *testing.B) {
	for _, decode := range []bool{false, true} {
		name := "apply"
		if decode {
			name = "decode+apply"
		}
		b.Run(name, func(b *testing.B) {
			s := benchState(b, 100, 10, 1)
			sealed := bytes.Repeat([]byte{0xa5}, 60)
			idx := s.AppliedIndex()
			entries := make([]Entry, b.N)
			data := make([][]byte, b.N)
			for i := range entries {
				v := uint32(i + 2)
				entries[i] = Entry{RequestID: fmt.Sprint("req-", v), At: int64(v),
					Command: RotateServiceKey{Tenant: "tenant-0042", Service: "service-0007", Version: v, SealedL3: sealed, SealedBy: 1}}
				data[i], _ = Encode(entries[i])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				e := entries[i]
				if decode {
					var err error
					if e, err = Decode(data[i]); err != nil {
						b.Fatal(err)
					}
				}
				idx++
				if _, err := s.Apply(idx, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSnapshotRestore writes and restores 100,000 key versions
// (100 tenants × 100 services × 10 versions).
func BenchmarkSnapshotRestore(b *testing.B) {
	s := benchState(b, 100, 100, 10)
	var buf bytes.Buffer
	b.Run("persist", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			if err := s.WriteSnapshot(&buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(buf.Len()), "bytes")
	})
	b.Run("restore", func(b *testing.B) {
		r := NewState(Options{})
		for b.Loop() {
			if err := r.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
		if r.Hash() != s.Hash() {
			b.Fatal("restored state differs")
		}
	})
}
