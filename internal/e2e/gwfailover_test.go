package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestGatewayRegionFailover is issue 20's gateway check: governance and two regions (eu, us; real
// Raft over loopback) holding acme as a shared tenant, and a gateway that prefers eu with us to
// fail over to. Callers make data keys through the gateway without pause while every node of eu
// is stopped: the gateway moves to us (region_failovers_total{from="eu",to="us"} counts it, once),
// no request fails, and every data key acknowledged before and after the stop unwraps through the
// gateway to the same bytes. eu then comes back: the gateway returns to it after the failback time,
// and eu opens every blob, those us wrapped too.
func TestGatewayRegionFailover(t *testing.T) {
	g := governancetest.Start(t, 1, governancetest.WithHeartbeat(100*time.Millisecond))
	eu := regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...))
	us := regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("us"), regiontest.WithAnchor(eu.Anchor), regiontest.WithGovernance(g.Addrs()...))
	p := &planes{t: t, g: g, clients: map[int]kv1.GovernanceServiceClient{}, wraps: map[string]kv1.WrapServiceClient{}}

	id := governancetest.RequestID()
	p.gov("create the shared tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: "acme", AnchorUri: eu.Anchor, Regions: []string{"eu", "us"}, HomeRegion: "eu"})
		return err
	})
	id = governancetest.RequestID()
	p.gov("create the service", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "acme", Service: "pay"})
		return err
	})
	clustertest.Eventually(t, 60*time.Second, "acme/pay v1 on every node of eu and us", func() bool {
		for _, r := range []*regiontest.Region{eu, us} {
			for _, n := range r.Nodes {
				if _, err := n.State().Usable("acme", "pay", 1, fsm.OpUnwrap); err != nil {
					return false
				}
			}
		}
		return true
	})

	gw := startRegionGateway(t, g.CA, eu, us)
	metric := func(name string, labels prometheus.Labels) float64 { return gatherSum(t, gw.Registry(), name, labels) }
	clustertest.Eventually(t, 30*time.Second, "the gateway sees the six nodes serving", func() bool {
		return metric("krypton_gateway_region_node_serving", nil) == 6
	})

	// Callers make data keys without pause; every acknowledged one is kept.
	type dataKey struct{ plain, blob, context []byte }
	var (
		stop  atomic.Bool
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked []dataKey
		fails []error
		// slowest is the longest a data key request took once the stop had begun: what the
		// failover cost the callers.
		stopping atomic.Bool
		slowest  time.Duration
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				bind := fmt.Appendf(nil, "w=%d i=%d", w, i)
				began := time.Now()
				plain, blob, _, err := gw.GenerateDataKey(ctx, wrap.KeyID{}, bind)
				took := time.Since(began)
				cancel()
				mu.Lock()
				if stopping.Load() {
					slowest = max(slowest, took)
				}
				if err != nil {
					fails = append(fails, err)
				} else {
					acked = append(acked, dataKey{plain, blob, bind})
				}
				mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() }) // on an early Fatal
	clustertest.Eventually(t, 30*time.Second, "data keys before the stop", func() bool { return count() >= 40 })
	stopping.Store(true)
	for i := range eu.Nodes {
		eu.Kill(i)
	}
	stopped := count()
	t.Logf("stopped every node of eu after %d data keys", stopped)
	// The gateway goes on making data keys under its delegated wrapping key while its cache lease
	// from eu lasts (a fraction of a serving lease); then they take the region path, find eu down
	// and move the gateway to us.
	clustertest.Eventually(t, 60*time.Second, "data keys after the stop, and the move to us", func() bool {
		return count() >= stopped+80 && metric("krypton_gateway_region_active", prometheus.Labels{"region": "us"}) == 1
	})
	stop.Store(true)
	wg.Wait()
	for _, err := range fails {
		t.Errorf("a data key request failed across the failover: %v", err)
	}
	if n := metric("krypton_gateway_region_failovers_total", prometheus.Labels{"from": "eu", "to": "us"}); n != 1 {
		t.Errorf("region_failovers_total{from=eu,to=us} = %v, want 1", n)
	}
	if n := metric("krypton_gateway_region_active", prometheus.Labels{"region": "us"}); n != 1 {
		t.Errorf("region_active{region=us} = %v, want 1", n)
	}

	// Every acknowledged data key, before and after the stop, unwraps through the gateway (on us).
	// The acknowledgements are counted in order; those after index stopped came after the stop.
	unwrapAll := func(where string) {
		t.Helper()
		for i, k := range acked {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			got, _, err := gw.Unwrap(ctx, k.blob, k.context)
			cancel()
			if err != nil || !bytes.Equal(got, k.plain) {
				when := "before"
				if i >= stopped {
					when = "after"
				}
				t.Fatalf("data key %d of %d (acknowledged %s the stop) through the gateway on %s: %v", i, len(acked), when, where, err)
			}
		}
	}
	unwrapAll("us")
	t.Logf("%d data keys acknowledged, %d after the stop; all unwrap on us; slowest request from the stop on: %v", len(acked), len(acked)-stopped, slowest)

	// eu comes back: once it has served for the failback time, the gateway returns to it, and eu
	// opens every data key, those us wrapped too.
	for i := range eu.Nodes {
		eu.Start(i)
	}
	eu.WaitServing()
	clustertest.Eventually(t, 60*time.Second, "the gateway back on eu", func() bool {
		return metric("krypton_gateway_region_active", prometheus.Labels{"region": "eu"}) == 1
	})
	if n := metric("krypton_gateway_region_failovers_total", prometheus.Labels{"from": "us", "to": "eu"}); n != 1 {
		t.Errorf("region_failovers_total{from=us,to=eu} = %v, want 1", n)
	}
	before := metric("krypton_gateway_region_rpcs_total", prometheus.Labels{"code": "OK"})
	unwrapAll("eu")
	if n := metric("krypton_gateway_region_failovers_total", nil); n != 2 {
		t.Errorf("region_failovers_total = %v after failback, want 2 (no move while eu serves)", n)
	}
	if after := metric("krypton_gateway_region_rpcs_total", prometheus.Labels{"code": "OK"}); after <= before {
		t.Errorf("no region call succeeded while unwrapping on eu")
	}
}

// startRegionGateway starts a gateway (no front end: the test calls its methods) for acme/pay
// that prefers region prefer and fails over to region then, with short refresh and failback times.
func startRegionGateway(t *testing.T, ca *pki.CA, prefer, then *regiontest.Region) *gateway.Gateway {
	t.Helper()
	cert, err := ca.IssueService("acme", "pay", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addrs := func(r *regiontest.Region) []string {
		var out []string
		for _, c := range r.Cfgs {
			out = append(out, c.RPCAddr)
		}
		return out
	}
	cfg := gateway.DefaultConfig()
	cfg.Region, cfg.RegionAddrs = prefer.Cfgs[0].Region, addrs(prefer)
	cfg.FailoverRegions = []gateway.Region{{Name: then.Cfgs[0].Region, Addrs: addrs(then)}}
	cfg.RegionFailback = time.Second
	cfg.Roots, cfg.Certificate = ca.Pool(), cert.TLSCertificate()
	cfg.RefreshInterval = 200 * time.Millisecond
	cfg.MaxAttempts = 16 // ride out regions slowed down by a busy machine
	cfg.Logger = clustertest.NewLogger(t)
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return gw
}

// gatherSum sums the values of a metric family's series whose labels include want.
func gatherSum(t *testing.T, reg prometheus.Gatherer, name string, want prometheus.Labels) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			has := map[string]string{}
			for _, l := range m.GetLabel() {
				has[l.GetName()] = l.GetValue()
			}
			match := true
			for k, v := range want {
				match = match && has[k] == v
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
