package governance

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Limits on what governance's API accepts (the state's own are package govfsm's). Anything larger
// is refused whole with InvalidArgument.
const (
	// MaxReason is the longest operator reason, in bytes.
	MaxReason = 1024
	// MaxAnchorURI is the longest anchor URI, in bytes.
	MaxAnchorURI = 2048
	// MaxPageSize is the largest page of a List RPC (transport.Page, every plane's rule).
	MaxPageSize = transport.MaxPageSize
)

func checkName(field, name string) error {
	if wrap.ValidateName(name) != nil {
		return invalid(field + " is not a valid name")
	}
	return nil
}

// checkReason checks an operator's reason: at most MaxReason bytes of UTF-8 without control
// characters. requireReason also refuses an empty one.
func checkReason(r string) error {
	if len(r) > MaxReason {
		return invalid(fmt.Sprintf("reason longer than %d bytes", MaxReason))
	}
	if !utf8.ValidString(r) {
		return invalid("reason is not UTF-8")
	}
	for _, c := range r {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return invalid("reason holds control characters")
		}
	}
	return nil
}

// requireReason is checkReason for the writes whose reason the audit log needs (revoke, lock,
// delete-anchor; the CLI asks for -reason): an empty or blank one is refused.
func requireReason(r string) error {
	if strings.TrimSpace(r) == "" {
		return invalid("a reason is required (it goes to the event and the audit log)")
	}
	return checkReason(r)
}

// validateCommand checks everything about a command that does not depend on the state, before it is
// proposed: a malformed command is refused where it arrives and never reaches the Raft log (the
// state machine's own checks stay the last line). The API's handlers check their requests field by
// field with messages that name the field; validateCommand is the shared net under them.
func validateCommand(c *govfsm.Command) error {
	if c.Op == govfsm.OpReport {
		if checkName("region", c.Region) != nil || len(c.Inventory) > govfsm.MaxInventory || !govfsm.ValidReportConfig(c.ConfigIndex, c.CommitIndex, c.Voters) ||
			(c.Node != "" && wrap.ValidateName(c.Node) != nil) {
			return invalid("malformed report")
		}
		return nil
	}
	if c.Op == govfsm.OpCompact {
		if c.Retention <= 0 {
			return invalid("compaction needs a positive retention")
		}
		return nil
	}
	if err := transport.CheckRequestID(c.RequestID); err != nil {
		return err
	}
	if c.Op == govfsm.OpResetVoters {
		if err := checkName("region", c.Region); err != nil {
			return err
		}
		return requireReason(c.Reason)
	}
	if err := checkName("tenant", c.Tenant); err != nil {
		return err
	}
	if c.Service != "" {
		if err := checkName("service", c.Service); err != nil {
			return err
		}
	} else if c.Version != 0 {
		return invalid("a version needs a service")
	}
	if len(c.AnchorURI) > MaxAnchorURI {
		return invalid(fmt.Sprintf("anchor_uri longer than %d bytes", MaxAnchorURI))
	}
	if len(c.Regions) > govfsm.MaxTenantRegions || !slices.IsSorted(c.Regions) {
		return invalid("malformed regions")
	}
	for _, r := range c.Regions {
		if err := checkName("region", r); err != nil {
			return err
		}
	}
	if !govfsm.ValidRules(c.Rules) {
		return invalid("malformed policy rules")
	}
	if c.Quota != nil && c.Op != govfsm.OpSetQuota {
		return invalid("only SetQuota takes a quota")
	}
	if err := checkQuota(c.Quota); err != nil {
		return err
	}
	if err := validateOwner(c); err != nil {
		return err
	}
	switch c.Op {
	case govfsm.OpRevoke, govfsm.OpLockTenant, govfsm.OpDeleteAnchor:
		return requireReason(c.Reason)
	case govfsm.OpCreateTenant, govfsm.OpCreateService, govfsm.OpSetAnchor, govfsm.OpSetPolicy, govfsm.OpUnlockTenant, govfsm.OpResyncTenant, govfsm.OpSetOwnerKey, govfsm.OpSetQuota, govfsm.OpSetRegions, govfsm.OpPublishKeys:
		if c.Reason != "" {
			return invalid("this request takes no reason")
		}
		return nil
	}
	return invalid("unknown op")
}

// checkAnchor validates an anchor URI without contacting the provider and refuses one that would
// store a secret. The URI is never echoed (a pkcs11 URI may hold a PIN).
func checkAnchor(uri string, allowDev bool) error {
	if uri == "" {
		return invalid("anchor_uri is required")
	}
	if len(uri) > MaxAnchorURI {
		return invalid(fmt.Sprintf("anchor_uri longer than %d bytes", MaxAnchorURI))
	}
	u, err := anchor.Parse(uri)
	if err != nil {
		// anchor's errors name the part that is wrong and never the URI.
		return invalid(err.Error())
	}
	// A tenant's URI is in every Raft log, snapshot and backup of governance and of its regions: no
	// PIN in it (anchor.CheckStorable names pin-source as the fix).
	if err := anchor.CheckStorable(u); err != nil {
		return invalid(err.Error())
	}
	// Sealing hands the provider the tenant key: no endpoint override without TLS, but for a
	// loopback emulator where development anchors are allowed (anchor.CheckTransport).
	if err := anchor.CheckTransport(u, allowDev); err != nil {
		return invalid(err.Error())
	}
	if u.Scheme() == anchor.SchemeFile && !allowDev {
		return invalid("file:// anchors are for development only; this governance does not allow them (--dev-anchor)")
	}
	return nil
}

// normRegions checks a tenant's regions and returns them sorted without duplicates. known, if not
// empty, is the set of regions governance accepts.
func normRegions(regions, known []string) ([]string, error) {
	if len(regions) == 0 {
		return nil, invalid("at least one region is required")
	}
	if len(regions) > govfsm.MaxTenantRegions {
		return nil, invalid(fmt.Sprintf("more than %d regions", govfsm.MaxTenantRegions))
	}
	out := make([]string, 0, len(regions))
	for _, r := range regions {
		if err := checkName("region", r); err != nil {
			return nil, err
		}
		if len(known) > 0 && !slices.Contains(known, r) {
			return nil, invalid("unknown region " + r) // a valid name: safe to print
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// checkScope validates a revocation target.
func checkScope(s *kv1.KeyScope) error {
	if s == nil {
		return invalid("target is required")
	}
	if err := checkName("target.tenant", s.GetTenant()); err != nil {
		return err
	}
	if s.GetService() != "" {
		if err := checkName("target.service", s.GetService()); err != nil {
			return err
		}
	} else if s.GetVersion() != 0 {
		return invalid("target.version needs target.service")
	}
	return nil
}

// rulesFromProto validates policy rules by the language's one Validate (package policy) and returns
// them normalised (operations sorted, without duplicates).
func rulesFromProto(rules []*kv1.PolicyRule) ([]govfsm.Rule, error) {
	if len(rules) > govfsm.MaxRules {
		return nil, invalid(fmt.Sprintf("more than %d rules", govfsm.MaxRules))
	}
	out := make([]govfsm.Rule, 0, len(rules))
	for _, r := range rules {
		var ops []int32
		for _, op := range r.GetOperations() {
			ops = append(ops, int32(op))
		}
		slices.Sort(ops)
		out = append(out, govfsm.Rule{Caller: r.GetCaller(), Service: r.GetService(), Operations: slices.Compact(ops)})
	}
	if err := govfsm.ValidatePolicy(out); err != nil {
		return nil, invalid(err.Error()) // "rule N: ...": never echoes a pattern or name
	}
	return out, nil
}

// validateOwner checks a command's owner key and consent: each only where its op takes one, the key
// well formed (whether the consent verifies depends on the state: the handlers and the state
// machine check that).
func validateOwner(c *govfsm.Command) error {
	if c.OwnerKey != "" {
		if c.Op != govfsm.OpCreateTenant && c.Op != govfsm.OpSetOwnerKey {
			return invalid("this request takes no owner key")
		}
		if err := checkOwnerKey(c.OwnerKey); err != nil {
			return err
		}
	} else if c.Op == govfsm.OpSetOwnerKey {
		return invalid("owner_public_key is required")
	}
	if c.Consent != "" {
		if c.Op != govfsm.OpSetAnchor && c.Op != govfsm.OpSetOwnerKey && c.Op != govfsm.OpSetRegions {
			return invalid("this request takes no consent")
		}
		if len(c.Consent) > owner.MaxConsent {
			return invalid(fmt.Sprintf("consent longer than %d bytes", owner.MaxConsent))
		}
	}
	return nil
}

// checkOwnerKey checks an owner public key (owner.ParsePublicKey says what is wrong, never echoing
// the key).
func checkOwnerKey(pemText string) error {
	if _, err := owner.ParsePublicKey(pemText); err != nil {
		return invalid(strings.TrimPrefix(err.Error(), "owner: malformed: ") + " (owner_public_key)")
	}
	return nil
}

// checkQuota refuses a quota out of bounds, naming the field and the valid range.
func checkQuota(q *govfsm.Quota) error {
	switch {
	case q == nil:
		return nil
	case q.Rate > govfsm.MaxQuotaRate:
		return invalid(fmt.Sprintf("quota rate %d is too large (at most %d requests/s; 0 means unlimited)", q.Rate, govfsm.MaxQuotaRate))
	case q.Burst > govfsm.MaxQuotaBurst:
		return invalid(fmt.Sprintf("quota burst %d is too large (at most %d; 0 means the rate)", q.Burst, govfsm.MaxQuotaBurst))
	case q.Burst != 0 && q.Rate == 0:
		return invalid(fmt.Sprintf("quota burst %d without a rate: set a rate too, or leave the burst 0", q.Burst))
	case q.Concurrency > govfsm.MaxQuotaConcurrency:
		return invalid(fmt.Sprintf("quota concurrency %d is too large (at most %d calls in flight; 0 means unlimited)", q.Concurrency, govfsm.MaxQuotaConcurrency))
	}
	return nil
}
