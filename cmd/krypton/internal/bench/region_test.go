package bench

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestRunRegion runs a short batched mixed load in each form against a real three-node region
// over gRPC with mutual TLS: every operation of both forms must succeed, item for item. It checks
// counts, never speed.
func TestRunRegion(t *testing.T) {
	r := regiontest.Start(t, 3)
	admin := r.AdminClient(r.WaitLeader())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "create-acme", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "create-acme-payments", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	var targets []Target
	for i, c := range r.Cfgs {
		targets = append(targets, Target{Name: c.RPCAddr, Client: r.WrapClient(i, "acme", "payments")})
	}
	for _, form := range []BatchForm{FormPacked, FormItems} {
		cfg := testConfig(OpMixed)
		cfg.Batch, cfg.BatchForm = 16, form
		cfg.Callers, cfg.Warmup, cfg.Duration = 4, 200*time.Millisecond, 600*time.Millisecond
		// The mixed load draws each call's operation at random: on a starved machine (a CI run
		// made 5 calls in the 0.6 s) one operation may get none. The run is made again, twice as
		// long each time, until each has some: at most 4 runs, 9 s in all.
		var res *Result
		for {
			var err error
			if res, err = Run(ctx, cfg, targets, nil); err != nil {
				t.Fatalf("%s: %v", form, err)
			}
			if everyOpCalled(res) || cfg.Duration >= 4800*time.Millisecond {
				break
			}
			t.Logf("%s: an operation got no call in %v; again for %v", form, cfg.Duration, 2*cfg.Duration)
			cfg.Duration *= 2
		}
		if res.Config.BatchForm != string(form) {
			t.Errorf("%s: the result records the form %q", form, res.Config.BatchForm)
		}
		for _, s := range res.ByOp {
			checkBalanced(t, s)
			// A busy machine may cost a region its lease for a moment: Unavailable is the
			// region's word, not a miscount; anything else is.
			for code, n := range s.Errors {
				if code != "Unavailable" {
					t.Errorf("%s %s: %d items failed with %s", form, s.Op, n, code)
				}
			}
			if s.OK == 0 || s.Ops != 16*s.Calls {
				t.Errorf("%s %s: %d calls, %d items, %d ok: want 16 items a call, some ok", form, s.Op, s.Calls, s.Ops, s.OK)
			}
		}
		// The process ran the region and the load: it used CPU in the measured time, and at most
		// all of its cores.
		if res.ProcessCPUSeconds <= 0 || res.ProcessCPUSeconds > float64(runtime.NumCPU())*res.MeasuredSeconds*1.5 || res.CPUMicrosPerOp <= 0 {
			t.Errorf("%s: process CPU %.3fs over %.1fs measured, %.2f µs per op", form, res.ProcessCPUSeconds, res.MeasuredSeconds, res.CPUMicrosPerOp)
		}
		t.Logf("%s: %s: %.0f ops/s, %.2f µs of process CPU per op", form, res.Description(), res.Total.OpsPerSecond, res.CPUMicrosPerOp)
	}
}

// everyOpCalled reports whether every operation of res was called at least once.
func everyOpCalled(res *Result) bool {
	for _, s := range res.ByOp {
		if s.Calls == 0 {
			return false
		}
	}
	return len(res.ByOp) > 0
}
