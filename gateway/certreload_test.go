package gateway_test

import (
	"context"
	"crypto/tls"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestCertificateRotation: a gateway whose certificates come from files. Its server certificate's
// files are replaced: new handshakes on the gRPC and KMIP front ends present the new serial
// without a restart, and a service certificate of another tenant written over the gateway's own
// is refused (the gateway keeps calling the region as itself). Requests work throughout.
func TestCertificateRotation(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := r.CA.WriteFiles(caFile, filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	svcFile, svcKey := filepath.Join(dir, "svc.pem"), filepath.Join(dir, "svc-key.pem")
	srvFile, srvKey := filepath.Join(dir, "srv.pem"), filepath.Join(dir, "srv-key.pem")
	svc, err := r.CA.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := r.CA.IssueGateway("acme", "gateway-acme", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.WriteFiles(svcFile, svcKey); err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteFiles(srvFile, srvKey); err != nil {
		t.Fatal(err)
	}
	rl, err := pki.NewReloader(pki.ReloaderConfig{CAFile: caFile, Pairs: []pki.ReloadPair{
		{Name: "service", CertFile: svcFile, KeyFile: svcKey}, {Name: "server", CertFile: srvFile, KeyFile: srvKey}}})
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) {
		c.KMIPAddr = "127.0.0.1:0"
		c.CertSource, c.ServerCertSource = rl.Source(0), rl.Source(1)
		c.Certificate, c.ServerCertificate = rl.Source(0).Current().Certificate, rl.Source(1).Current().Certificate
	})
	client, err := r.CA.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serial := func(addr string) *big.Int {
		d := &tls.Dialer{Config: pki.ClientTLSConfig(r.CA.Pool(), client.TLSCertificate(), "127.0.0.1")}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
	}
	c := tcpClient(t, r, g, "acme", "payments")
	encrypt := func(what string) {
		t.Helper()
		clustertest.Eventually(t, 30*time.Second, "an Encrypt through the gateway "+what, func() bool {
			_, err := c.Encrypt(ctxT(t), &kv1.EncryptRequest{Data: []byte("x")})
			return err == nil
		})
	}
	encrypt("before the rotation")
	for _, a := range []string{g.Addr().String(), g.KMIPAddr().String()} {
		if got := serial(a); got.Cmp(srv.Leaf().SerialNumber) != 0 {
			t.Fatalf("%s presents %v, want %v", a, got, srv.Leaf().SerialNumber)
		}
	}
	next, err := r.CA.IssueGateway("acme", "gateway-acme", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := next.WriteFiles(srvFile, srvKey); err != nil {
		t.Fatal(err)
	}
	if err := rl.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{g.Addr().String(), g.KMIPAddr().String()} {
		if got := serial(a); got.Cmp(next.Leaf().SerialNumber) != 0 {
			t.Errorf("after the rotation %s presents %v, want the new %v", a, got, next.Leaf().SerialNumber)
		}
	}
	encrypt("after the rotation")

	// Another tenant's service certificate over the gateway's own: refused, nothing changes.
	other, err := r.CA.IssueService("globex", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.WriteFiles(svcFile, svcKey); err != nil {
		t.Fatal(err)
	}
	if err := rl.Reload(); err == nil {
		t.Fatal("another tenant's service certificate was taken")
	}
	if id, _ := pki.LeafIdentity(rl.Source(0).Current().Certificate); id.Tenant != "acme" {
		t.Fatalf("the gateway now calls the region as %v", id)
	}
	encrypt("after a refused reload")
}
