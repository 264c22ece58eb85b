package region_test

import (
	"context"
	"crypto/tls"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// servedSerial completes a TLS handshake with addr as cert (over loopback, as any peer would) and
// returns the serial number of the certificate the server presented.
func servedSerial(t *testing.T, ca *pki.CA, addr string, cert *pki.Certificate) *big.Int {
	t.Helper()
	d := &tls.Dialer{Config: pki.ClientTLSConfig(ca.Pool(), cert.TLSCertificate(), "127.0.0.1")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

func gatherValue(t *testing.T, g prometheus.Gatherer, name, label, value string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue(), true
					}
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestCertificateRotation: a region whose nodes read their certificates from files. Node 0's files
// are replaced with a new certificate (a new serial, the same identity): without a restart, new
// handshakes on its API and its Raft port present the new serial, the gRPC connection opened
// before keeps working, the region keeps serving, and krypton_tls_cert_expiry_timestamp_seconds
// and krypton_tls_reloads_total follow. A bad file (here a certificate of another node) is
// refused: the new certificate stays in use.
func TestCertificateRotation(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("rotation test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteFiles(caFile, filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	reloaders := map[string]*pki.Reloader{}
	files := func(id string) (string, string) {
		return filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")
	}
	r := regiontest.Start(t, 3, regiontest.WithCA(ca), regiontest.WithConfig(func(c *region.Config) {
		cf, kf := files(c.NodeID)
		cert, err := ca.IssueNode(c.NodeID, pki.NodeOptions{Region: c.Region})
		if err != nil {
			t.Fatal(err)
		}
		if err := cert.WriteFiles(cf, kf); err != nil {
			t.Fatal(err)
		}
		rl, err := pki.NewReloader(pki.ReloaderConfig{CAFile: caFile, Pairs: []pki.ReloadPair{{Name: "node", CertFile: cf, KeyFile: kf}}})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		reloaders[c.NodeID] = rl
		mu.Unlock()
		c.CertSource = rl.Source(0)
		m := c.CertSource.Current()
		c.Roots, c.Certificate = m.Roots, m.Certificate
	}))
	id0 := r.Cfgs[0].NodeID
	rl := reloaders[id0]
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- rl.Watch(ctx, 20*time.Millisecond) }()
	defer func() { cancel(); <-watched }()

	operator, err := ca.IssueOperator("ops", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ca.IssueNode(r.Cfgs[1].NodeID, pki.NodeOptions{Region: r.Cfgs[1].Region})
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := rl.Source(0).Current().Certificate.Leaf.SerialNumber
	if got := servedSerial(t, ca, r.Cfgs[0].RPCAddr, operator); got.Cmp(oldSerial) != 0 {
		t.Fatalf("API presents serial %v, want %v", got, oldSerial)
	}
	admin := r.AdminClient(0) // a connection made before the rotation
	if _, err := admin.Status(r.Context(10*time.Second), &kv1.StatusRequest{}); err != nil {
		t.Fatal(err)
	}

	next, err := ca.IssueNode(id0, pki.NodeOptions{Region: r.Cfgs[0].Region})
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := files(id0)
	if err := next.WriteFiles(cf, kf); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 30*time.Second, "new API handshakes present the new certificate", func() bool {
		return servedSerial(t, ca, r.Cfgs[0].RPCAddr, operator).Cmp(next.Leaf().SerialNumber) == 0
	})
	if got := servedSerial(t, ca, r.Cfgs[0].RaftAddr, peer); got.Cmp(next.Leaf().SerialNumber) != 0 {
		t.Errorf("Raft port presents serial %v, want the new %v", got, next.Leaf().SerialNumber)
	}
	if _, err := admin.Status(r.Context(10*time.Second), &kv1.StatusRequest{}); err != nil {
		t.Errorf("the connection made before the rotation: %v", err)
	}
	if v, _ := gatherValue(t, r.Nodes[0].Registry(), "krypton_tls_cert_expiry_timestamp_seconds", "certificate", "node"); int64(v) != next.Leaf().NotAfter.Unix() {
		t.Errorf("krypton_tls_cert_expiry_timestamp_seconds = %v, want the new NotAfter %d", v, next.Leaf().NotAfter.Unix())
	}
	if v, _ := gatherValue(t, r.Nodes[0].Registry(), "krypton_tls_reloads_total", "result", "ok"); v < 1 {
		t.Errorf("krypton_tls_reloads_total{result=ok} = %v", v)
	}

	// A certificate of another node is refused; the new one stays.
	if err := peer.WriteFiles(cf, kf); err != nil {
		t.Fatal(err)
	}
	if err := rl.Reload(); err == nil {
		t.Fatal("another node's certificate was taken")
	}
	if got := servedSerial(t, ca, r.Cfgs[0].RPCAddr, operator); got.Cmp(next.Leaf().SerialNumber) != 0 {
		t.Errorf("after a refused reload the API presents %v, want %v", got, next.Leaf().SerialNumber)
	}
	if v, _ := gatherValue(t, r.Nodes[0].Registry(), "krypton_tls_reloads_total", "result", "refused"); v < 1 {
		t.Errorf("krypton_tls_reloads_total{result=refused} = %v", v)
	}
	os.Remove(cf)
	if err := next.WriteFiles(cf, kf); err != nil {
		t.Fatal(err)
	}

	// The region still replicates and serves through node 0 (Raft and the node service dial with
	// the new certificate).
	r.Kill(1)
	r.Start(1)
	r.WaitCaughtUp(1)
	r.WaitServing()
}
