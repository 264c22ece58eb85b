package policy

import "strings"

// Compiled is a policy compiled for checking calls: compiled once per revision, then checked on
// every call without allocating. It is immutable and safe for concurrent use. A nil *Compiled, or
// one of a policy without rules, is the default rule.
type Compiled struct {
	revision uint64
	rules    []compiledRule
}

type compiledRule struct {
	caller  pattern
	service string // "" for every service
	ops     uint8  // bit (1 << op) for each allowed Op
}

// Compile compiles p, which should have passed Validate (an unknown operation is ignored, and a
// malformed pattern matches by the same rules as a valid one).
func Compile(p Policy) *Compiled {
	c := &Compiled{revision: p.Revision, rules: make([]compiledRule, 0, len(p.Rules))}
	for _, r := range p.Rules {
		cr := compiledRule{caller: compilePattern(r.Caller)}
		if r.Service != "*" {
			cr.service = r.Service
		}
		for _, op := range r.Operations {
			if op.Valid() {
				cr.ops |= 1 << op
			}
		}
		c.rules = append(c.rules, cr)
	}
	return c
}

// Revision is the revision of the compiled policy (0 for nil).
func (c *Compiled) Revision() uint64 {
	if c == nil {
		return 0
	}
	return c.revision
}

// Default reports whether c is the default rule: nil, or a policy without rules.
func (c *Compiled) Default() bool { return c == nil || len(c.rules) == 0 }

// Allows reports whether some rule lets the caller whose certificate URI is caller use the
// tenant's service for op. It looks at the rules only: a policy without rules allows nothing here
// (the default rule is Permits', which knows the caller's tenant and service).
func (c *Compiled) Allows(caller []byte, service string, op Op) bool {
	if c == nil || !op.Valid() {
		return false
	}
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

// Permits is the whole decision for a service caller (callerTenant, callerService: what its
// certificate names) that asks to use the key of tenant's service for op, under c, tenant's
// compiled policy: the default rule when c has no rules, else the rules. Only services are ever
// permitted: the caller of any other kind of certificate is refused before this is asked.
func (c *Compiled) Permits(callerTenant, callerService, tenant, service string, op Op) bool {
	if c.Default() {
		return DefaultAllows(callerTenant, callerService, tenant, service)
	}
	var buf [160]byte
	return c.Allows(CallerURI(buf[:0], callerTenant, callerService), service, op)
}

// DefaultAllows is the default rule, which holds for a tenant without policy rules: a service
// may use exactly its own tenant and service, for every operation.
func DefaultAllows(callerTenant, callerService, tenant, service string) bool {
	return callerTenant == tenant && callerService == service
}

// CallerURI appends the SPIFFE URI of a service identity to buf, exactly as the certificate names
// it (internal/pki's Identity.String; region's TestCallerURIMatchesPKI), without going through
// net/url: "spiffe://krypton/tenant/<tenant>/service/<service>". Names are valid names, which
// need no escaping.
func CallerURI(buf []byte, tenant, service string) []byte {
	buf = append(buf, "spiffe://krypton/tenant/"...)
	buf = append(buf, tenant...)
	buf = append(buf, "/service/"...)
	return append(buf, service...)
}

// pattern is a compiled caller pattern (Rule.Caller), split on '/': within a segment '*'
// matches any run of characters other than '/'; a last segment "**" matches any remaining path,
// including none. Hand-written rather than path.Match: path.Match has no "**", treats '?', '['
// and '\' as special (the policy language does not), and returns an error per call.
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
