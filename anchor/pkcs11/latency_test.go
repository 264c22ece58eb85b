package pkcs11

import (
	"context"
	"crypto/rand"
	"os"
	"slices"
	"testing"
	"time"
)

// TestLatency measures Seal and Unseal against SoftHSM2, one call at a
// time (the find-by-label included). It runs only when asked:
//
//	KRYPTON_PKCS11_LATENCY=1 go test -run TestLatency -v ./anchor/pkcs11/
func TestLatency(t *testing.T) {
	if os.Getenv("KRYPTON_PKCS11_LATENCY") != "1" {
		t.Skip("set KRYPTON_PKCS11_LATENCY=1 to measure")
	}
	p := openNew(t, Options{})
	ctx := context.Background()
	const n = 500
	k := make([]byte, 32)
	rand.Read(k)
	seal, unseal := make([]time.Duration, n), make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		sealed, err := p.Seal(ctx, k, ac)
		seal[i] = time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		if _, err := p.Unseal(ctx, sealed, ac); err != nil {
			t.Fatal(err)
		}
		unseal[i] = time.Since(start)
	}
	for name, d := range map[string][]time.Duration{"seal": seal, "unseal": unseal} {
		slices.Sort(d)
		t.Logf("%s: median %v, p99 %v over %d calls", name, d[n/2], d[n*99/100], n)
	}
}
