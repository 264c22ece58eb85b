package client_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/client"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/transport"
)

// Encrypt and decrypt through a gateway on its Unix socket, beside the application.
func ExampleDialGatewayUnix() {
	r := startRegion() // a one-node region on loopback, with tenant "acme" and service "billing"
	defer r.stop()
	gw := r.startGateway()
	defer gw.Close()

	c, err := client.DialGatewayUnix(gw.UnixSocket())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	ct, err := c.Encrypt(ctx, []byte("invoice 2026-0042: 1,250.00 EUR"), []byte("customer=42"))
	if err != nil {
		log.Fatal(err)
	}
	pt, err := c.Decrypt(ctx, ct, []byte("customer=42"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(pt))
	_, err = c.Decrypt(ctx, ct, []byte("customer=43"))
	fmt.Println("another context:", err != nil)
	// Output:
	// invoice 2026-0042: 1,250.00 EUR
	// another context: true
}

// Encrypt directly against the region's nodes, without a gateway; a gateway decrypts the result,
// since both make the same ciphertext format.
func ExampleDialRegion() {
	r := startRegion()
	defer r.stop()
	ctx := context.Background()

	c, err := client.DialRegion(ctx, "dev", []string{r.addr}, r.serviceConfig(), "acme", "billing")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ct, err := c.Encrypt(ctx, []byte("hello, region"), []byte("doc=7"))
	if err != nil {
		log.Fatal(err)
	}
	pt, err := c.Decrypt(ctx, ct, []byte("doc=7"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(pt))

	gw := r.startGateway()
	defer gw.Close()
	viaGateway, err := client.DialGateway(ctx, gw.Addr().String(), r.serviceConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer viaGateway.Close()
	pt, err = viaGateway.Decrypt(ctx, ct, []byte("doc=7"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(pt), "(through the gateway)")
	// Output:
	// hello, region
	// hello, region (through the gateway)
}

// exampleRegion is a one-node region started for an example.
type exampleRegion struct {
	dir  string
	ca   *pki.CA
	node *region.Node
	addr string
}

func freeAddr(udp bool) string {
	port, err := netutil.FreePort(udp)
	if err != nil {
		log.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func startRegion() *exampleRegion {
	dir, err := os.MkdirTemp("", "krypton-client-example-")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, err := pki.NewCA("example CA", time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	anchorURI := "file://" + filepath.Join(dir, "root.key")
	p, err := anchor.Open(ctx, anchorURI, anchor.Options{Create: true})
	if err != nil {
		log.Fatal(err)
	}
	p.Close()
	cert, err := ca.IssueNode("node-1", pki.NodeOptions{Region: "dev"})
	if err != nil {
		log.Fatal(err)
	}
	cfg := region.DefaultConfig()
	cfg.NodeID, cfg.DataDir = "node-1", filepath.Join(dir, "node-1")
	cfg.RPCAddr, cfg.RaftAddr, cfg.GossipAddr = freeAddr(false), freeAddr(false), freeAddr(true)
	cfg.BootstrapExpect = 1
	cfg.GossipKey = make([]byte, 32)
	rand.Read(cfg.GossipKey)
	cfg.Roots, cfg.Certificate = ca.Pool(), cert.TLSCertificate()
	cfg.AllowDevAnchor = true
	n, err := region.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	r := &exampleRegion{dir: dir, ca: ca, node: n, addr: n.RPCAddr()}
	if _, err := n.Cluster().WaitForLeader(ctx); err != nil {
		log.Fatal(err)
	}
	s := fsm.DefaultSettings()
	s.LeaseDuration = 2 * time.Second
	if err := retry(ctx, func() error { return n.SetSettings(ctx, s) }); err != nil {
		log.Fatal(err)
	}
	if err := retry(ctx, n.Serving); err != nil {
		log.Fatal(err)
	}
	if _, err := n.CreateTenant(ctx, "example-tenant", "acme", anchorURI); err != nil {
		log.Fatal(err)
	}
	if _, err := n.CreateKey(ctx, "example-key", "acme", "billing"); err != nil {
		log.Fatal(err)
	}
	return r
}

// retry calls f every 20 ms until it succeeds or ctx ends.
func retry(ctx context.Context, f func() error) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

func (r *exampleRegion) serviceConfig() transport.ClientConfig {
	cert, err := r.ca.IssueService("acme", "billing", time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	return transport.ClientConfig{Roots: r.ca.Pool(), Certificate: cert.TLSCertificate()}
}

// startGateway starts a gateway for acme/billing with TCP and Unix front ends.
func (r *exampleRegion) startGateway() *gateway.Gateway {
	cert, err := r.ca.IssueService("acme", "billing", time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	srvCert, err := r.ca.IssueGateway("acme", "gateway-1", pki.NodeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.RegionAddrs, cfg.Region = []string{r.addr}, "dev"
	cfg.Roots, cfg.Certificate = r.ca.Pool(), cert.TLSCertificate()
	cfg.ListenAddr, cfg.ServerCertificate = freeAddr(false), srvCert.TLSCertificate()
	cfg.UnixSocket = filepath.Join(r.dir, "gateway.sock")
	g, err := gateway.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	go g.Serve()
	return g
}

func (r *exampleRegion) stop() {
	r.node.Shutdown()
	os.RemoveAll(r.dir)
}
