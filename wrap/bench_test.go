package wrap

import (
	"bytes"
	"testing"

	"github.com/awnumar/memguard"
)

func benchKDFs(b *testing.B, f func(b *testing.B, kdf KDF)) {
	for _, kdf := range kdfs {
		b.Run(kdf.String(), func(b *testing.B) { f(b, kdf) })
	}
}

// wrapRandom is Wrap with a chosen KDF and a fresh random salt, as Wrap
// does it.
func wrapRandom(l3 *ServiceKey, dk *DataKey, ctx []byte, kdf KDF) ([]byte, error) {
	salt, err := randomSalt()
	if err != nil {
		return nil, err
	}
	return l3.wrap(dk, ctx, kdf, &salt)
}

func BenchmarkWrap(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	dk := NewDataKey()
	ctx := []byte("bucket=invoices/2026")
	benchKDFs(b, func(b *testing.B, kdf KDF) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := wrapRandom(l3, dk, ctx, kdf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkUnwrap(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	ctx := []byte("bucket=invoices/2026")
	benchKDFs(b, func(b *testing.B, kdf KDF) {
		blob, err := wrapRandom(l3, NewDataKey(), ctx, kdf)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l3.Unwrap(blob, ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWrapBatch256 reports ns per batch of 256; divide by 256 for
// the cost per data key.
func BenchmarkWrapBatch256(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	dks := make([]*DataKey, 256)
	ctxs := make([][]byte, 256)
	for i := range dks {
		dks[i] = NewDataKey()
		ctxs[i] = []byte("bucket=invoices/2026")
	}
	benchKDFs(b, func(b *testing.B, kdf KDF) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l3.wrapBatch(dks, ctxs, kdf, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkUnwrapBatch256(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	dks := make([]*DataKey, 256)
	for i := range dks {
		dks[i] = NewDataKey()
	}
	blobs, err := l3.WrapBatch(dks, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l3.UnwrapBatch(blobs, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGenerateDataKey is what a node does for GenerateDataKey: a
// fresh L4 and its wrap.
func BenchmarkGenerateDataKey(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	ctx := []byte("bucket=invoices/2026")
	b.ReportAllocs()
	for b.Loop() {
		dk := NewDataKey()
		if _, err := l3.Wrap(dk, ctx); err != nil {
			b.Fatal(err)
		}
		dk.Destroy()
	}
}

func BenchmarkDerive(b *testing.B) {
	k, _ := randomLockedKey(l3ID)
	defer k.destroy()
	var salt [SaltSize]byte
	var out [KeySize]byte
	benchKDFs(b, func(b *testing.B, kdf KDF) {
		b.ReportAllocs()
		for b.Loop() {
			if err := k.derive(&out, kdf, labelWrapDataKey, &salt); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEnclaveOpen is what holding a hot key in a memguard Enclave
// would cost per use: open (decrypt into a fresh LockedBuffer) and destroy.
func BenchmarkEnclaveOpen(b *testing.B) {
	e := memguard.NewEnclaveRandom(KeySize)
	b.ReportAllocs()
	for b.Loop() {
		lb, err := e.Open()
		if err != nil {
			b.Fatal(err)
		}
		_ = lb.Bytes()[0]
		lb.Destroy()
	}
}

// BenchmarkLockedBufferHold is the per-use cost of a key held in a
// LockedBuffer: take the read lock and read the bytes, as derive does.
func BenchmarkLockedBufferHold(b *testing.B) {
	k, _ := randomLockedKey(l3ID)
	defer k.destroy()
	b.ReportAllocs()
	var sink byte
	for b.Loop() {
		buf, err := k.acquire()
		if err != nil {
			b.Fatal(err)
		}
		sink ^= buf[0]
		k.release()
	}
	_ = sink
}

// BenchmarkNewServiceKey is the cost of making (and destroying) one
// LockedBuffer-backed key, which is what one per L4 would cost.
func BenchmarkNewServiceKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		k, err := NewServiceKey(l3ID)
		if err != nil {
			b.Fatal(err)
		}
		k.Destroy()
	}
}

func BenchmarkNewDataKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		NewDataKey().Destroy()
	}
}

// BenchmarkUnaryForms compares the region's unary forms on bytes (WrapKey, UnwrapKey) with Wrap
// and Unwrap on a DataKey, with the copy the region's answer needed of the latter (Bytes).
func BenchmarkUnaryForms(b *testing.B) {
	l3 := newServiceKey(b, l3ID)
	ctx := []byte("bucket=invoices/2026")
	plaintext := NewDataKey().Bytes()
	blob, err := l3.WrapKey(plaintext, ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("wrap/DataKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dk, err := DataKeyFromBytes(bytes.Clone(plaintext))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := l3.Wrap(dk, ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wrap/WrapKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l3.WrapKey(bytes.Clone(plaintext), ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unwrap/DataKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dk, err := l3.Unwrap(blob, ctx)
			if err != nil {
				b.Fatal(err)
			}
			_ = dk.Bytes()
			dk.Destroy()
		}
	})
	b.Run("unwrap/UnwrapKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l3.UnwrapKey(blob, ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
