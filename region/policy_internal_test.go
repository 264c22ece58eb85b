package region

import (
	"testing"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
)

func TestPatternMatch(t *testing.T) {
	const uri = "spiffe://krypton/tenant/acme/service/payments"
	tests := []struct {
		pattern string
		want    bool
	}{
		{uri, true},
		{"spiffe://krypton/tenant/acme/service/*", true},
		{"spiffe://krypton/tenant/acme/service/pay*", true},
		{"spiffe://krypton/tenant/acme/service/*ments", true},
		{"spiffe://krypton/tenant/acme/service/p*y*s", true},
		{"spiffe://krypton/tenant/*/service/*", true},
		{"spiffe://krypton/tenant/acme/**", true},
		{"spiffe://krypton/**", true},
		{"spiffe://krypton/tenant/acme/service/payments/**", true}, // "/**" matches no more segments too
		{"spiffe://krypton/tenant/acme/service/payment/**", false},
		{"spiffe://krypton/tenant/acme/service", false},
		{"spiffe://krypton/tenant/acme/*", false}, // '*' does not cross '/'
		{"spiffe://krypton/tenant/acme/service/pay", false},
		{"spiffe://krypton/tenant/acme/service/payments/x", false},
		{"spiffe://krypton/tenant/other/service/*", false},
		{"spiffe://other/tenant/acme/service/payments", false},
		{"*", false},
		{"spiffe://krypton/tenant/acme/service/?ayments", false}, // '?' is a literal
	}
	for _, tt := range tests {
		p := compilePattern(tt.pattern)
		if got := p.match([]byte(uri)); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, uri, got, tt.want)
		}
	}
}

func TestCallerURIMatchesPKI(t *testing.T) {
	id := pki.Identity{Kind: pki.KindService, Tenant: "acme-1", Service: "pay.v2"}
	if got := string(callerURI(nil, id)); got != id.String() {
		t.Fatalf("callerURI = %q, pki says %q", got, id.String())
	}
}

func TestPolicyAllows(t *testing.T) {
	p := compilePolicy(fsm.Policy{Revision: 3, Rules: []fsm.PolicyRule{
		{Caller: "spiffe://krypton/tenant/acme/service/*", Service: "*", Operations: []fsm.PolicyOp{fsm.PolicyUnwrap}},
		{Caller: "spiffe://krypton/tenant/ops/**", Service: "billing", Operations: []fsm.PolicyOp{fsm.PolicyWrap, fsm.PolicyRewrap}},
	}})
	tests := []struct {
		caller, service string
		op              fsm.PolicyOp
		want            bool
	}{
		{"spiffe://krypton/tenant/acme/service/web", "payments", fsm.PolicyUnwrap, true},
		{"spiffe://krypton/tenant/acme/service/web", "payments", fsm.PolicyWrap, false},
		{"spiffe://krypton/tenant/ops/service/batch", "billing", fsm.PolicyRewrap, true},
		{"spiffe://krypton/tenant/ops/service/batch", "payments", fsm.PolicyWrap, false},
		{"spiffe://krypton/tenant/ops/service/batch", "billing", fsm.PolicyGenerateDataKey, false},
		{"spiffe://krypton/tenant/evil/service/web", "payments", fsm.PolicyUnwrap, false},
	}
	for _, tt := range tests {
		if got := p.allows([]byte(tt.caller), tt.service, tt.op); got != tt.want {
			t.Errorf("allows(%s, %s, %v) = %v, want %v", tt.caller, tt.service, tt.op, got, tt.want)
		}
	}
}

// BenchmarkPolicyCheck measures the policy check of one call on the wrap path: table lookup,
// caller URI, and the rules, with the matching rule last of 100.
func BenchmarkPolicyCheck(b *testing.B) {
	var rules []fsm.PolicyRule
	for range 99 {
		rules = append(rules, fsm.PolicyRule{Caller: "spiffe://krypton/tenant/other/service/*", Service: "*", Operations: []fsm.PolicyOp{fsm.PolicyWrap}})
	}
	rules = append(rules, fsm.PolicyRule{Caller: "spiffe://krypton/tenant/acme/service/pay*", Service: "payments", Operations: []fsm.PolicyOp{fsm.PolicyUnwrap, fsm.PolicyWrap}})
	table := newPolicyTable()
	table.set("acme", fsm.Policy{Revision: 1, Rules: rules})
	id := pki.Identity{Kind: pki.KindService, Tenant: "acme", Service: "payments"}
	b.ReportAllocs()
	for b.Loop() {
		p := table.get("acme")
		var buf [160]byte
		if !p.allows(callerURI(buf[:0], id), "payments", fsm.PolicyWrap) {
			b.Fatal("refused")
		}
	}
}
