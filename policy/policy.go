package policy

import (
	"errors"
	"fmt"
	"strings"
)

// Op is an operation a rule allows. The values are those of the krypton.v1 Operation enum; they
// are part of the region's snapshot format.
type Op uint8

// Operations.
const (
	Wrap Op = iota + 1
	Unwrap
	GenerateDataKey
	Rewrap
)

// NumOps is how many operations there are: a rule names 1 to NumOps of them.
const NumOps = 4

var opNames = [...]string{
	Wrap:            "wrap",
	Unwrap:          "unwrap",
	GenerateDataKey: "generate-data-key",
	Rewrap:          "rewrap",
}

// Valid reports whether o is one of the operations.
func (o Op) Valid() bool { return o >= Wrap && o <= Rewrap }

func (o Op) String() string {
	if o.Valid() {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// MarshalText encodes the operation by name.
func (o Op) MarshalText() ([]byte, error) {
	if !o.Valid() {
		return nil, fmt.Errorf("policy: invalid operation %d", uint8(o))
	}
	return []byte(opNames[o]), nil
}

// UnmarshalText decodes an operation name.
func (o *Op) UnmarshalText(b []byte) error {
	for i, n := range opNames {
		if n != "" && n == string(b) {
			*o = Op(i)
			return nil
		}
	}
	return fmt.Errorf("policy: invalid operation %q", b)
}

// Policy is a tenant's access policy as governance set it (the krypton.v1 Policy message in plain
// Go types). A call is allowed if any rule allows it; with no rules the default rule holds (a
// service may use exactly its own tenant and service, DefaultAllows).
type Policy struct {
	// Revision is governance's revision of the policy; 0 means never set.
	Revision uint64 `json:"revision"`
	Rules    []Rule `json:"rules,omitempty"`
}

// Rule allows callers whose certificate URI matches Caller (a pattern, see CheckCallerPattern) to
// use Service ("*" for every service of the tenant) for Operations.
type Rule struct {
	Caller     string `json:"caller"`
	Service    string `json:"service"`
	Operations []Op   `json:"operations"`
}

// Limits on a policy.
const (
	// MaxRules is the most rules of one policy (governance.proto).
	MaxRules = 1000
	// MaxPattern is the longest caller pattern of a rule, in bytes.
	MaxPattern = 512
)

// Clone returns a deep copy of p.
func (p Policy) Clone() Policy {
	if p.Rules == nil {
		return p
	}
	rules := make([]Rule, len(p.Rules))
	for i, r := range p.Rules {
		r.Operations = append([]Op(nil), r.Operations...)
		rules[i] = r
	}
	p.Rules = rules
	return p
}

// ErrInvalid is what every validation error of this package wraps.
var ErrInvalid = errors.New("policy: invalid")

// Error is a policy that breaks the language. Its message never echoes a pattern or a name.
type Error struct {
	// Rule is the 1-based index of the offending rule; 0 for the policy as a whole.
	Rule int
	// Field is the part that is wrong: "rules", "caller", "service" or "operations".
	Field string
	msg   string
}

func (e *Error) Error() string {
	if e.Rule > 0 {
		return fmt.Sprintf("rule %d: %s", e.Rule, e.msg)
	}
	return e.msg
}

// Unwrap makes every *Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// CheckCallerPattern checks a rule's caller pattern: 1 to MaxPattern printable ASCII characters
// without spaces; '*' matches a run of characters other than '/' and may appear anywhere; "**"
// is allowed only as a final "/**" segment (any remaining path, including none). Every other
// character, '?', '[' and '\' included, is literal. The error never echoes the pattern.
func CheckCallerPattern(p string) error {
	if p == "" {
		return errors.New("caller is required")
	}
	if len(p) > MaxPattern {
		return fmt.Errorf("caller longer than %d characters", MaxPattern)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x21 || p[i] > 0x7e {
			return errors.New("caller must be printable ASCII without spaces")
		}
	}
	if strings.Contains(strings.TrimSuffix(p, "/**"), "**") {
		return errors.New(`caller may hold "**" only as a final "/**"`)
	}
	return nil
}

// Validate checks p's rules against the language: at most MaxRules rules, each with a valid
// caller pattern, a service that is "*" or a name validName accepts, and 1 to NumOps distinct
// known operations. It returns the first *Error, in rule order (caller, service, operations).
// The revision is the holder's to check (governance assigns it; a region requires it non-zero).
//
// validName is Krypton's one definition of a tenant or service name (wrap.ValidateName): it is
// passed in because this package imports nothing but the standard library.
func (p Policy) Validate(validName func(string) bool) error {
	if len(p.Rules) > MaxRules {
		return &Error{Field: "rules", msg: fmt.Sprintf("more than %d rules", MaxRules)}
	}
	for i, r := range p.Rules {
		if err := CheckCallerPattern(r.Caller); err != nil {
			return &Error{Rule: i + 1, Field: "caller", msg: err.Error()}
		}
		if r.Service != "*" && !validName(r.Service) {
			return &Error{Rule: i + 1, Field: "service", msg: `service must be a valid name or "*"`}
		}
		if len(r.Operations) == 0 {
			return &Error{Rule: i + 1, Field: "operations", msg: "at least one operation is required"}
		}
		var seen uint8
		for _, op := range r.Operations {
			if !op.Valid() {
				return &Error{Rule: i + 1, Field: "operations", msg: "unknown operation"}
			}
			if seen&(1<<op) != 0 {
				return &Error{Rule: i + 1, Field: "operations", msg: "an operation given twice"}
			}
			seen |= 1 << op
		}
	}
	return nil
}
