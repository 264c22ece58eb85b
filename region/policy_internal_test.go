package region

import (
	"testing"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/policy"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The matcher's own tests (patterns, rules, the default rule, and FuzzMatch against the naive
// matcher) are package policy's; these check what the region adds.

func TestCallerURIMatchesPKI(t *testing.T) {
	id := pki.Identity{Kind: pki.KindService, Tenant: "acme-1", Service: "pay.v2"}
	if got := string(policy.CallerURI(nil, id.Tenant, id.Service)); got != id.String() {
		t.Fatalf("CallerURI = %q, pki says %q", got, id.String())
	}
}

// TestPolicyOpsAreTheAPIs: policy.Op values are krypton.v1 Operation values (policyFromProto
// converts by number).
func TestPolicyOpsAreTheAPIs(t *testing.T) {
	for op, want := range map[policy.Op]kv1.Operation{
		policy.Wrap: kv1.Operation_OPERATION_WRAP, policy.Unwrap: kv1.Operation_OPERATION_UNWRAP,
		policy.GenerateDataKey: kv1.Operation_OPERATION_GENERATE_DATA_KEY, policy.Rewrap: kv1.Operation_OPERATION_REWRAP,
	} {
		if int32(op) != int32(want) {
			t.Errorf("%v = %d, the API's %v = %d", op, op, want, want)
		}
	}
	if policy.NumOps != int(kv1.Operation_OPERATION_REWRAP) {
		t.Errorf("policy.NumOps %d, the API has %d operations", policy.NumOps, kv1.Operation_OPERATION_REWRAP)
	}
}

// BenchmarkPolicyCheck measures the policy check of one call on the wrap path: table lookup,
// caller URI, and the rules, with the matching rule last of 100.
func BenchmarkPolicyCheck(b *testing.B) {
	var rules []policy.Rule
	for range 99 {
		rules = append(rules, policy.Rule{Caller: "spiffe://krypton/tenant/other/service/*", Service: "*", Operations: []policy.Op{policy.Wrap}})
	}
	rules = append(rules, policy.Rule{Caller: "spiffe://krypton/tenant/acme/service/pay*", Service: "payments", Operations: []policy.Op{policy.Unwrap, policy.Wrap}})
	table := newPolicyTable()
	table.set("acme", policy.Policy{Revision: 1, Rules: rules})
	id := pki.Identity{Kind: pki.KindService, Tenant: "acme", Service: "payments"}
	b.ReportAllocs()
	for b.Loop() {
		p := table.get("acme")
		if !p.Permits(id.Tenant, id.Service, "acme", "payments", policy.Wrap) {
			b.Fatal("refused")
		}
	}
}
