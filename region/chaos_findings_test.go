package region_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Regression tests for the chaos harness's findings (jepsen/DESIGN.md, "findings").

// TestRotateKeyReportsItsOwnVersion: concurrent rotations each report the version they made, so
// every new version is reported exactly once, and a retry with the same request id reports the
// first call's version even after later rotations.
func TestRotateKeyReportsItsOwnVersion(t *testing.T) {
	t.Parallel()
	r := setup(t)
	const callers = 6
	var (
		mu       sync.Mutex
		reported = map[uint32][]string{}
		wg       sync.WaitGroup
	)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("rot-%d", i)
			k, err := r.AdminClient(i%len(r.Nodes)).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: id, Tenant: "acme", Service: "payments"})
			if err != nil {
				// A rotation that lost a race twice is refused and made nothing.
				t.Logf("%s: %v", id, err)
				return
			}
			mu.Lock()
			reported[k.GetCurrentVersion()] = append(reported[k.GetCurrentVersion()], id)
			mu.Unlock()
		}()
	}
	wg.Wait()
	k, err := r.AdminClient(r.Leader()).DescribeKey(ctxT(t), &kv1.DescribeKeyRequest{Tenant: "acme", Service: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	if len(reported) == 0 {
		t.Fatal("no rotation succeeded")
	}
	for v := uint32(2); v <= k.GetCurrentVersion(); v++ {
		if ids := reported[v]; len(ids) != 1 {
			t.Errorf("version %d reported to %v, want exactly one caller", v, ids)
		}
	}
	if len(reported) != int(k.GetCurrentVersion())-1 {
		t.Errorf("reported versions %v, current %d", reported, k.GetCurrentVersion())
	}
	// A retry of each acknowledged rotation, after all of them, on another node, returns the
	// first result.
	for v, ids := range reported {
		k, err := r.AdminClient(r.Followers()[0]).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: ids[0], Tenant: "acme", Service: "payments"})
		if err != nil {
			t.Fatalf("retry of %s: %v", ids[0], err)
		}
		if k.GetCurrentVersion() != v {
			t.Errorf("retry of %s reports version %d, the first call reported %d", ids[0], k.GetCurrentVersion(), v)
		}
		var got []uint32
		for _, kv := range k.GetVersions() {
			got = append(got, kv.GetVersion())
		}
		if want := seq(v); !slices.Equal(got, want) {
			t.Errorf("retry of %s lists versions %v, want %v", ids[0], got, want)
		}
	}
}

func seq(n uint32) []uint32 {
	var out []uint32
	for v := uint32(1); v <= n; v++ {
		out = append(out, v)
	}
	return out
}
