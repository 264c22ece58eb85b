package region_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestBadInput sends each kind of bad input to the region and checks that it gets its documented
// gRPC code (docs/api.md, "Error model") and changes nothing: the state hash of every node is the
// same before and after each call.
func TestBadInput(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	createTenant(t, admin, r.Anchor, "globex", "payments")
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-ledger", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	good := mustWrap(t, r, 1, "acme", "payments")
	acme := r.WrapClient(1, "acme", "payments")
	acmeLedger := r.WrapClient(2, "acme", "ledger")
	globex := r.WrapClient(0, "globex", "payments")
	nobody := r.WrapClient(0, "nobody", "payments")
	acmeNope := r.WrapClient(0, "acme", "nope")

	dial := func(cfg transport.ClientConfig) *grpc.ClientConn {
		t.Helper()
		conn, err := transport.Dial(context.Background(), r.Cfgs[0].RPCAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	svcCert, err := r.CA.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opCert, err := r.CA.IssueOperator("op", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := pki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.IssueService("acme", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serviceAsAdmin := kv1.NewAdminServiceClient(dial(transport.ClientConfig{Roots: r.CA.Pool(), Certificate: svcCert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindNode}}))
	serviceAsNode := kv1.NewNodeServiceClient(dial(transport.ClientConfig{Roots: r.CA.Pool(), Certificate: svcCert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindNode}}))
	operatorAsService := kv1.NewWrapServiceClient(dial(transport.ClientConfig{Roots: r.CA.Pool(), Certificate: opCert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindNode}}))
	foreignClient := kv1.NewWrapServiceClient(dial(transport.ClientConfig{Roots: r.CA.Pool(), Certificate: foreign.TLSCertificate(), Server: pki.Identity{Kind: pki.KindNode}}))
	// No client certificate at all: crypto/tls directly, since transport.Dial insists on one.
	noCertConn, err := grpc.NewClient(r.Cfgs[0].RPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: r.CA.Pool()})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { noCertConn.Close() })
	noCert := kv1.NewWrapServiceClient(noCertConn)

	// Blobs gone wrong. Header layout (docs/format.md): magic, version, kind, KDF, tenant, service,
	// parent version (4 bytes), salt, nonce, then 48 bytes of ciphertext and tag.
	blob := good.blob
	versionAt := 4 + 1 + len("acme") + 1 + len("payments")
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(blob)) }
	garbage := bytes.Repeat([]byte{0xA5}, len(blob))
	truncated := blob[:len(blob)-1]
	oversized := append(bytes.Clone(blob), make([]byte, wrap.MaxBlobSize+1-len(blob))...)
	huge := bytes.Repeat([]byte{0x4B}, 4*wrap.MaxBlobSize)
	tampered := mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b })
	otherKind := mutate(func(b []byte) []byte { b[2] = byte(wrap.KindSealedServiceKey); return b })
	unknownVersion := mutate(func(b []byte) []byte { b[versionAt+3] = 99; return b })
	bigContext := make([]byte, wrap.MaxContextSize+1)

	unwrap := func(c kv1.WrapServiceClient, b, ctx []byte) func() error {
		return func() error {
			_, err := c.Unwrap(ctxShort(t), &kv1.UnwrapRequest{Blob: b, Context: ctx})
			return err
		}
	}
	wrapKey := func(c kv1.WrapServiceClient, key *kv1.KeyRef, plain, ctx []byte) func() error {
		return func() error {
			_, err := c.Wrap(ctxShort(t), &kv1.WrapRequest{Key: key, Plaintext: plain, Context: ctx})
			return err
		}
	}
	createTenantNamed := func(name string) func() error {
		return func() error {
			_, err := admin.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "bad-" + name, Tenant: name, AnchorUri: r.Anchor})
			return err
		}
	}
	createKey := func(req *kv1.CreateKeyRequest) func() error {
		return func() error { _, err := admin.CreateKey(ctxShort(t), req); return err }
	}
	n1025 := make([]*kv1.WrapRequest, transport.MaxBatchItems+1)
	u1025 := make([]*kv1.UnwrapRequest, transport.MaxBatchItems+1)
	g1025 := make([]*kv1.GenerateDataKeyRequest, transport.MaxBatchItems+1)
	r1025 := make([]*kv1.RewrapRequest, transport.MaxBatchItems+1)
	for i := range n1025 {
		n1025[i] = &kv1.WrapRequest{Key: ref, Plaintext: randKey(t)}
		u1025[i] = &kv1.UnwrapRequest{Blob: good.blob, Context: good.ctx}
		g1025[i] = &kv1.GenerateDataKeyRequest{Key: ref}
		r1025[i] = &kv1.RewrapRequest{Blob: good.blob, Context: good.ctx}
	}

	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"garbage blob", unwrap(acme, garbage, nil), codes.InvalidArgument},
		{"truncated blob", unwrap(acme, truncated, good.ctx), codes.InvalidArgument},
		{"oversized blob", unwrap(acme, oversized, good.ctx), codes.InvalidArgument},
		{"huge blob", unwrap(acme, huge, good.ctx), codes.InvalidArgument},
		{"empty blob", unwrap(acme, nil, good.ctx), codes.InvalidArgument},
		{"tampered blob", unwrap(acme, tampered, good.ctx), codes.InvalidArgument},
		{"sealed-key kind", unwrap(acme, otherKind, good.ctx), codes.InvalidArgument},
		{"blob of an unknown version", unwrap(acme, unknownVersion, good.ctx), codes.NotFound},
		{"wrong context", unwrap(acme, blob, []byte("other")), codes.InvalidArgument},
		{"oversized context on unwrap", unwrap(acme, blob, bigContext), codes.InvalidArgument},
		{"oversized context on wrap", wrapKey(acme, ref, randKey(t), bigContext), codes.InvalidArgument},
		{"oversized context on generate", func() error {
			_, err := acme.GenerateDataKey(ctxShort(t), &kv1.GenerateDataKeyRequest{Key: ref, Context: bigContext})
			return err
		}, codes.InvalidArgument},
		{"empty plaintext", wrapKey(acme, ref, nil, nil), codes.InvalidArgument},
		{"31-byte plaintext", wrapKey(acme, ref, make([]byte, 31), nil), codes.InvalidArgument},
		{"33-byte plaintext", wrapKey(acme, ref, bytes.Repeat([]byte{1}, 33), nil), codes.InvalidArgument},
		{"65-byte plaintext", wrapKey(acme, ref, bytes.Repeat([]byte{1}, 65), nil), codes.InvalidArgument},
		{"no key", wrapKey(acme, nil, randKey(t), nil), codes.InvalidArgument},
		{"no service", wrapKey(acme, &kv1.KeyRef{Tenant: "acme"}, randKey(t), nil), codes.InvalidArgument},
		{"unknown tenant", wrapKey(nobody, &kv1.KeyRef{Tenant: "nobody", Service: "payments"}, randKey(t), nil), codes.NotFound},
		{"unknown service", wrapKey(acmeNope, &kv1.KeyRef{Tenant: "acme", Service: "nope"}, randKey(t), nil), codes.NotFound},
		{"unknown key version", wrapKey(acme, &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 7}, randKey(t), nil), codes.NotFound},
		{"another tenant's blob", unwrap(globex, blob, good.ctx), codes.PermissionDenied},
		{"another service's blob", unwrap(acmeLedger, blob, good.ctx), codes.PermissionDenied},
		{"another tenant's key", wrapKey(globex, ref, randKey(t), nil), codes.PermissionDenied},
		{"service certificate on AdminService", func() error {
			_, err := serviceAsAdmin.ListTenants(ctxShort(t), &kv1.ListTenantsRequest{})
			return err
		}, codes.PermissionDenied},
		{"service certificate revoking", func() error {
			_, err := serviceAsAdmin.RevokeKey(ctxShort(t), &kv1.RevokeKeyRequest{RequestId: "x", Scope: &kv1.KeyScope{Tenant: "acme"}, Reason: "test"})
			return err
		}, codes.PermissionDenied},
		{"service certificate on NodeService", func() error {
			_, err := serviceAsNode.RenewLease(ctxShort(t), &kv1.RenewLeaseRequest{NodeId: "node-1"})
			return err
		}, codes.PermissionDenied},
		{"operator certificate on WrapService", unwrap(operatorAsService, blob, good.ctx), codes.PermissionDenied},
		{"certificate from another CA", unwrap(foreignClient, blob, good.ctx), codes.Unavailable},
		{"no client certificate", unwrap(noCert, blob, good.ctx), codes.Unavailable},
		{"batch wrap of 0", func() error { _, err := acme.BatchWrap(ctxShort(t), &kv1.BatchWrapRequest{}); return err }, codes.InvalidArgument},
		{"batch unwrap of 0", func() error { _, err := acme.BatchUnwrap(ctxShort(t), &kv1.BatchUnwrapRequest{}); return err }, codes.InvalidArgument},
		{"batch generate of 0", func() error {
			_, err := acme.BatchGenerateDataKey(ctxShort(t), &kv1.BatchGenerateDataKeyRequest{})
			return err
		}, codes.InvalidArgument},
		{"batch rewrap of 0", func() error { _, err := acme.BatchRewrap(ctxShort(t), &kv1.BatchRewrapRequest{}); return err }, codes.InvalidArgument},
		{"batch wrap of 1025", func() error { _, err := acme.BatchWrap(ctxShort(t), &kv1.BatchWrapRequest{Items: n1025}); return err }, codes.InvalidArgument},
		{"batch unwrap of 1025", func() error {
			_, err := acme.BatchUnwrap(ctxShort(t), &kv1.BatchUnwrapRequest{Items: u1025})
			return err
		}, codes.InvalidArgument},
		{"batch generate of 1025", func() error {
			_, err := acme.BatchGenerateDataKey(ctxShort(t), &kv1.BatchGenerateDataKeyRequest{Items: g1025})
			return err
		}, codes.InvalidArgument},
		{"batch rewrap of 1025", func() error {
			_, err := acme.BatchRewrap(ctxShort(t), &kv1.BatchRewrapRequest{Items: r1025})
			return err
		}, codes.InvalidArgument},
		{"tenant name empty", createTenantNamed(""), codes.InvalidArgument},
		{"tenant name upper case", createTenantNamed("Acme2"), codes.InvalidArgument},
		{"tenant name starting with a dash", createTenantNamed("-acme"), codes.InvalidArgument},
		{"tenant name starting with a dot", createTenantNamed(".acme"), codes.InvalidArgument},
		{"tenant name with a slash", createTenantNamed("a/b"), codes.InvalidArgument},
		{"tenant name with a space", createTenantNamed("a b"), codes.InvalidArgument},
		{"tenant name with a NUL", createTenantNamed("ab\x00"), codes.InvalidArgument},
		{"tenant name not ASCII", createTenantNamed("acmé"), codes.InvalidArgument},
		{"tenant name too long", createTenantNamed(strings.Repeat("a", wrap.MaxNameLen+1)), codes.InvalidArgument},
		{"tenant with an unknown anchor scheme", func() error {
			_, err := admin.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "bad-anchor", Tenant: "initech", AnchorUri: "nope://x"})
			return err
		}, codes.InvalidArgument},
		{"tenant that exists", func() error {
			_, err := admin.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "again", Tenant: "acme", AnchorUri: r.Anchor})
			return err
		}, codes.AlreadyExists},
		{"key with an invalid service name", createKey(&kv1.CreateKeyRequest{RequestId: "bad-svc", Tenant: "acme", Service: "Pay/ments"}), codes.InvalidArgument},
		{"key of an unknown tenant", createKey(&kv1.CreateKeyRequest{RequestId: "bad-tenant", Tenant: "nobody", Service: "payments"}), codes.NotFound},
		{"key that exists", createKey(&kv1.CreateKeyRequest{RequestId: "dup", Tenant: "acme", Service: "payments"}), codes.AlreadyExists},
		{"write without a request id", createKey(&kv1.CreateKeyRequest{Tenant: "acme", Service: "norid"}), codes.InvalidArgument},
		{"write with a request id of 129 bytes", createKey(&kv1.CreateKeyRequest{RequestId: strings.Repeat("r", 129), Tenant: "acme", Service: "norid"}), codes.InvalidArgument},
		{"write with a request id not printable", createKey(&kv1.CreateKeyRequest{RequestId: "a\nb", Tenant: "acme", Service: "norid"}), codes.InvalidArgument},
		{"revoke without a request id", func() error {
			_, err := admin.RevokeKey(ctxShort(t), &kv1.RevokeKeyRequest{Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"})
			return err
		}, codes.InvalidArgument},
		{"revoking a version without a service", func() error {
			_, err := admin.RevokeKey(ctxShort(t), &kv1.RevokeKeyRequest{RequestId: "bad-rev", Scope: &kv1.KeyScope{Tenant: "acme", Version: 1}, Reason: "test"})
			return err
		}, codes.InvalidArgument},
		{"revoking an unknown tenant", func() error {
			_, err := admin.RevokeKey(ctxShort(t), &kv1.RevokeKeyRequest{RequestId: "bad-rev2", Scope: &kv1.KeyScope{Tenant: "nobody"}, Reason: "test"})
			return err
		}, codes.NotFound},
	}

	before := hashes(r)
	for _, c := range cases {
		err := c.call()
		// Unavailable (a node between leases, an election) changes nothing and says "try
		// again": on a loaded machine a short-timeout test region can lose a lease at any time.
		deadline := time.Now().Add(20 * time.Second)
		for status.Code(err) == codes.Unavailable && c.want != codes.Unavailable && time.Now().Before(deadline) {
			r.WaitServing()
			err = c.call()
		}
		wantCode(t, err, c.want, c.name)
		if got := hashes(r); !maps.Equal(got, before) {
			t.Fatalf("%s changed the state", c.name)
		}
	}
	// Nothing was applied late either, and the region still serves the good blob everywhere.
	waitSameState(t, r)
	if got := hashes(r); !maps.Equal(got, before) {
		t.Fatal("the bad input changed the state")
	}
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", good)
	}
}
