package gateway

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kryptonkms/krypton/internal/pki"
)

// TestSteerHysteresis drives the pool's region moves with made-up refreshes (no node is called):
// a refresh that reaches no node of the active region moves the pool to the next serving region,
// never to one that does not serve; the preferred region draws it back only once it has served at
// every refresh for RegionFailback, a refresh it misses restarts that clock, and leaving a region
// restarts it too.
func TestSteerHysteresis(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Region, cfg.RegionAddrs = "a", []string{"127.0.0.1:1"}
	cfg.FailoverRegions = []Region{{Name: "b", Addrs: []string{"127.0.0.1:2"}}, {Name: "c", Addrs: []string{"127.0.0.1:3"}}}
	cfg.RegionFailback = time.Hour
	cfg.CertSource = pki.StaticSource(ca.Pool(), cert.TLSCertificate())
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPool(cfg, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	ep := func(region int) *endpoint {
		for _, e := range p.endpoints() {
			if e.region.index == region {
				return e
			}
		}
		t.Fatalf("no endpoint of region %d", region)
		return nil
	}
	// seen is one refresh: which regions answered, and served.
	seen := func(serving ...bool) []regionSeen {
		per := make([]regionSeen, len(serving))
		for i, s := range serving {
			ep(i).serving.Store(s)
			if s {
				per[i].answered = 1
			}
			per[i].serving = s
		}
		return per
	}
	active := func(want string) {
		t.Helper()
		if got := p.activeRegion().name; got != want {
			t.Fatalf("active region %s, want %s", got, want)
		}
		for _, r := range p.regions {
			v := 0.0
			if r.name == want {
				v = 1
			}
			if g := testutil.ToFloat64(m.active.WithLabelValues(r.name, []string{"0", "1", "2"}[r.index])); g != v {
				t.Fatalf("region_active{region=%s} = %v, want %v", r.name, g, v)
			}
		}
	}
	moves := func(from, to string) float64 { return testutil.ToFloat64(m.failovers.WithLabelValues(from, to)) }

	p.steer(seen(true, true, true))
	active("a")
	// a unreachable, b not serving: c, the next region that serves.
	p.steer(seen(false, false, true))
	active("c")
	if moves("a", "c") != 1 {
		t.Fatalf("failovers a→c = %v, want 1", moves("a", "c"))
	}
	// a and b serve again: not yet (RegionFailback is an hour).
	p.steer(seen(true, true, true))
	active("c")
	// b has served for longer than RegionFailback, a misses a refresh and starts again: b.
	p.regions[0].healthySince.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	p.regions[1].healthySince.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	p.steer(seen(false, true, true))
	active("b")
	if p.regions[0].healthySince.Load() != 0 || p.regions[2].healthySince.Load() != 0 {
		t.Fatal("a missed a refresh and c was left: both failback clocks must restart")
	}
	// a serves for RegionFailback: back to a.
	p.steer(seen(true, true, true))
	active("b")
	p.regions[0].healthySince.Store(time.Now().Add(-2 * time.Hour).UnixNano())
	p.steer(seen(true, true, true))
	active("a")
	if moves("c", "b") != 1 || moves("b", "a") != 1 {
		t.Fatalf("failovers c→b = %v, b→a = %v, want 1 each", moves("c", "b"), moves("b", "a"))
	}
	// No region serves but a, unreachable: the pool stays (nowhere better to go).
	p.steer(seen(false, false, false))
	active("a")
}
