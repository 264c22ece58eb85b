package govfsm

import (
	"slices"

	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/wrap"
)

// Limits of the replicated state. The API refuses larger requests first (with InvalidArgument, or
// ResourceExhausted for the state limits); the state machine refuses them again (ErrInvalidCommand,
// ErrLimit) as the last line.
const (
	// MaxTenantRegions is how many regions one tenant may name.
	MaxTenantRegions = 64
	// MaxRules is the most rules of one policy (governance.proto; package policy's limit).
	MaxRules = policy.MaxRules
	// MaxCallerPattern is the longest caller pattern of a rule (package policy's limit).
	MaxCallerPattern = policy.MaxPattern
	// MaxInventory is the most key versions one region reports.
	MaxInventory = 100000
	// MaxVoters is the most voters of a region's Raft configuration a report may name.
	MaxVoters = 100
	// MaxTenants is the most tenants governance holds.
	MaxTenants = 100000
	// MaxServices is the most services of one tenant.
	MaxServices = 10000
)

// ValidRules re-checks normalised rules inside the state machine: the language's Validate, and
// governance's normal form (operations strictly ascending).
func ValidRules(rules []Rule) bool {
	if len(rules) > MaxRules {
		return false
	}
	for _, r := range rules {
		for i, op := range r.Operations {
			if op <= 0 || op > policy.NumOps || (i > 0 && r.Operations[i-1] >= op) {
				return false
			}
		}
	}
	return policyOf(rules).Validate(validName) == nil
}

// ValidatePolicy is the policy language's Validate (package policy) on rules in governance's types;
// its error names the rule and never echoes a pattern or name.
func ValidatePolicy(rules []Rule) error { return policyOf(rules).Validate(validName) }

// policyOf is rules in the policy language's types (operations are kv1.Operation values, which
// policy.Op shares; one out of its range becomes 0, which Validate refuses as unknown).
func policyOf(rules []Rule) policy.Policy {
	p := policy.Policy{Rules: make([]policy.Rule, len(rules))}
	for i, r := range rules {
		ops := make([]policy.Op, len(r.Operations))
		for j, op := range r.Operations {
			if op > 0 && op <= policy.NumOps {
				ops[j] = policy.Op(op)
			}
		}
		p.Rules[i] = policy.Rule{Caller: r.Caller, Service: r.Service, Operations: ops}
	}
	return p
}

func validName(s string) bool { return wrap.ValidateName(s) == nil }

// ValidConfig checks a reported Raft configuration: none (index 0, no voters), or an index with 1
// to MaxVoters voters, each a valid node name, sorted and without duplicates.
func ValidConfig(index uint64, voters []string) bool {
	if index == 0 {
		return len(voters) == 0
	}
	if len(voters) == 0 || len(voters) > MaxVoters || !slices.IsSorted(voters) {
		return false
	}
	for i, v := range voters {
		if wrap.ValidateName(v) != nil || (i > 0 && voters[i-1] == v) {
			return false
		}
	}
	return true
}

// ValidReportConfig is ValidConfig for a report, which also bounds the configuration's index by the
// reporter's commit index: a configuration takes effect at a position of the log the node has. An
// index without that bound could be 2^64-1, which no later report could exceed, so one node could
// pin the region's voter list forever (ResetRegionVoters is the way out from a liar who inflates
// both within the bound).
func ValidReportConfig(index, commit uint64, voters []string) bool {
	return ValidConfig(index, voters) && index <= commit
}

// validOwnerKey reports whether pemText is an owner public key package owner accepts.
func validOwnerKey(pemText string) bool {
	_, err := owner.ParsePublicKey(pemText)
	return err == nil
}
