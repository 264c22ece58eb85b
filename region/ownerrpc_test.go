package region_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestSetOwnerKeyOnlyForOperators: AdminService.SetOwnerKey, which registers the key a tenant's
// root-of-trust changes must be signed with, answers operator certificates only. A service of the
// tenant (PermissionDenied) and a gateway (its certificate refused at the TLS handshake) are refused
// before any handler runs: the handler would answer NotFound, as tenant acme does not exist here.
func TestSetOwnerKeyOnlyForOperators(t *testing.T) {
	r := regiontest.Start(t, 3)
	leader := r.WaitLeader()
	k := ownertest.New(t)
	service, err := r.CA.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gateway, err := r.CA.IssueGateway("acme", "gw-1", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*pki.Certificate{"a service": service, "a gateway": gateway} {
		conn, err := transport.Dial(context.Background(), r.Cfgs[leader].RPCAddr, transport.ClientConfig{Roots: r.CA.Pool(), Certificate: cert.TLSCertificate(),
			Server: pki.Identity{Kind: pki.KindNode, Region: r.Cfgs[leader].Region, NodeID: r.Cfgs[leader].NodeID}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_, err = kv1.NewAdminServiceClient(conn).SetOwnerKey(ctxT(t), &kv1.SetOwnerKeyRequest{RequestId: "plant-" + name, Tenant: "acme", OwnerPublicKey: k.Public})
		// The node refuses a gateway's certificate at the handshake: the client reads "bad
		// certificate", or, when the node closed first on a busy machine, a broken pipe or a reset.
		refused := status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated ||
			(status.Code(err) == codes.Unavailable && (strings.Contains(err.Error(), "bad certificate") ||
				strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "connection reset")))
		if !refused {
			t.Errorf("%s calling SetOwnerKey: %v, want PermissionDenied or Unauthenticated", name, err)
		}
	}
	// Whatever the client read, no owner key was planted.
	if pem, _, _ := r.Nodes[leader].State().OwnerKey("acme"); pem != "" {
		t.Errorf("after the refused calls, acme has owner key %q, want none", pem)
	}
}
