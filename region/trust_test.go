package region_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestNodeServiceAdmitsOnlyItsRegionsNodes: the L2 hand-out (FetchTenantKey) answers only a node of
// the region's own kind and region, however the certificate names the voter it claims to be. A
// gateway's certificate (issue 14: a gateway had a node certificate, made itself a voter, then
// fetched the tenant's L2), another region's node-2 and governance's node-2 are all refused; the
// region's own node-2 certificate, the control, is answered.
func TestNodeServiceAdmitsOnlyItsRegionsNodes(t *testing.T) {
	t.Parallel()
	r := setup(t)
	ld := r.Leader()
	voter := r.Cfgs[(ld+1)%len(r.Cfgs)].NodeID
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(issue func() (*pki.Certificate, error)) error {
		t.Helper()
		cert, err := issue()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := transport.Dial(context.Background(), r.Cfgs[ld].RPCAddr, transport.ClientConfig{
			Roots: r.CA.Pool(), Certificate: cert.TLSCertificate(),
			Server: pki.Identity{Kind: pki.KindNode, Region: r.Cfgs[ld].Region, NodeID: r.Cfgs[ld].NodeID},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = kv1.NewNodeServiceClient(conn).FetchTenantKey(ctxShort(t), &kv1.FetchTenantKeyRequest{
			NodeId: voter, Tenant: "acme", TenantKeyVersion: 1,
			Suite:              kv1.HpkeSuite_HPKE_SUITE_X25519_SHA256_AES256GCM,
			RecipientPublicKey: priv.PublicKey().Bytes(),
		})
		return err
	}
	for _, c := range []struct {
		name  string
		issue func() (*pki.Certificate, error)
		want  codes.Code
	}{
		// A gateway's certificate is a server's only: the handshake itself fails.
		{"a gateway's certificate", func() (*pki.Certificate, error) {
			return r.CA.IssueGateway("acme", voter, pki.NodeOptions{})
		}, codes.Unavailable},
		{"another region's " + voter, func() (*pki.Certificate, error) {
			return r.CA.IssueNode(voter, pki.NodeOptions{Region: "elsewhere"})
		}, codes.PermissionDenied},
		{"governance's " + voter, func() (*pki.Certificate, error) {
			return r.CA.IssueGovernance(voter, pki.NodeOptions{})
		}, codes.PermissionDenied},
		{"a service of the tenant", func() (*pki.Certificate, error) {
			return r.CA.IssueService("acme", "payments", 0)
		}, codes.PermissionDenied},
		{"the region's own " + voter + " (control)", func() (*pki.Certificate, error) {
			return r.CA.IssueNode(voter, pki.NodeOptions{Region: r.Cfgs[ld].Region})
		}, codes.OK},
	} {
		wantCode(t, fetch(c.issue), c.want, "FetchTenantKey with "+c.name)
	}
}
