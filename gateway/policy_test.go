package gateway_test

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestGatewayChecksCallerAgainstPolicy: the gateway acts as acme/payments, and the tenant's policy
// lets payments and web use the payments key but not billing. Through the gateway, web works and
// billing (a service of the same tenant) is refused with PermissionDenied by the gateway itself:
// no call reaches the region. Over KMIP, billing stays refused. Before the fix the gateway let
// any service of its tenant act as the gateway.
func TestGatewayChecksCallerAgainstPolicy(t *testing.T) {
	gov := governancetest.Start(t, 1, governancetest.WithHeartbeat(100*time.Millisecond))
	r := regiontest.Start(t, 1, regiontest.WithCA(gov.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(gov.Addrs()...))
	gc := gov.Client(gov.WaitLeader())
	ctx := ctxT(t)
	if _, err := gc.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: governancetest.RequestID(), Tenant: "acme", AnchorUri: r.Anchor, Regions: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"payments", "billing"} {
		if _, err := gc.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: governancetest.RequestID(), Tenant: "acme", Service: s}); err != nil {
			t.Fatal(err)
		}
	}
	ops := []kv1.Operation{kv1.Operation_OPERATION_WRAP, kv1.Operation_OPERATION_UNWRAP, kv1.Operation_OPERATION_GENERATE_DATA_KEY}
	pol, err := gc.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: governancetest.RequestID(), Policy: &kv1.Policy{Tenant: "acme", Rules: []*kv1.PolicyRule{
		{Caller: "spiffe://krypton/tenant/acme/service/payments", Service: "payments", Operations: ops},
		{Caller: "spiffe://krypton/tenant/acme/service/web", Service: "payments", Operations: ops[1:]},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the policy and keys in the region", func() bool {
		p, err := r.Nodes[0].State().Policy("acme")
		if err != nil || p.Revision != pol.GetRevision() {
			return false
		}
		_, err = r.Nodes[0].State().Tenant("acme")
		return err == nil
	})
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) { c.KMIPAddr = "127.0.0.1:0" })
	web, billing := tcpClient(t, r, g, "acme", "web"), tcpClient(t, r, g, "acme", "billing")

	// Allowed: web, once the gateway has learnt the policy (until then the default rule refuses it).
	var enc *kv1.EncryptResponse
	waitUntil(t, "web allowed through the gateway", func() bool {
		enc, err = web.Encrypt(ctx, &kv1.EncryptRequest{Data: []byte("web's data")})
		return err == nil
	})
	if dec, err := web.Decrypt(ctx, &kv1.DecryptRequest{Ciphertext: enc.GetCiphertext()}); err != nil || !bytes.Equal(dec.GetData(), []byte("web's data")) {
		t.Fatalf("web Decrypt: %q, %v", dec.GetData(), err)
	}
	// The gateway's own service, on the socket, still works.
	if _, err := unixClient(t, g).Encrypt(ctx, &kv1.EncryptRequest{Data: []byte("x")}); err != nil {
		t.Fatalf("Encrypt on the socket: %v", err)
	}

	// Refused: billing, for the gateway's key and for its own, in every operation; the region is
	// not asked.
	regionCalls := func() float64 { return counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", nil) }
	listed := func() float64 {
		return counter(t, g.Registry(), "krypton_gateway_region_rpcs_total", map[string]string{"method": "ListEndpoints"})
	}
	before := regionCalls() - listed()
	for name, call := range map[string]func() error{
		"Encrypt": func() error {
			_, err := billing.Encrypt(ctx, &kv1.EncryptRequest{Data: []byte("x")})
			return err
		},
		"Encrypt under its own key": func() error {
			_, err := billing.Encrypt(ctx, &kv1.EncryptRequest{Key: &kv1.KeyRef{Service: "billing"}, Data: []byte("x")})
			return err
		},
		"GenerateDataKey": func() error {
			_, err := billing.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{})
			return err
		},
		"Decrypt": func() error {
			_, err := billing.Decrypt(ctx, &kv1.DecryptRequest{Ciphertext: enc.GetCiphertext()})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("billing %s through the gateway: %v, want PermissionDenied", name, err)
		}
	}
	if after := regionCalls() - listed(); after != before {
		t.Errorf("the refused calls reached the region: %v region calls, %v before", after, before)
	}

	// KMIP: only the gateway's own service is served; billing is refused.
	k := dialKMIP(t, r, g, "acme", "billing")
	if reason := k.reason(ttlv.OpRegister, registerPayload("imported", ttlv.AlgorithmAES, 256, bytes.Repeat([]byte{7}, 32))...); reason == 0 {
		t.Error("billing's KMIP Create: no refusal reason")
	}
	if after := regionCalls() - listed(); after != before {
		t.Errorf("billing's KMIP call reached the region")
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		tm := time.NewTimer(20 * time.Millisecond)
		<-tm.C
	}
}
