package policy

import (
	"errors"
	"strings"
	"testing"
)

// matchCases are patterns against callers, from governance's TestMatchCaller and region's
// TestPatternMatch (the two matchers this package replaced); both matchers must agree with want.
var matchCases = []struct {
	pattern, caller string
	want            bool
}{
	{"spiffe://krypton/tenant/acme/service/*", "spiffe://krypton/tenant/acme/service/billing", true},
	{"spiffe://krypton/tenant/acme/service/*", "spiffe://krypton/tenant/acme/service/a/b", false},
	{"spiffe://krypton/tenant/*/service/billing", "spiffe://krypton/tenant/acme/service/billing", true},
	{"spiffe://krypton/tenant/acme/**", "spiffe://krypton/tenant/acme/service/billing", true},
	{"spiffe://krypton/tenant/acme/**", "spiffe://krypton/tenant/acme", true},
	{"spiffe://krypton/tenant/acme/**", "spiffe://krypton/tenant/acmex/service/b", false},
	{"spiffe://krypton/tenant/acme/service/bill*", "spiffe://krypton/tenant/acme/service/billing", true},
	{"exact", "exact", true},
	{"exact", "exactly", false},

	{"spiffe://krypton/tenant/acme/service/payments", payments, true},
	{"spiffe://krypton/tenant/acme/service/pay*", payments, true},
	{"spiffe://krypton/tenant/acme/service/*ments", payments, true},
	{"spiffe://krypton/tenant/acme/service/p*y*s", payments, true},
	{"spiffe://krypton/tenant/*/service/*", payments, true},
	{"spiffe://krypton/**", payments, true},
	{"spiffe://krypton/tenant/acme/service/payments/**", payments, true}, // "/**" matches no more segments too
	{"spiffe://krypton/tenant/acme/service/payment/**", payments, false},
	{"spiffe://krypton/tenant/acme/service", payments, false},
	{"spiffe://krypton/tenant/acme/*", payments, false}, // '*' does not cross '/'
	{"spiffe://krypton/tenant/acme/service/pay", payments, false},
	{"spiffe://krypton/tenant/acme/service/payments/x", payments, false},
	{"spiffe://krypton/tenant/other/service/*", payments, false},
	{"spiffe://other/tenant/acme/service/payments", payments, false},
	{"*", payments, false},
	{"spiffe://krypton/tenant/acme/service/?ayments", payments, false}, // '?' is a literal
	{"/**", "/x", true},
	{"a*/b", "a/b", true},
}

const payments = "spiffe://krypton/tenant/acme/service/payments"

func TestMatch(t *testing.T) {
	for _, c := range matchCases {
		p := compilePattern(c.pattern)
		if got := p.match([]byte(c.caller)); got != c.want {
			t.Errorf("compiled: %q matches %q = %v, want %v", c.pattern, c.caller, got, c.want)
		}
		if got := naiveMatch(c.pattern, c.caller); got != c.want {
			t.Errorf("naive: %q matches %q = %v, want %v", c.pattern, c.caller, got, c.want)
		}
	}
}

func TestCallerURI(t *testing.T) {
	if got := string(CallerURI(nil, "acme", "payments")); got != payments {
		t.Fatalf("CallerURI = %q", got)
	}
}

func TestPermits(t *testing.T) {
	p := Compile(Policy{Revision: 3, Rules: []Rule{
		{Caller: "spiffe://krypton/tenant/acme/service/*", Service: "*", Operations: []Op{Unwrap}},
		{Caller: "spiffe://krypton/tenant/ops/**", Service: "billing", Operations: []Op{Wrap, Rewrap}},
	}})
	tests := []struct {
		callerTenant, callerService, service string
		op                                   Op
		want                                 bool
	}{
		{"acme", "web", "payments", Unwrap, true},
		{"acme", "web", "payments", Wrap, false},
		{"ops", "batch", "billing", Rewrap, true},
		{"ops", "batch", "payments", Wrap, false},
		{"ops", "batch", "billing", GenerateDataKey, false},
		{"evil", "web", "payments", Unwrap, false},
		{"acme", "payments", "payments", Wrap, false}, // the rules replace the default
		{"acme", "web", "payments", 0, false},
		{"acme", "web", "payments", 9, false},
	}
	for _, tt := range tests {
		if got := p.Permits(tt.callerTenant, tt.callerService, "acme", tt.service, tt.op); got != tt.want {
			t.Errorf("Permits(%s/%s, %s, %v) = %v, want %v", tt.callerTenant, tt.callerService, tt.service, tt.op, got, tt.want)
		}
	}
	if p.Revision() != 3 || p.Default() {
		t.Errorf("Revision %d, Default %v", p.Revision(), p.Default())
	}
	// The default rule: nil, or a policy without rules.
	for _, d := range []*Compiled{nil, Compile(Policy{Revision: 2})} {
		if !d.Default() || !d.Permits("acme", "pay", "acme", "pay", Wrap) ||
			d.Permits("acme", "web", "acme", "pay", Unwrap) || d.Permits("other", "pay", "acme", "pay", Unwrap) {
			t.Errorf("%v is not the default rule", d)
		}
		if d.Allows([]byte(payments), "payments", Wrap) {
			t.Errorf("Allows of the default rule is true: the default is Permits'")
		}
	}
}

func validName(s string) bool {
	return s != "" && strings.ToLower(s) == s && !strings.ContainsAny(s, "/* ")
}

func TestValidate(t *testing.T) {
	rule := func(caller, service string, ops ...Op) Policy {
		return Policy{Revision: 1, Rules: []Rule{{Caller: "x", Service: "*", Operations: []Op{Wrap}}, {Caller: caller, Service: service, Operations: ops}}}
	}
	tests := []struct {
		name  string
		p     Policy
		field string
	}{
		{"ok", rule("spiffe://krypton/tenant/acme/**", "pay", Wrap, Unwrap, GenerateDataKey, Rewrap), ""},
		{"no rules", Policy{Revision: 1}, ""},
		{"too many rules", Policy{Rules: make([]Rule, MaxRules+1)}, "rules"},
		{"empty caller", rule("", "*", Wrap), "caller"},
		{"long caller", rule(strings.Repeat("a", MaxPattern+1), "*", Wrap), "caller"},
		{"caller with space", rule("a b", "*", Wrap), "caller"},
		{"inner **", rule("a**b", "*", Wrap), "caller"},
		{"bad service", rule("x", "A", Wrap), "service"},
		{"no ops", rule("x", "*"), "operations"},
		{"bad op", rule("x", "*", 9), "operations"},
		{"op 0", rule("x", "*", 0), "operations"},
		{"op twice", rule("x", "*", Wrap, Wrap), "operations"},
	}
	for _, tt := range tests {
		err := tt.p.Validate(validName)
		var pe *Error
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.field != "" && (!errors.As(err, &pe) || pe.Field != tt.field || !errors.Is(err, ErrInvalid)):
			t.Errorf("%s: %v, want an error of field %s", tt.name, err, tt.field)
		case tt.field != "" && tt.field != "rules" && (pe.Rule != 2 || !strings.HasPrefix(err.Error(), "rule 2: ")):
			t.Errorf("%s: %v names rule %d, want 2", tt.name, err, pe.Rule)
		}
	}
}

func TestOpText(t *testing.T) {
	for op := Wrap; op <= Rewrap; op++ {
		b, err := op.MarshalText()
		var back Op
		if err != nil || back.UnmarshalText(b) != nil || back != op || op.String() != string(b) {
			t.Errorf("%v: %q, %v, %v", op, b, err, back)
		}
	}
	if _, err := Op(0).MarshalText(); err == nil {
		t.Error("Op(0) marshals")
	}
	var o Op
	if o.UnmarshalText([]byte("encrypt")) == nil {
		t.Error("an unknown name unmarshals")
	}
}

func TestClone(t *testing.T) {
	p := Policy{Revision: 1, Rules: []Rule{{Caller: "x", Service: "*", Operations: []Op{Wrap}}}}
	c := p.Clone()
	c.Rules[0].Operations[0] = Unwrap
	c.Rules[0].Caller = "y"
	if p.Rules[0].Operations[0] != Wrap || p.Rules[0].Caller != "x" {
		t.Fatal("Clone shares the rules")
	}
}

// BenchmarkPermits measures the check of one call: the caller URI and the rules, with the
// matching rule last of 100. It allocates nothing.
func BenchmarkPermits(b *testing.B) {
	var rules []Rule
	for range 99 {
		rules = append(rules, Rule{Caller: "spiffe://krypton/tenant/other/service/*", Service: "*", Operations: []Op{Wrap}})
	}
	rules = append(rules, Rule{Caller: "spiffe://krypton/tenant/acme/service/pay*", Service: "payments", Operations: []Op{Unwrap, Wrap}})
	c := Compile(Policy{Revision: 1, Rules: rules})
	b.ReportAllocs()
	for b.Loop() {
		if !c.Permits("acme", "payments", "acme", "payments", Wrap) {
			b.Fatal("refused")
		}
	}
}
