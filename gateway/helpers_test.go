package gateway_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setupTenant creates a tenant with service keys on the region.
func setupTenant(t testing.TB, r *regiontest.Region, tenant string, services ...string) {
	t.Helper()
	admin := r.AdminClient(r.WaitLeader())
	if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "create-" + tenant, Tenant: tenant, AnchorUri: r.Anchor}); err != nil {
		t.Fatalf("CreateTenant %s: %v", tenant, err)
	}
	for _, s := range services {
		if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "create-" + tenant + "-" + s, Tenant: tenant, Service: s}); err != nil {
			t.Fatalf("CreateKey %s/%s: %v", tenant, s, err)
		}
	}
}

// startGateway starts a gateway for tenant/service on the region with TCP and Unix front ends.
func startGateway(t testing.TB, r *regiontest.Region, tenant, service string, tune func(*gateway.Config)) *gateway.Gateway {
	t.Helper()
	cert, err := r.CA.IssueService(tenant, service, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := r.CA.IssueGateway(tenant, "gateway-"+tenant, pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port, err := netutil.FreePort(false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	for _, c := range r.Cfgs {
		cfg.RegionAddrs = append(cfg.RegionAddrs, c.RPCAddr)
	}
	cfg.Region = r.Cfgs[0].Region
	cfg.Roots = r.CA.Pool()
	cfg.Certificate = cert.TLSCertificate()
	cfg.ServerCertificate = srvCert.TLSCertificate()
	cfg.ListenAddr = "127.0.0.1:" + strconv.Itoa(port)
	cfg.UnixSocket = filepath.Join(t.TempDir(), "gw.sock")
	cfg.RefreshInterval = 200 * time.Millisecond
	cfg.MaxAttempts = 16 // ride out a region slowed down by a busy machine
	cfg.Logger = clustertest.NewLogger(t)
	if tune != nil {
		tune(&cfg)
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve() }()
	t.Cleanup(func() {
		g.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return g
}

// tcpClient dials the gateway's TCP front end as tenant/service, expecting the gateway of tenant.
func tcpClient(t testing.TB, r *regiontest.Region, g *gateway.Gateway, tenant, service string) kv1.GatewayServiceClient {
	t.Helper()
	return tcpClientTo(t, r, g, tenant, service, tenant)
}

// tcpClientTo dials the gateway's TCP front end as tenant/service, expecting a gateway of gwTenant.
func tcpClientTo(t testing.TB, r *regiontest.Region, g *gateway.Gateway, tenant, service, gwTenant string) kv1.GatewayServiceClient {
	t.Helper()
	cert, err := r.CA.IssueService(tenant, service, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := transport.Dial(context.Background(), g.Addr().String(), transport.ClientConfig{Roots: r.CA.Pool(), Certificate: cert.TLSCertificate(),
		Server: pki.Identity{Kind: pki.KindGateway, Tenant: gwTenant}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kv1.NewGatewayServiceClient(conn)
}

// unixClient dials the gateway's Unix socket.
func unixClient(t testing.TB, g *gateway.Gateway) kv1.GatewayServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+g.UnixSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kv1.NewGatewayServiceClient(conn)
}

// counter sums a metric family's counter values whose labels include want.
func counter(t testing.TB, reg prometheus.Gatherer, name string, want map[string]string) float64 {
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
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}
