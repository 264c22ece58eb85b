// Package policy is Krypton's key-use policy: who may use which service key (L3) of a tenant, and
// for which operations. It holds the language (operations, rules, limits, the caller-pattern
// syntax and Validate), the one compiled matcher every enforcer uses (Compile, Permits, Allows),
// and the default rule (a service may use exactly its own tenant and service).
//
// Governance sets a tenant's policy and validates it here; a region's state machine replicates it
// (package fsm stores a Policy and validates it here again) and every region node compiles it
// once per revision and checks each wrap-path call against the compiled form; a gateway checks
// each caller against the same compiled form before it acts for it. DESIGN.md says who may use
// which key, through a region and through a gateway.
//
// The package is pure: it imports the standard library only (internal/deptest holds it to that),
// does no I/O and keeps no state, so that every enforcer decides alike.
//
//	p := policy.Policy{Revision: 3, Rules: []policy.Rule{{
//		Caller: "spiffe://krypton/tenant/acme/service/web-*", Service: "payments",
//		Operations: []policy.Op{policy.Unwrap},
//	}}}
//	if err := p.Validate(func(s string) bool { return wrap.ValidateName(s) == nil }); err != nil { ... }
//	c := policy.Compile(p)
//	c.Permits("acme", "web-eu", "acme", "payments", policy.Unwrap) // true
//	c.Permits("acme", "payments", "acme", "payments", policy.Wrap) // false: the rules replace the default
package policy
