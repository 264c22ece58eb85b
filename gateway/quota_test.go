package gateway_test

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func hasRetryInfo(err error) bool {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
			return true
		}
	}
	return false
}

// The gateway enforces its tenant's quota, learnt from the region, on every data-key request it
// serves, cached unwraps included (which never reach the region): over the quota it answers
// ResourceExhausted with a RetryInfo detail, naming the quota; another tenant's gateway on the same
// region is unaffected.
func TestGatewayEnforcesQuota(t *testing.T) {
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "payments")
	setupTenant(t, r, "globex", "web")
	ga := startGateway(t, r, "acme", "payments", func(c *gateway.Config) { c.CacheEntries = 100 })
	gb := startGateway(t, r, "globex", "web", nil)
	acme, globex := unixClient(t, ga), unixClient(t, gb)
	dk, err := acme.GenerateDataKey(ctxT(t), &kv1.GenerateDataKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acme.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: dk.GetBlob()}); err != nil {
		t.Fatal(err) // now in the cache
	}
	if _, err := r.AdminClient(r.WaitLeader()).SetQuota(ctxT(t), &kv1.SetQuotaRequest{RequestId: "q", Tenant: "acme", Quota: &kv1.Quota{Rate: 1, Burst: 2}}); err != nil {
		t.Fatal(err)
	}
	var refused error
	waitUntil(t, "the gateway refusing cached unwraps over the quota", func() bool {
		_, err := acme.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: dk.GetBlob()})
		if status.Code(err) == codes.ResourceExhausted && strings.HasPrefix(status.Convert(err).Message(), "gateway:") {
			refused = err
			return true
		}
		if err != nil && status.Code(err) != codes.ResourceExhausted {
			t.Fatal(err)
		}
		return false
	})
	if !hasRetryInfo(refused) || !strings.Contains(refused.Error(), "tenant acme's quota (rate 1/s, burst 2)") || !strings.Contains(refused.Error(), "krypton tenant set-quota") {
		t.Fatalf("refusal %v", refused)
	}
	if counter(t, ga.Registry(), "krypton_gateway_quota_refusals_total", map[string]string{"kind": "rate", "scope": "tenant"}) < 1 {
		t.Error("krypton_gateway_quota_refusals_total did not count the refusal")
	}
	for range 10 {
		if _, err := globex.GenerateDataKey(ctxT(t), &kv1.GenerateDataKeyRequest{}); err != nil {
			t.Fatalf("globex beside an exhausted acme: %v", err)
		}
	}
}
