package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/wrap"
)

// addrs are the API addresses of r's nodes.
func addrs(r *regiontest.Region) []string {
	var out []string
	for _, c := range r.Cfgs {
		out = append(out, c.RPCAddr)
	}
	return out
}

// TestRegionFailover: a gateway preferring region a, with b to fail over to, serves from a; with
// every node of a stopped it moves to b within the same request (counted, gauged), and back to a
// once a has served for the failback time. A second gateway that lists b's nodes under another
// region's name never sends them anything: their certificates name b. (The tenant is made in
// each region on its own here, so only new data keys are checked; internal/e2e's
// TestGatewayRegionFailover checks that blobs survive a failover with a shared tenant.)
func TestRegionFailover(t *testing.T) {
	a := regiontest.Start(t, 1, regiontest.WithRegion("a"))
	b := regiontest.Start(t, 1, regiontest.WithRegion("b"), regiontest.WithCA(a.CA), regiontest.WithAnchor(a.Anchor))
	setupTenant(t, a, "acme", "payments")
	setupTenant(t, b, "acme", "payments")
	g := startGateway(t, a, "acme", "payments", func(c *gateway.Config) {
		c.FailoverRegions = []gateway.Region{{Name: "b", Addrs: addrs(b)}}
		c.RegionFailback = time.Second
	})
	wrong := startGateway(t, a, "acme", "payments", func(c *gateway.Config) {
		c.FailoverRegions = []gateway.Region{{Name: "c", Addrs: addrs(b)}}
		c.MaxAttempts = 2
	})
	active := func(g *gateway.Gateway, name string) float64 {
		return counter(t, g.Registry(), "krypton_gateway_region_active", map[string]string{"region": name})
	}
	moves := func(from, to string) float64 {
		return counter(t, g.Registry(), "krypton_gateway_region_failovers_total", map[string]string{"from": from, "to": to})
	}
	if _, _, used, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil || used.Version != 1 {
		t.Fatalf("GenerateDataKey on region a: %v %v", used, err)
	}
	if active(g, "a") != 1 || active(g, "b") != 0 {
		t.Fatalf("active region gauge: a=%v b=%v, want a", active(g, "a"), active(g, "b"))
	}
	// b must be known serving before a goes, as a refresh finds it.
	clustertest.Eventually(t, 20*time.Second, "the gateway sees b's node serving", func() bool {
		return counter(t, g.Registry(), "krypton_gateway_region_node_serving", nil) == 2
	})

	a.Kill(0)
	if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
		t.Fatalf("GenerateDataKey with region a stopped: %v", err)
	}
	if n := moves("a", "b"); n != 1 {
		t.Errorf("failovers a→b = %v, want 1", n)
	}
	if active(g, "a") != 0 || active(g, "b") != 1 {
		t.Errorf("active region gauge: a=%v b=%v, want b", active(g, "a"), active(g, "b"))
	}
	// Later requests go straight to b.
	for range 5 {
		if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
			t.Fatalf("GenerateDataKey on region b: %v", err)
		}
	}
	if n := moves("a", "b"); n != 1 {
		t.Errorf("failovers a→b = %v after more requests, want still 1", n)
	}

	// The gateway that names b's nodes "c" refuses them at the handshake: nothing reaches b.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, _, err := wrong.GenerateDataKey(ctx, wrap.KeyID{}, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("GenerateDataKey through a gateway listing b's nodes as c: %v, want Unavailable", err)
	}
	if n := counter(t, wrong.Registry(), "krypton_gateway_region_failovers_total", nil); n != 0 {
		t.Errorf("the gateway listing b's nodes as c failed over %v times, want never", n)
	}

	// a comes back: the gateway returns to it once it has served for RegionFailback.
	a.Start(0)
	a.WaitServing()
	clustertest.Eventually(t, 30*time.Second, "the gateway back on a", func() bool { return active(g, "a") == 1 })
	if n := moves("b", "a"); n != 1 {
		t.Errorf("failbacks b→a = %v, want 1", n)
	}
	if _, _, _, err := g.GenerateDataKey(ctxT(t), wrap.KeyID{}, nil); err != nil {
		t.Fatalf("GenerateDataKey back on region a: %v", err)
	}
}

// TestFailoverRegionsConfig: bad FailoverRegions are refused by name.
func TestFailoverRegionsConfig(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	base := gateway.DefaultConfig()
	base.RegionAddrs, base.Region = []string{"127.0.0.1:1"}, "a"
	base.Roots, base.Certificate = ca.Pool(), cert.TLSCertificate()
	if err := base.Validate(); err != nil {
		t.Fatalf("the base configuration: %v", err)
	}
	for _, tc := range []struct {
		name string
		fr   []gateway.Region
		fb   time.Duration
		want string
	}{
		{"no name", []gateway.Region{{Addrs: []string{"127.0.0.1:2"}}}, time.Second, "has no name"},
		{"twice", []gateway.Region{{Name: "a", Addrs: []string{"127.0.0.1:2"}}}, time.Second, "listed twice"},
		{"no address", []gateway.Region{{Name: "b"}}, time.Second, "has no address"},
		{"shared address", []gateway.Region{{Name: "b", Addrs: []string{"127.0.0.1:1"}}}, time.Second, "a node belongs to one region"},
		{"bad name", []gateway.Region{{Name: "b c", Addrs: []string{"127.0.0.1:2"}}}, time.Second, "not a valid region name"},
		{"no failback", []gateway.Region{{Name: "b", Addrs: []string{"127.0.0.1:2"}}}, 0, "RegionFailback must be positive"},
	} {
		c := base
		c.FailoverRegions, c.RegionFailback = tc.fr, tc.fb
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
