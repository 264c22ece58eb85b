// Package deploy's tests check what deploy/ ships against the code: the Prometheus rules and the
// Grafana dashboard pass promtool and name only metrics that a real region node, governance node
// and gateway export, and those processes export the Go runtime and process metrics the dashboard
// plots.
package deploy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// processes are one of each kind of Krypton process, started in this test process with the test
// kits: real Raft, real bbolt, real listeners.
type processes struct {
	region     *regiontest.Region
	governance *governancetest.Cluster
	gateway    *gateway.Gateway
	gatewayCfg gateway.Config

	regionMetricsURL, gatewayMetricsURL string
}

func freePort(t *testing.T) string {
	t.Helper()
	p, err := netutil.FreePort(false)
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

// startProcesses starts a one-node governance cluster, a one-node region following it (with
// /metrics on HTTP and an audit syslog sink, so that the feed's and the sink's metrics exist) and
// a gateway in front of the region (serving, so that its admin endpoint's metrics exist).
func startProcesses(t *testing.T) *processes {
	t.Helper()
	p := &processes{}
	httpAddr := freePort(t)
	p.regionMetricsURL = "http://" + httpAddr + "/metrics"
	p.governance = governancetest.Start(t, 1)
	p.region = regiontest.Start(t, 1, regiontest.WithCA(p.governance.CA), regiontest.WithGovernance(p.governance.Addrs()...), regiontest.WithConfig(func(c *region.Config) {
		c.HTTPAddr = httpAddr
		// Nothing listens there: the sink queues and reconnects in the background, which is all
		// the test needs (its metrics are registered).
		c.AuditSyslog = &audit.SyslogConfig{Addr: freePort(t), TLS: &tls.Config{MinVersion: tls.VersionTLS12}, MinBackoff: time.Second}
	}))

	r := p.region
	cert, err := r.CA.IssueService("acme", "billing", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := r.CA.IssueGateway("acme", "gateway-acme", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.RegionAddrs = []string{r.Cfgs[0].RPCAddr}
	cfg.Region = r.Cfgs[0].Region
	cfg.Roots = r.CA.Pool()
	cfg.Certificate = cert.TLSCertificate()
	cfg.ServerCertificate = srvCert.TLSCertificate()
	cfg.ListenAddr = freePort(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve() }()
	t.Cleanup(func() {
		g.Close()
		if err := <-served; err != nil {
			t.Errorf("gateway Serve: %v", err)
		}
	})
	p.gateway, p.gatewayCfg = g, cfg
	p.gatewayMetricsURL = "http://" + g.HTTPAddr().String() + "/metrics"
	return p
}

// scrape reads url's /metrics as Prometheus would, retrying until deadline (the gateway's admin
// endpoint starts with Serve, in the background).
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fams, err := scrapeOnce(url)
		if err == nil {
			return fams
		}
		if time.Now().After(deadline) {
			t.Fatalf("scraping %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not a wait for a condition
	}
}

func scrapeOnce(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, &scrapeError{resp.Status, string(b)}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

type scrapeError struct{ status, body string }

func (e *scrapeError) Error() string { return e.status + ": " + e.body }

func gathered(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

// descName reads the metric name out of a Desc's String() (client_golang has no accessor for it).
var descName = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

// registeredNames are the names of every metric reg describes (a vector with no child yet too)
// and every metric it gathers now.
func registeredNames(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	for d := range ch {
		m := descName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		names[m[1]] = true
	}
	for n := range gathered(t, reg) {
		names[n] = true
	}
	return names
}

func leafNotAfter(t *testing.T, c tls.Certificate) float64 {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return float64(leaf.NotAfter.Unix())
}

// TestRealProcesses starts one region node, governance node and gateway and checks what deploy/
// relies on against them.
func TestRealProcesses(t *testing.T) {
	p := startProcesses(t)
	t.Run("RuntimeAndProcessMetrics", func(t *testing.T) { testRuntimeAndProcessMetrics(t, p) })
	t.Run("DeployNamesExportedMetrics", func(t *testing.T) { testDeployNamesExportedMetrics(t, p) })
}

// testDeployNamesExportedMetrics: every metric the rules and the dashboard name is one that a
// region node, a governance node or a gateway registers (described by its registry, so a vector
// counts before its first child exists). A renamed metric fails here, not silently on a dashboard.
func testDeployNamesExportedMetrics(t *testing.T, p *processes) {
	scrape(t, p.gatewayMetricsURL) // the gateway's admin endpoint registers its metrics in Serve
	names := map[string]bool{}
	for _, reg := range []*prometheus.Registry{p.region.Nodes[0].Registry(), p.governance.Nodes[0].Registry(), p.gateway.Registry()} {
		for n := range registeredNames(t, reg) {
			names[n] = true
		}
	}
	used := usedMetricNames(t)
	if len(used) < 20 {
		t.Fatalf("the rules and the dashboard name only %d metrics: is the name pattern broken?", len(used))
	}
	for n, where := range used {
		if !exported(names, n) {
			t.Errorf("%s uses %s, which no region node, governance node or gateway exports", where, n)
		}
	}
}

// testRuntimeAndProcessMetrics: a region node's and a gateway's /metrics, and a governance node's
// registry, carry the Go runtime and process collectors beside Krypton's own metrics, and the
// expiry of the process's certificate.
func testRuntimeAndProcessMetrics(t *testing.T, p *processes) {
	type target struct {
		name  string
		fams  map[string]*dto.MetricFamily
		certs map[string]float64 // certificate label -> NotAfter
	}
	targets := []target{
		{"region node /metrics", scrape(t, p.regionMetricsURL), map[string]float64{"node": leafNotAfter(t, p.region.Cfgs[0].Certificate)}},
		{"gateway /metrics", scrape(t, p.gatewayMetricsURL), map[string]float64{
			"service": leafNotAfter(t, p.gatewayCfg.Certificate), "server": leafNotAfter(t, p.gatewayCfg.ServerCertificate)}},
		{"governance node registry", gathered(t, p.governance.Nodes[0].Registry()), map[string]float64{"node": leafNotAfter(t, p.governance.Cfgs[0].Certificate)}},
	}
	for _, tg := range targets {
		want := []string{"go_goroutines", "go_memstats_heap_inuse_bytes"}
		if runtime.GOOS == "linux" { // the process collector reads /proc
			want = append(want, "process_resident_memory_bytes", "process_open_fds")
		}
		for _, name := range want {
			f := tg.fams[name]
			if f == nil || len(f.GetMetric()) == 0 {
				t.Errorf("%s: no %s", tg.name, name)
				continue
			}
			if v := f.GetMetric()[0].GetGauge().GetValue(); v <= 0 {
				t.Errorf("%s: %s = %v, want > 0", tg.name, name, v)
			}
		}
		exp := tg.fams["krypton_tls_cert_expiry_timestamp_seconds"]
		got := map[string]float64{}
		for _, m := range exp.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "certificate" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
		for c, want := range tg.certs {
			if got[c] != want {
				t.Errorf("%s: krypton_tls_cert_expiry_timestamp_seconds{certificate=%q} = %v, want %v (the certificate's NotAfter)", tg.name, c, got[c], want)
			}
		}
		if len(got) != len(tg.certs) {
			t.Errorf("%s: certificate expiries %v, want exactly %v", tg.name, got, tg.certs)
		}
	}
}
