// `krypton policy`: a tenant's access policy, its rule syntax, set and shown at governance.

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func policyCommand() *command {
	return &command{
		name: "policy", synopsis: "set and show a tenant's access policy (governance)",
		help: "A tenant's access policy says which caller identities may wrap, unwrap, generate data keys or rewrap with which of its " +
			"services. A call is allowed if any rule allows it; with no rule, a caller may use exactly the tenant and service its " +
			"certificate names. Policy reaches every region of the tenant through the governance feed. See docs/governance.md.",
		sub: []*command{policySetCommand(), policyGetCommand()},
	}
}

// opNames are the operation names of -rule and of the text output.
var opNames = map[string]kv1.Operation{
	"wrap":              kv1.Operation_OPERATION_WRAP,
	"unwrap":            kv1.Operation_OPERATION_UNWRAP,
	"generate-data-key": kv1.Operation_OPERATION_GENERATE_DATA_KEY,
	"rewrap":            kv1.Operation_OPERATION_REWRAP,
}

// parseRule reads one -rule: caller=<pattern>,service=<name|*>,ops=<op>+<op> (ops: wrap, unwrap,
// generate-data-key, rewrap, or all).
func parseRule(v string) (*kv1.PolicyRule, error) {
	r := &kv1.PolicyRule{}
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || seen[k] {
			return nil, usagef("-rule %q: want caller=<pattern>,service=<name|*>,ops=<op>+<op>", v)
		}
		seen[k] = true
		switch k {
		case "caller":
			r.Caller = val
		case "service":
			r.Service = val
		case "ops":
			for _, op := range strings.Split(val, "+") {
				if op == "all" {
					r.Operations = append(r.Operations, kv1.Operation_OPERATION_WRAP, kv1.Operation_OPERATION_UNWRAP,
						kv1.Operation_OPERATION_GENERATE_DATA_KEY, kv1.Operation_OPERATION_REWRAP)
					continue
				}
				o, ok := opNames[op]
				if !ok {
					return nil, usagef("-rule %q: unknown operation %q (want wrap, unwrap, generate-data-key, rewrap or all)", v, op)
				}
				r.Operations = append(r.Operations, o)
			}
		default:
			return nil, usagef("-rule %q: unknown key %q (want caller, service, ops)", v, k)
		}
	}
	if r.Caller == "" || r.Service == "" || len(r.Operations) == 0 {
		return nil, usagef("-rule %q: caller, service and ops are all required", v)
	}
	return r, nil
}

// ruleList collects repeated -rule flags.
type ruleList []string

func (r *ruleList) String() string     { return strings.Join(*r, " ") }
func (r *ruleList) Set(v string) error { *r = append(*r, v); return nil }

func policySetCommand() *command {
	var rules ruleList
	var file string
	var expected uint64
	return govCommand(clientSpec{
		name: "set", synopsis: "replace a tenant's access policy", usage: "(-rule <rule>... | -file <policy.json>) <tenant>",
		help: "Replaces <tenant>'s policy with the rules given, either as repeated -rule caller=<pattern>,service=<name|*>,ops=<op>+<op> " +
			"(ops: wrap, unwrap, generate-data-key, rewrap, all), or as a JSON file in the form `krypton policy get -format json` prints " +
			"(its tenant and revision are ignored; an empty rule list clears the policy). A caller pattern matches the URI SAN of a " +
			"caller's certificate; '*' matches a run of characters other than '/', a final \"/**\" any remaining path.",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.Var(&rules, "rule", "a policy rule, caller=<pattern>,service=<name|*>,ops=<op>+<op>; repeat for more")
			fs.StringVar(&file, "file", "", "JSON file holding the policy (as 'policy get -format json' prints it)")
			fs.Uint64Var(&expected, "expected-revision", 0, "apply only if the policy's current revision is this one (0: unconditionally)")
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, "(-rule <rule>... | -file <policy.json>) <tenant>"); err != nil {
				return err
			}
			if (len(rules) == 0) == (file == "") {
				return usagef("%s: give either -rule (one or more) or -file", cmdName(fs))
			}
			for _, r := range rules {
				if _, err := parseRule(r); err != nil {
					return err
				}
			}
			return nil
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			p := &kv1.Policy{}
			if file != "" {
				b, err := os.ReadFile(file)
				if err != nil {
					return fmt.Errorf("-file: %w", err)
				}
				if err := (protojson.UnmarshalOptions{}).Unmarshal(b, p); err != nil {
					return usagef("-file %s: not a policy in JSON: %v", file, err)
				}
			}
			for _, r := range rules {
				pr, _ := parseRule(r)
				p.Rules = append(p.Rules, pr)
			}
			p.Tenant, p.Revision, p.UpdatedAt = fs.Arg(0), 0, nil
			got, err := c.gov().SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: c.requestID, Policy: p, ExpectedRevision: expected})
			if revisionMismatch(err) {
				// Governance checked the revision before writing anything: a definite no.
				return fmt.Errorf("the policy of %s was NOT changed: its revision is no longer %d (it was changed since). "+
					"Read it again (krypton policy get %s), and run this command again with -expected-revision set to the revision shown "+
					"(and a new -request-id, or none)",
					p.Tenant, expected, p.Tenant)
			}
			if err != nil {
				return err
			}
			return c.output(s.out, got, func(w io.Writer) error { return policyText(w, got) })
		},
	})
}

func policyGetCommand() *command {
	return govCommand(clientSpec{
		name: "describe", aliases: []string{"get"}, synopsis: "show a tenant's access policy", usage: "<tenant>",
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			p, err := c.gov().GetPolicy(ctx, &kv1.GetPolicyRequest{Tenant: fs.Arg(0)})
			if err != nil {
				return err
			}
			return c.output(s.out, p, func(w io.Writer) error { return policyText(w, p) })
		},
	})
}

func policyText(w io.Writer, p *kv1.Policy) error {
	if p.GetRevision() == 0 {
		fmt.Fprintf(w, "Tenant %s has no policy: a caller may use exactly the tenant and service its certificate names.\n", p.GetTenant())
		return nil
	}
	fmt.Fprintf(w, "Policy of tenant %s, revision %d, updated %s\n", p.GetTenant(), p.GetRevision(), timeText(p.GetUpdatedAt()))
	if len(p.GetRules()) == 0 {
		_, err := fmt.Fprintln(w, "No rules: a caller may use exactly the tenant and service its certificate names.")
		return err
	}
	var rows [][]string
	for _, r := range p.GetRules() {
		var ops []string
		for _, op := range r.GetOperations() {
			ops = append(ops, enumName(op, "OPERATION_"))
		}
		rows = append(rows, []string{r.GetCaller(), r.GetService(), strings.Join(ops, "+")})
	}
	return table(w, []string{"Caller", "Service", "Operations"}, rows)
}
