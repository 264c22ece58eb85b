package region

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
)

// Access policy on the wrap path (DESIGN.md, "Access policy"). Governance sets each tenant's
// policy; the region's state machine replicates it; every node compiles it once per revision
// (on the fsm PolicySet change) and checks each call against the compiled form, which allocates
// nothing per call.

// policyTable holds the compiled policy of every tenant that has one.
type policyTable struct {
	mu sync.RWMutex // guards m; a compiled policy is immutable
	m  map[string]*compiledPolicy
}

func newPolicyTable() *policyTable { return &policyTable{m: map[string]*compiledPolicy{}} }

func (t *policyTable) get(tenant string) *compiledPolicy {
	t.mu.RLock()
	p := t.m[tenant]
	t.mu.RUnlock()
	return p
}

// set installs a tenant's policy; a policy without rules is the default rule and needs no entry.
func (t *policyTable) set(tenant string, p fsm.Policy) {
	var c *compiledPolicy
	if len(p.Rules) > 0 {
		c = compilePolicy(p)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c == nil {
		delete(t.m, tenant)
		return
	}
	t.m[tenant] = c
}

// rebuild compiles every tenant's policy afresh (after a snapshot restore).
func (t *policyTable) rebuild(s *fsm.State) {
	m := map[string]*compiledPolicy{}
	for _, tn := range s.ListTenants() {
		if p, err := s.Policy(tn.Name); err == nil && len(p.Rules) > 0 {
			m[tn.Name] = compilePolicy(p)
		}
	}
	t.mu.Lock()
	t.m = m
	t.mu.Unlock()
}

type compiledPolicy struct {
	revision uint64
	rules    []compiledRule
}

type compiledRule struct {
	caller  pattern
	service string // "" for every service
	ops     uint8  // bit (1 << op) for each allowed fsm.PolicyOp
}

func compilePolicy(p fsm.Policy) *compiledPolicy {
	c := &compiledPolicy{revision: p.Revision, rules: make([]compiledRule, 0, len(p.Rules))}
	for _, r := range p.Rules {
		cr := compiledRule{caller: compilePattern(r.Caller)}
		if r.Service != "*" {
			cr.service = r.Service
		}
		for _, op := range r.Operations {
			if op < 8 {
				cr.ops |= 1 << op
			}
		}
		c.rules = append(c.rules, cr)
	}
	return c
}

// allows reports whether some rule lets caller use service for op.
func (c *compiledPolicy) allows(caller []byte, service string, op fsm.PolicyOp) bool {
	for i := range c.rules {
		r := &c.rules[i]
		if r.ops&(1<<op) == 0 || (r.service != "" && r.service != service) {
			continue
		}
		if r.caller.match(caller) {
			return true
		}
	}
	return false
}

// pattern is a caller identity pattern (fsm.PolicyRule.Caller), split on '/': within a segment
// '*' matches any run of characters other than '/'; a last segment "**" matches any remaining
// path, including none (docs/governance.md). Hand-written rather than path.Match: path.Match has no "**", treats '?',
// '[' and '\' as special (the policy language does not), and returns an error per call.
type pattern struct {
	prefix string // the literal text before the first '*': a cheap first test
	segs   []string
	tail   bool // the pattern ended in "/**"
}

func compilePattern(s string) pattern {
	var p pattern
	if strings.HasSuffix(s, "/**") {
		p.tail = true
		s = strings.TrimSuffix(s, "/**")
	}
	p.segs = strings.Split(s, "/")
	p.prefix = s
	if i := strings.IndexByte(s, '*'); i >= 0 {
		p.prefix = s[:i]
	}
	return p
}

// match matches a caller URI; it allocates nothing.
func (p *pattern) match(uri []byte) bool {
	if len(uri) < len(p.prefix) || string(uri[:len(p.prefix)]) != p.prefix {
		return false
	}
	rest := uri
	for i, seg := range p.segs {
		j := indexSlash(rest)
		var part []byte
		if j < 0 {
			part, rest = rest, nil
		} else {
			part, rest = rest[:j], rest[j+1:]
		}
		if !globSegment(seg, part) {
			return false
		}
		if i == len(p.segs)-1 {
			return p.tail || j < 0 // "/**" matches any remaining path, none included
		}
		if j < 0 {
			return false // the URI has fewer segments than the pattern
		}
	}
	return false
}

func indexSlash(b []byte) int {
	for i, c := range b {
		if c == '/' {
			return i
		}
	}
	return -1
}

// globSegment matches one segment against a pattern segment where '*' matches any run of bytes
// (the segment holds no '/'). Iterative, with one backtrack point: linear in practice, no
// recursion, no allocation.
func globSegment(pat string, s []byte) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(pat) && pat[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(pat) && pat[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(pat) && pat[pi] == '*' {
		pi++
	}
	return pi == len(pat)
}

// callerURI appends the SPIFFE URI of a service identity to buf, exactly as pki.Identity.String
// writes it (TestCallerURIMatchesPKI), without going through net/url.
func callerURI(buf []byte, id pki.Identity) []byte {
	buf = append(buf, "spiffe://krypton/tenant/"...)
	buf = append(buf, id.Tenant...)
	buf = append(buf, "/service/"...)
	return append(buf, id.Service...)
}

// policyOpNames name the operations in refusals and the audit log.
var policyOpNames = [...]string{
	fsm.PolicyWrap:            "wrap",
	fsm.PolicyUnwrap:          "unwrap",
	fsm.PolicyGenerateDataKey: "generate-data-key",
	fsm.PolicyRewrap:          "rewrap",
}

// authorize checks that the caller may use tenant's service for op: by the tenant's policy from
// governance, or by default exactly the tenant and service its certificate names. A refusal is
// PermissionDenied and is written to the audit log.
func (n *Node) authorize(ctx context.Context, tenant, service string, op fsm.PolicyOp) error {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	p := n.policies.get(tenant)
	if p == nil {
		if id.Kind == pki.KindService && id.Tenant == tenant && id.Service == service {
			return nil
		}
		return n.denied(id, tenant, service, op, 0)
	}
	if id.Kind == pki.KindService {
		var buf [160]byte
		if p.allows(callerURI(buf[:0], id), service, op) {
			return nil
		}
	}
	return n.denied(id, tenant, service, op, p.revision)
}

// denied records and returns a policy refusal. Names from the request are echoed only if they
// are valid names.
func (n *Node) denied(id pki.Identity, tenant, service string, op fsm.PolicyOp, revision uint64) error {
	tenant, service = validOrEmpty(tenant), validOrEmpty(service)
	opName := policyOpNames[op]
	detail := map[string]string{"operation": opName}
	rule := "the default rule (a caller may use only the tenant and service its certificate names)"
	if revision > 0 {
		detail["policy-revision"] = strconv.FormatUint(revision, 10)
		rule = "tenant " + tenant + "'s policy (revision " + strconv.FormatUint(revision, 10) + ")"
	}
	n.recordAs(audit.Event{Kind: auditPolicyDenied, Actor: id.String(), Tenant: tenant, Service: service, Code: codes.PermissionDenied.String(), Detail: detail})
	return status.Errorf(codes.PermissionDenied, "region: %s may not %s with the key of tenant %q, service %q: refused by %s", id.String(), opName, tenant, service, rule)
}
