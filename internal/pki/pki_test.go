package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issueRaw issues a client+server certificate with arbitrary URIs, for
// certificates the public API refuses to make.
func issueRaw(t *testing.T, ca *CA, uris ...string) *Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var us []*url.URL
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		us = append(us, u)
	}
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "raw"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		URIs:         us,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Certificate{leaf: leaf, key: key}
}

func TestIssueAndIdentity(t *testing.T) {
	ca := newCA(t)
	node, err := ca.IssueNode("node-1", NodeOptions{Region: "eu", DNSNames: []string{"n1.example"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	gov, err := ca.IssueGovernance("gov-1", NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ca.IssueGateway("acme", "gw-1", NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.IssueService("acme", "billing.v2", 0)
	if err != nil {
		t.Fatal(err)
	}
	op, err := ca.IssueOperator("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cert *Certificate
		want Identity
		uri  string
		eku  []x509.ExtKeyUsage
	}{
		{node, Identity{Kind: KindNode, NodeID: "node-1", Region: "eu"}, "spiffe://krypton/region/eu/node/node-1",
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{gov, Identity{Kind: KindGovernance, NodeID: "gov-1"}, "spiffe://krypton/governance/node/gov-1",
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{gw, Identity{Kind: KindGateway, Tenant: "acme", Gateway: "gw-1"}, "spiffe://krypton/tenant/acme/gateway/gw-1",
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{svc, Identity{Kind: KindService, Tenant: "acme", Service: "billing.v2"}, "spiffe://krypton/tenant/acme/service/billing.v2",
			[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{op, Identity{Kind: KindOperator, Operator: "alice"}, "spiffe://krypton/operator/alice",
			[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for _, tt := range tests {
		got, err := tt.cert.Identity()
		if err != nil {
			t.Fatalf("%s: %v", tt.uri, err)
		}
		if got != tt.want {
			t.Errorf("identity = %+v, want %+v", got, tt.want)
		}
		if got.String() != tt.uri {
			t.Errorf("String() = %q, want %q", got.String(), tt.uri)
		}
		if _, err := tt.cert.Leaf().Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: tt.eku}); err != nil {
			t.Errorf("%s does not verify: %v", tt.uri, err)
		}
		if !tt.cert.Leaf().NotAfter.Before(ca.Certificate().NotAfter.Add(time.Second)) {
			t.Errorf("%s outlives its CA", tt.uri)
		}
	}
	leaf := node.Leaf()
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	for _, h := range []string{"localhost", "n1.example", "10.0.0.1"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Error(err)
		}
	}
	if got := svc.Leaf().NotAfter.Sub(svc.Leaf().NotBefore); got > ServiceLifetime+time.Hour {
		t.Errorf("service lifetime %v", got)
	}
	// A gateway's certificate is a server's only: it cannot authenticate
	// as a client anywhere.
	if _, err := gw.Leaf().Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a gateway certificate verifies for client authentication")
	}
}

// TestIssueRefusesMixedRoles: a region node's certificate must name its region; governance nodes
// and gateways name none.
func TestIssueRefusesMixedRoles(t *testing.T) {
	ca := newCA(t)
	if _, err := ca.IssueNode("n1", NodeOptions{}); !errors.Is(err, ErrNoRegion) ||
		!strings.Contains(err.Error(), "krypton certs node -region") {
		t.Errorf("IssueNode without a region: err = %v, want ErrNoRegion naming the fix", err)
	}
	if _, err := ca.IssueGovernance("g1", NodeOptions{Region: "eu"}); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("IssueGovernance with a region: err = %v", err)
	}
	if _, err := ca.IssueGateway("acme", "gw", NodeOptions{Region: "eu"}); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("IssueGateway with a region: err = %v", err)
	}
	if _, err := ca.IssueGateway("acme", "GW", NodeOptions{}); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("IssueGateway with a bad name: err = %v", err)
	}
}

// TestLegacyNodeRefused: a certificate of the region-less spiffe://krypton/node/<id> form names
// no identity at all, with an error that says how to reissue it.
func TestLegacyNodeRefused(t *testing.T) {
	ca := newCA(t)
	legacy := issueRaw(t, ca, "spiffe://krypton/node/n1")
	_, err := IdentityFromCertificate(legacy.Leaf())
	if !errors.Is(err, ErrLegacyNode) || !errors.Is(err, ErrInvalidIdentity) {
		t.Fatalf("err = %v, want ErrLegacyNode", err)
	}
	for _, fix := range []string{"krypton certs node -region", "krypton certs governance"} {
		if !strings.Contains(err.Error(), fix) {
			t.Errorf("err %q does not name the fix %q", err, fix)
		}
	}
	n1, _ := ca.IssueNode("n1", NodeOptions{Region: "eu"})
	serr, _, _ := handshake(t, NodeTLSConfig(ca.Pool(), n1.TLSCertificate()),
		ClientTLSConfig(ca.Pool(), legacy.TLSCertificate(), "localhost"))
	if !errors.Is(serr, ErrLegacyNode) {
		t.Errorf("a node accepted a legacy node certificate: server err = %v", serr)
	}
}

func TestIssueRefusesBadNames(t *testing.T) {
	ca := newCA(t)
	for _, name := range []string{"", "Node", "-a", ".a", "a/b", "a b", strings.Repeat("a", 65), "é"} {
		if _, err := ca.IssueNode(name, NodeOptions{Region: "eu"}); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("IssueNode(%q) err = %v", name, err)
		}
		if _, err := ca.IssueGovernance(name, NodeOptions{}); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("IssueNode(%q) err = %v", name, err)
		}
		if _, err := ca.IssueService("acme", name, 0); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("IssueService(acme, %q) err = %v", name, err)
		}
		if _, err := ca.IssueOperator(name, 0); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("IssueOperator(%q) err = %v", name, err)
		}
	}
	for _, name := range []string{"a", "0", "a-b_c.d", strings.Repeat("z", 64)} {
		if _, err := ca.IssueNode(name, NodeOptions{Region: "eu"}); err != nil {
			t.Errorf("IssueNode(%q): %v", name, err)
		}
	}
}

func TestIssueNodeRegion(t *testing.T) {
	ca := newCA(t)
	c, err := ca.IssueNode("n1", NodeOptions{Region: "eu-1"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Identity()
	if want := (Identity{Kind: KindNode, NodeID: "n1", Region: "eu-1"}); err != nil || id != want {
		t.Fatalf("Identity() = %+v, %v; want %+v", id, err, want)
	}
	if got := c.Leaf().URIs[0].String(); got != "spiffe://krypton/region/eu-1/node/n1" {
		t.Errorf("URI = %s", got)
	}
	if _, err := ca.IssueNode("n1", NodeOptions{Region: "EU"}); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("IssueNode with a bad region: err = %v, want ErrInvalidIdentity", err)
	}
}

func TestParseIdentity(t *testing.T) {
	good := map[string]Identity{
		"spiffe://krypton/region/eu-1/node/n1":     {Kind: KindNode, NodeID: "n1", Region: "eu-1"},
		"spiffe://krypton/governance/node/g1":      {Kind: KindGovernance, NodeID: "g1"},
		"spiffe://krypton/tenant/t/gateway/gw.1":   {Kind: KindGateway, Tenant: "t", Gateway: "gw.1"},
		"spiffe://krypton/tenant/t/service/s":      {Kind: KindService, Tenant: "t", Service: "s"},
		"spiffe://krypton/operator/bob":            {Kind: KindOperator, Operator: "bob"},
		"spiffe://krypton/tenant/t-1/service/s.v2": {Kind: KindService, Tenant: "t-1", Service: "s.v2"},
	}
	for s, want := range good {
		u, _ := url.Parse(s)
		got, err := ParseIdentity(u)
		if err != nil || got != want {
			t.Errorf("ParseIdentity(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	bad := []string{
		"spiffe://other/node/n1",
		"https://krypton/node/n1",
		"spiffe://krypton/node/",
		"spiffe://krypton/node/n1/",
		"spiffe://krypton/node/N1",
		"spiffe://krypton/node/n1?x=1",
		"spiffe://krypton/node/n1#f",
		"spiffe://krypton:8443/node/n1",
		"spiffe://user@krypton/node/n1",
		"spiffe://krypton/node/a%2Fb",
		"spiffe://krypton/tenant/t/svc/s",
		"spiffe://krypton/tenant/t/service/s/x",
		"spiffe://krypton/operator",
		"spiffe://krypton/admin/x",
		"spiffe://krypton//node/n1",
		"spiffe://krypton/region//node/n1",
		"spiffe://krypton/region/EU/node/n1",
		"spiffe://krypton/region/eu/node/",
		"spiffe://krypton/region/eu/nodes/n1",
		"spiffe://krypton/node/n1",
		"spiffe://krypton/governance/n1",
		"spiffe://krypton/governance/node/",
		"spiffe://krypton/governance/eu/node/n1",
		"spiffe://krypton/tenant/t/gateway/",
		"spiffe://krypton/tenant/T/gateway/g",
	}
	for _, s := range bad {
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		if id, err := ParseIdentity(u); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("ParseIdentity(%q) = %+v, %v; want ErrInvalidIdentity", s, id, err)
		}
	}
}

func TestIdentityFromCertificateURICount(t *testing.T) {
	ca := newCA(t)
	tests := []struct {
		uris []string
		want error
	}{
		{nil, ErrNoIdentity},
		{[]string{"spiffe://example.org/ns/default/sa/web"}, ErrNoIdentity},
		{[]string{"spiffe://krypton/region/r/node/a", "spiffe://krypton/region/r/node/b"}, ErrAmbiguousIdentity},
		{[]string{"spiffe://krypton/region/r/node/a", "SPIFFE://KRYPTON/operator/b"}, ErrAmbiguousIdentity},
		{[]string{"spiffe://example.org/x", "spiffe://krypton/region/r/node/a"}, nil},
	}
	for _, tt := range tests {
		c := issueRaw(t, ca, tt.uris...)
		_, err := IdentityFromCertificate(c.Leaf())
		if !errors.Is(err, tt.want) {
			t.Errorf("URIs %v: err = %v, want %v", tt.uris, err, tt.want)
		}
	}
}

func TestFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.WriteFiles(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	// An existing world-readable key file must not keep its mode.
	nodeCert, nodeKey := filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem")
	if err := os.WriteFile(nodeKey, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueNode("n1", NodeOptions{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.WriteFiles(nodeCert, nodeKey); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{caKey, nodeKey} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	ca2, err := LoadCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if !ca2.Certificate().Equal(ca.Certificate()) {
		t.Error("loaded CA differs")
	}
	// The loaded CA can still issue certificates that chain to the original.
	op, err := ca2.IssueOperator("carol", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Leaf().Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Error(err)
	}
	node2, err := LoadCertificate(nodeCert, nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	if !node2.Leaf().Equal(node.Leaf()) {
		t.Error("loaded certificate differs")
	}
	pool, err := LoadCertPool(caCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node2.Leaf().Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Error(err)
	}
	// A key that does not match its certificate is refused.
	if _, err := LoadCertificate(nodeCert, caKey); err == nil {
		t.Error("mismatched key accepted")
	}
	// A leaf is not a CA.
	if _, err := LoadCA(nodeCert, nodeKey); err == nil {
		t.Error("leaf loaded as CA")
	}
	if _, err := LoadCertPool(nodeKey); err == nil {
		t.Error("key file loaded as a pool")
	}
}

// handshake runs one TLS handshake over an in-memory pipe and returns the
// server's and client's errors and the identity the server saw.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error, peer Identity) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := tls.Server(c1, server)
		serverErr = s.Handshake()
		if serverErr == nil {
			peer, serverErr = PeerIdentity(s.ConnectionState())
		}
		// Closing lets the client see the server's refusal instead of
		// blocking on a pipe nobody reads.
		c1.Close()
	}()
	cl := tls.Client(c2, client)
	clientErr = cl.Handshake()
	if clientErr == nil {
		// In TLS 1.3 the client finishes before the server has checked the
		// client certificate; a read surfaces the server's verdict.
		_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, clientErr = cl.Read(make([]byte, 1))
		if errors.Is(clientErr, net.ErrClosed) || clientErr != nil && strings.Contains(clientErr.Error(), "EOF") {
			clientErr = nil
		}
	}
	c2.Close()
	<-done
	return serverErr, clientErr, peer
}

func TestTLS(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	n1, _ := ca.IssueNode("n1", NodeOptions{Region: "eu"})
	n2, _ := ca.IssueNode("n2", NodeOptions{Region: "eu"})
	us, _ := ca.IssueNode("n4", NodeOptions{Region: "us"})
	gov, _ := ca.IssueGovernance("g1", NodeOptions{})
	gov2, _ := ca.IssueGovernance("g2", NodeOptions{})
	gw, _ := ca.IssueGateway("acme", "gw", NodeOptions{})
	svc, _ := ca.IssueService("acme", "web", 0)
	stranger, _ := other.IssueNode("n3", NodeOptions{Region: "eu"})
	nouri := issueRaw(t, ca)

	t.Run("node to node", func(t *testing.T) {
		c := NodeTLSConfig(ca.Pool(), n2.TLSCertificate())
		c.ServerName = "127.0.0.1"
		serr, cerr, peer := handshake(t, NodeTLSConfig(ca.Pool(), n1.TLSCertificate()), c)
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		if peer != (Identity{Kind: KindNode, NodeID: "n2", Region: "eu"}) {
			t.Errorf("peer = %+v", peer)
		}
	})
	t.Run("governance node to governance node", func(t *testing.T) {
		c := NodeTLSConfig(ca.Pool(), gov2.TLSCertificate())
		c.ServerName = "127.0.0.1"
		serr, cerr, _ := handshake(t, NodeTLSConfig(ca.Pool(), gov.TLSCertificate()), c)
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
	})
	// A node's cluster port admits only nodes of its own plane: not another region's, not
	// governance's, and never a gateway's (whose certificate is not even a client's).
	for name, tc := range map[string]struct {
		server, client *Certificate
		want           error
	}{
		"node of another region": {n1, us, ErrWrongPeer},
		"governance to region":   {n1, gov, ErrWrongKind},
		"region to governance":   {gov, n1, ErrWrongKind},
	} {
		t.Run(name+" refused", func(t *testing.T) {
			serr, _, _ := handshake(t, NodeTLSConfig(ca.Pool(), tc.server.TLSCertificate()),
				ClientTLSConfig(ca.Pool(), tc.client.TLSCertificate(), "localhost"))
			if !errors.Is(serr, tc.want) {
				t.Errorf("server err = %v, want %v", serr, tc.want)
			}
		})
	}
	t.Run("gateway refused as a client", func(t *testing.T) {
		serr, _, _ := handshake(t, NodeTLSConfig(ca.Pool(), n1.TLSCertificate()),
			ClientTLSConfig(ca.Pool(), gw.TLSCertificate(), "localhost"))
		if serr == nil {
			t.Error("a node accepted a gateway's certificate as a client")
		}
	})
	// Clients check the server's kind, and where they know them its region and node.
	t.Run("client refuses a gateway posing as a region node", func(t *testing.T) {
		c := ClientTLSConfig(ca.Pool(), svc.TLSCertificate(), "localhost")
		c.VerifyConnection = RequirePeer(Identity{Kind: KindNode, Region: "eu"})
		_, cerr, _ := handshake(t, ServerTLSConfig(ca.Pool(), gw.TLSCertificate()), c)
		if !errors.Is(cerr, ErrWrongKind) {
			t.Errorf("client err = %v, want ErrWrongKind", cerr)
		}
	})
	t.Run("client refuses another node than the one dialled", func(t *testing.T) {
		c := NodeTLSConfig(ca.Pool(), n2.TLSCertificate())
		c.ServerName = "localhost"
		c.VerifyConnection = RequirePeer(Identity{Kind: KindNode, Region: "eu", NodeID: "n9"})
		_, cerr, _ := handshake(t, NodeTLSConfig(ca.Pool(), n1.TLSCertificate()), c)
		if !errors.Is(cerr, ErrWrongPeer) {
			t.Errorf("client err = %v, want ErrWrongPeer", cerr)
		}
	})
	t.Run("client accepts the gateway of its tenant", func(t *testing.T) {
		c := ClientTLSConfig(ca.Pool(), svc.TLSCertificate(), "localhost")
		c.VerifyConnection = RequirePeer(Identity{Kind: KindGateway, Tenant: "acme"})
		serr, cerr, _ := handshake(t, ServerTLSConfig(ca.Pool(), gw.TLSCertificate()), c)
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		c.VerifyConnection = RequirePeer(Identity{Kind: KindGateway, Tenant: "other"})
		if _, cerr, _ := handshake(t, ServerTLSConfig(ca.Pool(), gw.TLSCertificate()), c); !errors.Is(cerr, ErrWrongPeer) {
			t.Errorf("gateway of another tenant: client err = %v, want ErrWrongPeer", cerr)
		}
	})
	t.Run("service to server", func(t *testing.T) {
		serr, cerr, peer := handshake(t, ServerTLSConfig(ca.Pool(), n1.TLSCertificate()),
			ClientTLSConfig(ca.Pool(), svc.TLSCertificate(), "localhost"))
		if serr != nil || cerr != nil {
			t.Fatalf("server %v, client %v", serr, cerr)
		}
		if peer.Kind != KindService || peer.Tenant != "acme" || peer.Service != "web" {
			t.Errorf("peer = %+v", peer)
		}
	})
	t.Run("service refused by node config", func(t *testing.T) {
		serr, _, _ := handshake(t, NodeTLSConfig(ca.Pool(), n1.TLSCertificate()),
			ClientTLSConfig(ca.Pool(), svc.TLSCertificate(), "localhost"))
		if !errors.Is(serr, ErrWrongKind) {
			t.Errorf("server err = %v, want ErrWrongKind", serr)
		}
	})
	t.Run("other CA refused", func(t *testing.T) {
		serr, _, _ := handshake(t, NodeTLSConfig(ca.Pool(), n1.TLSCertificate()),
			ClientTLSConfig(ca.Pool(), stranger.TLSCertificate(), "localhost"))
		var uae x509.UnknownAuthorityError
		if !errors.As(serr, &uae) {
			t.Errorf("server err = %v, want x509.UnknownAuthorityError", serr)
		}
	})
	t.Run("server of other CA refused by client", func(t *testing.T) {
		_, cerr, _ := handshake(t, ServerTLSConfig(other.Pool(), stranger.TLSCertificate()),
			ClientTLSConfig(ca.Pool(), n2.TLSCertificate(), "localhost"))
		var uae x509.UnknownAuthorityError
		if !errors.As(cerr, &uae) {
			t.Errorf("client err = %v, want x509.UnknownAuthorityError", cerr)
		}
	})
	t.Run("no krypton URI refused", func(t *testing.T) {
		serr, _, _ := handshake(t, NodeTLSConfig(ca.Pool(), n1.TLSCertificate()),
			ClientTLSConfig(ca.Pool(), nouri.TLSCertificate(), "localhost"))
		if !errors.Is(serr, ErrNoIdentity) {
			t.Errorf("server err = %v, want ErrNoIdentity", serr)
		}
	})
	t.Run("no client certificate refused", func(t *testing.T) {
		serr, _, _ := handshake(t, ServerTLSConfig(ca.Pool(), n1.TLSCertificate()),
			&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: "localhost"})
		if serr == nil {
			t.Error("server accepted a client without a certificate")
		}
	})
}

func TestPeerIdentityNeedsVerification(t *testing.T) {
	ca := newCA(t)
	n1, _ := ca.IssueNode("n1", NodeOptions{Region: "eu"})
	cs := tls.ConnectionState{PeerCertificates: []*x509.Certificate{n1.Leaf()}}
	if _, err := PeerIdentity(cs); !errors.Is(err, ErrUnverified) {
		t.Errorf("err = %v, want ErrUnverified", err)
	}
}

func TestTokenOperatorURI(t *testing.T) {
	id := Identity{Kind: KindOperator, Operator: "auth0|42 x", Issuer: "https://idp.example.com/realms/ops"}
	if got, want := id.String(), "oidc:https://idp.example.com/realms/ops#auth0%7C42%20x"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if _, err := ParseIdentity(id.URI()); err == nil {
		t.Fatal("a token operator's URI parsed as a certificate identity")
	}
}
