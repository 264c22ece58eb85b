package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Governance commands. `krypton governance server` runs a governance node; the operator commands
// (governance status, tenant set-anchor|delete-anchor, service, policy, revoke) are thin clients of
// GovernanceService. The tenant commands that exist for regions too (create, list, describe, lock,
// unlock) talk to a region node at -addr as before, and to governance when -governance (or
// KRYPTON_GOVERNANCE_ADDR) names it.

const defaultGovernanceAddr = "127.0.0.1:7500"

const governanceAddrHelp = "host:port of a governance node's API (any node; writes are forwarded to the leader); " +
	"default KRYPTON_GOVERNANCE_ADDR, else " + defaultGovernanceAddr

// governanceEnv returns the governance address from the environment: KRYPTON_GOVERNANCE_ADDR
// (KRYPTON_GOVERNANCE, the general KRYPTON_<FLAG> rule, is applied to the flag itself).
func governanceEnv() string { return strings.TrimSpace(os.Getenv("KRYPTON_GOVERNANCE_ADDR")) }

// govSpec is a governance client command: clientSpec plus the -governance flag, which decides the
// address dialled (-addr names region nodes and is not used).
func govCommand(spec clientSpec) *command {
	var gov string
	flags, check := spec.flags, spec.check
	spec.kind = pki.KindOperator
	spec.server = pki.KindGovernance
	spec.flags = func(fs *flag.FlagSet) {
		fs.StringVar(&gov, "governance", "", governanceAddrHelp)
		if f := fs.Lookup("addr"); f != nil {
			f.Usage = "not used by this command, which talks to governance: see -governance"
		}
		if flags != nil {
			flags(fs)
		}
	}
	spec.check = func(fs *flag.FlagSet) error {
		if check != nil {
			if err := check(fs); err != nil {
				return err
			}
		}
		addr := gov
		if addr == "" {
			addr = governanceEnv()
		}
		if addr == "" {
			addr = defaultGovernanceAddr
		}
		return fs.Set("addr", addr)
	}
	return clientCommand(spec)
}

func (c *apiClient) gov() kv1.GovernanceServiceClient { return kv1.NewGovernanceServiceClient(c.conn) }

// dualCommand is a command that exists for a region node and for governance: it runs regionCmd,
// or govCmd when -governance is given (or KRYPTON_GOVERNANCE_ADDR / KRYPTON_GOVERNANCE is set).
// It accepts the flags of both, then hands the command line to the one chosen, which parses it
// again; a flag the chosen one does not know is refused there.
func dualCommand(regionCmd, govCmd *command) *command {
	type flagInfo struct {
		usage, def string
		isBool     bool
	}
	infos := map[string]flagInfo{}
	var order []string
	for _, c := range []*command{regionCmd, govCmd} {
		probe := flag.NewFlagSet("probe", flag.ContinueOnError)
		c.flags(probe)
		probe.VisitAll(func(f *flag.Flag) {
			if _, seen := infos[f.Name]; seen {
				return
			}
			b, ok := f.Value.(interface{ IsBoolFlag() bool })
			infos[f.Name] = flagInfo{usage: f.Usage, def: f.DefValue, isBool: ok && b.IsBoolFlag()}
			order = append(order, f.Name)
		})
	}
	infos["addr"] = flagInfo{usage: "host:port of a region node's API (without -governance)", def: defaultAPIAddr}
	infos["governance"] = flagInfo{usage: governanceAddrHelp + "; given, the command talks to governance instead of a region node"}
	return &command{
		name: regionCmd.name, synopsis: regionCmd.synopsis + " (region, or governance with -governance)",
		usage: regionCmd.usage,
		help: regionCmd.help + "\n\nWith -governance <addr> (or KRYPTON_GOVERNANCE_ADDR) it talks to governance instead: " +
			strings.TrimSuffix(govCmd.help, "\n\n"+operatorCertHelp) + "\n\nFlags for governance only: " + govOnlyFlags(regionCmd, govCmd) + ".",
		flags: func(fs *flag.FlagSet) {
			for _, name := range order {
				i := infos[name]
				fs.Var(&capturedFlag{isBool: i.isBool, value: i.def}, name, i.usage)
			}
		},
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			target := regionCmd
			var args []string
			gov := governanceEnv()
			fs.Visit(func(f *flag.Flag) {
				if f.Name == "governance" {
					gov = f.Value.String()
					return
				}
				args = append(args, "-"+f.Name+"="+f.Value.String())
			})
			if gov != "" {
				target = govCmd
				args = append(args, "-governance="+gov)
			}
			args = append(append(args, "--"), fs.Args()...)
			return target.dispatch(ctx, fs.Name(), args, s)
		},
	}
}

func govOnlyFlags(regionCmd, govCmd *command) string {
	rf := flag.NewFlagSet("r", flag.ContinueOnError)
	regionCmd.flags(rf)
	gf := flag.NewFlagSet("g", flag.ContinueOnError)
	govCmd.flags(gf)
	var names []string
	gf.VisitAll(func(f *flag.Flag) {
		if rf.Lookup(f.Name) == nil && f.Name != "governance" {
			names = append(names, "-"+f.Name)
		}
	})
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// capturedFlag holds a flag's text for dualCommand to pass on.
type capturedFlag struct {
	isBool bool
	value  string
}

func (f *capturedFlag) String() string     { return f.value }
func (f *capturedFlag) Set(v string) error { f.value = v; return nil }
func (f *capturedFlag) IsBoolFlag() bool   { return f.isBool }

// tenantCommandWithGovernance is `krypton tenant`: the region commands, each that governance also
// has made dual, plus set-anchor and delete-anchor, which only governance has.
func tenantCommandWithGovernance() *command {
	t := tenantCommand()
	gov := map[string]*command{
		"create":    govTenantCreateCommand(),
		"list":      govTenantListCommand(),
		"describe":  govTenantDescribeCommand(),
		"lock":      govTenantLockCommand(),
		"unlock":    govTenantUnlockCommand(),
		"set-owner": govSetOwnerCommand(),
	}
	for i, sub := range t.sub {
		if g := gov[sub.name]; g != nil {
			t.sub[i] = dualCommand(sub, g)
		}
	}
	t.sub = append(t.sub, govSetAnchorCommand(), govDeleteAnchorCommand(), govTenantResyncCommand())
	t.synopsis = "create, list, describe, lock, unlock and rekey tenants, register their owner key; set and delete their anchor, resync them (governance)"
	return t
}

func govTenantText(w io.Writer, t *kv1.GovernanceTenant, extra ...[]string) error {
	anchor := t.GetAnchorUri()
	if anchor == "" {
		anchor = "(deleted: the kill switch is on)"
	}
	rows := [][]string{
		{"Tenant:", t.GetName()},
		{"State:", enumName(t.GetState(), "TENANT_STATE_")},
		{"Anchor:", anchor},
		{"Regions:", strings.Join(t.GetRegions(), ", ")},
		{"Created:", timeText(t.GetCreatedAt())},
		{"Last event:", strconv.FormatUint(t.GetCursor(), 10)},
		{"Owner key:", ownerKeyText(t.GetOwnerKeyFingerprint())},
	}
	if t.GetAnchorDeletedAt() != nil {
		rows = append(rows, []string{"Anchor deleted:", timeText(t.GetAnchorDeletedAt())})
	}
	return tableNoHeader(w, append(rows, extra...))
}

func govTenantCreateCommand() *command {
	var anchorURI, regions, ownerPub, ownerPEM string
	return govCommand(clientSpec{
		name: "create", synopsis: "create a tenant at governance", usage: "-anchor <uri> -regions <r1,r2> <tenant>",
		help: "Creates <tenant> at governance with its L1 anchor URI and the regions it may live in; every one of those regions " +
			"creates it from the governance feed.",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&anchorURI, "anchor", "", "the tenant's L1 anchor URI (required)")
			fs.StringVar(&regions, "regions", "", "regions the tenant may live in, comma-separated (governance only; required there)")
			ownerPubFlag(fs, &ownerPub)
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, "-anchor <uri> -regions <r1,r2> <tenant>"); err != nil {
				return err
			}
			if anchorURI == "" {
				return usagef("%s: -anchor is required", cmdName(fs))
			}
			if len(splitList(regions)) == 0 {
				return usagef("%s: -regions is required at governance", cmdName(fs))
			}
			var err error
			ownerPEM, err = readOwnerPub(ownerPub)
			return err
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			t, err := c.gov().CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: c.requestID, Tenant: fs.Arg(0), AnchorUri: anchorURI, Regions: splitList(regions), OwnerPublicKey: ownerPEM})
			if err != nil {
				return err
			}
			return c.output(s.out, t, func(w io.Writer) error { return govTenantText(w, t) })
		},
	})
}

func govTenantListCommand() *command {
	return govCommand(clientSpec{
		name: "list", synopsis: "list governance's tenants",
		help:  "Lists every tenant governance holds, with its state and regions.",
		check: exactArgs(0, "no arguments"),
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			all := &kv1.GovernanceListTenantsResponse{}
			for token := ""; ; {
				resp, err := c.gov().ListTenants(ctx, &kv1.GovernanceListTenantsRequest{PageSize: governance.MaxPageSize, PageToken: token})
				if err != nil {
					return err
				}
				all.Tenants = append(all.Tenants, resp.GetTenants()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			return c.output(s.out, all, func(w io.Writer) error {
				var rows [][]string
				for _, t := range all.GetTenants() {
					anchor := t.GetAnchorUri()
					if anchor == "" {
						anchor = "(deleted)"
					}
					rows = append(rows, []string{t.GetName(), enumName(t.GetState(), "TENANT_STATE_"), strings.Join(t.GetRegions(), ","), timeText(t.GetCreatedAt()), anchor})
				}
				return table(w, []string{"Tenant", "State", "Regions", "Created", "Anchor"}, rows)
			})
		},
	})
}

// govTenantDescription is `tenant describe -format json` at governance.
type govTenantDescription struct {
	Tenant   json.RawMessage `json:"tenant"`
	Services json.RawMessage `json:"services"`
	Policy   json.RawMessage `json:"policy"`
}

func govTenantDescribeCommand() *command {
	return govCommand(clientSpec{
		name: "describe", synopsis: "show a tenant, its services and policy at governance", usage: "<tenant>",
		help:  "Shows <tenant> as governance knows it: anchor, regions, state, services and policy revision.",
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			t, err := c.gov().GetTenant(ctx, &kv1.GetTenantRequest{Tenant: fs.Arg(0)})
			if err != nil {
				return err
			}
			svcs := &kv1.GovernanceListServicesResponse{}
			for token := ""; ; {
				resp, err := c.gov().ListServices(ctx, &kv1.GovernanceListServicesRequest{Tenant: fs.Arg(0), PageSize: governance.MaxPageSize, PageToken: token})
				if err != nil {
					return err
				}
				svcs.Services = append(svcs.Services, resp.GetServices()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			p, err := c.gov().GetPolicy(ctx, &kv1.GetPolicyRequest{Tenant: fs.Arg(0)})
			if err != nil {
				return err
			}
			var d govTenantDescription
			if d.Tenant, err = protoJSON.Marshal(t); err != nil {
				return err
			}
			if d.Services, err = protoJSON.Marshal(svcs); err != nil {
				return err
			}
			if d.Policy, err = protoJSON.Marshal(p); err != nil {
				return err
			}
			return c.outputJSON(s.out, d, func(w io.Writer) error {
				policy := "none"
				if p.GetRevision() > 0 {
					policy = fmt.Sprintf("revision %d, %d rules", p.GetRevision(), len(p.GetRules()))
				}
				if err := govTenantText(w, t, []string{"Policy:", policy}); err != nil {
					return err
				}
				if len(svcs.GetServices()) == 0 {
					return nil
				}
				fmt.Fprintln(w)
				return servicesTable(w, svcs.GetServices())
			})
		},
	})
}

func servicesTable(w io.Writer, svcs []*kv1.GovernanceServiceInfo) error {
	var rows [][]string
	for _, sv := range svcs {
		state := "active"
		if sv.GetRevoked() {
			state = "revoked"
		}
		rows = append(rows, []string{sv.GetName(), state, timeText(sv.GetCreatedAt()), strconv.FormatUint(sv.GetCursor(), 10)})
	}
	return table(w, []string{"Service", "State", "Created", "Event"}, rows)
}

func reasonRequired(reason *string, usage string) func(fs *flag.FlagSet) error {
	return func(fs *flag.FlagSet) error {
		if err := nargs(fs, 1, 1, usage); err != nil {
			return err
		}
		if strings.TrimSpace(*reason) == "" {
			return usagef("%s: -reason is required", cmdName(fs))
		}
		return nil
	}
}

func govTenantLockCommand() *command {
	var reason string
	return govCommand(clientSpec{
		name: "lock", synopsis: "lock a tenant out of every region", usage: "-reason <text> <tenant>",
		help:  "Emits a lock event: every region of <tenant> locks it out and wipes its keys. Reversible with `tenant unlock`.",
		write: true,
		flags: func(fs *flag.FlagSet) { fs.StringVar(&reason, "reason", "", "why, for the audit log (required)") },
		check: reasonRequired(&reason, "-reason <text> <tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			t, err := c.gov().LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Reason: reason})
			if err != nil {
				return err
			}
			return c.output(s.out, t, func(w io.Writer) error { return govTenantText(w, t) })
		},
	})
}

func govTenantUnlockCommand() *command {
	return govCommand(clientSpec{
		name: "unlock", synopsis: "lift a governance lock", usage: "<tenant>",
		help:  "Emits an unlock event; regions unlock <tenant> once its anchor works. Refused while the anchor is deleted.",
		write: true,
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			t, err := c.gov().UnlockTenant(ctx, &kv1.GovernanceUnlockTenantRequest{RequestId: c.requestID, Tenant: fs.Arg(0)})
			if err != nil {
				return err
			}
			return c.output(s.out, t, func(w io.Writer) error { return govTenantText(w, t) })
		},
	})
}

func govSetAnchorCommand() *command {
	var anchorURI, consentPath, consent string
	return govCommand(clientSpec{
		name: "set-anchor", synopsis: "point a tenant at a (new) L1 anchor (governance)", usage: "-anchor <uri> -consent <file> <tenant>",
		help: "Sets <tenant>'s L1 anchor URI at governance; every region of the tenant follows. After `tenant delete-anchor` " +
			"it turns the kill switch off: regions unseal the tenant's keys again and every blob wrapped before still unwraps. " +
			"It needs the tenant owner's consent (-consent), which the owner makes with `krypton owner consent -op set-anchor`; " +
			"the change is sent under the request id the consent names.",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&anchorURI, "anchor", "", "the tenant's L1 anchor URI (required)")
			fs.StringVar(&consentPath, "consent", "", "the tenant owner's consent file (`krypton owner consent`; required)")
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, "-anchor <uri> -consent <file> <tenant>"); err != nil {
				return err
			}
			if anchorURI == "" {
				return usagef("%s: -anchor is required", cmdName(fs))
			}
			if consentPath == "" {
				return usagef("%s: -consent is required: the tenant's owner makes one with `krypton owner consent -key <owner.key> -op set-anchor -anchor <uri> -out consent.jws %s`", cmdName(fs), fs.Arg(0))
			}
			var err error
			consent, err = consentFlag(fs, consentPath)
			return err
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			t, err := c.gov().SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: c.requestID, Tenant: fs.Arg(0), AnchorUri: anchorURI, Consent: consent})
			if err != nil {
				return err
			}
			return c.output(s.out, t, func(w io.Writer) error { return govTenantText(w, t) })
		},
	})
}

func govDeleteAnchorCommand() *command {
	var reason string
	var wait bool
	return govCommand(clientSpec{
		name: "delete-anchor", synopsis: "the kill switch: delete a tenant's L1 pointer (governance)", usage: "-reason <text> [-wait] <tenant>",
		help: "Deletes <tenant>'s L1 anchor pointer at governance: every region locks the tenant out, wipes its keys from memory and " +
			"refuses every wrap and unwrap for it, until `tenant set-anchor`. Sealed keys stay intact, so setting the anchor again loses " +
			"nothing. With -wait it returns once every region of the tenant has made it effective (bounded by -timeout; on timeout the " +
			"deletion stands, and the same -request-id waits again).",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "why, for the audit log (required)")
			fs.BoolVar(&wait, "wait", false, "return only once every region of the tenant reports it effective")
		},
		check: reasonRequired(&reason, "-reason <text> [-wait] <tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.gov().DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Reason: reason, Wait: wait})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				fmt.Fprintf(w, "Deleted the anchor of tenant %s: event %d at %s\n", fs.Arg(0), resp.GetEvent().GetCursor(), timeText(resp.GetEvent().GetTime()))
				return regionCursorsText(w, resp.GetRegions(), wait)
			})
		},
	})
}

func govTenantResyncCommand() *command {
	var regions string
	var wait bool
	return govCommand(clientSpec{
		name: "resync", synopsis: "repair a tenant a region refused to create (governance)", usage: "[-regions <r1,r2>] [-wait] <tenant>",
		help: "Emits a resync event for <tenant> to the named regions (default: all of the tenant's). Each region creates what it " +
			"lacks of the tenant as governance holds it — the tenant itself (its root key must answer), its services, its policy, " +
			"governance's lock — and leaves what it has alone: no new key versions. It never lifts a lock, the kill switch or a " +
			"revocation; a revoked tenant, or one whose anchor is deleted, is refused. Use it after a region refused the tenant's " +
			"creation because its root key did not answer in time. With -wait it returns once every named region has reported the " +
			"event (bounded by -timeout; on timeout the event stands, and the same -request-id waits again); whether a region applied " +
			"or refused it is in that region's audit log (governance.event-refused).",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&regions, "regions", "", "comma-separated regions to resync (default: every region of the tenant)")
			fs.BoolVar(&wait, "wait", false, "return only once every named region reports the event")
		},
		check: exactArgs(1, "[-regions <r1,r2>] [-wait] <tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			req := &kv1.ResyncTenantRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Wait: wait}
			for _, r := range strings.Split(regions, ",") {
				if r = strings.TrimSpace(r); r != "" {
					req.Regions = append(req.Regions, r)
				}
			}
			resp, err := c.gov().ResyncTenant(ctx, req)
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				e := resp.GetEvent()
				fmt.Fprintf(w, "Resync of tenant %s: event %d at %s\n", fs.Arg(0), e.GetCursor(), timeText(e.GetTime()))
				services := strings.Join(e.GetServices(), ", ")
				if services == "" {
					services = "none"
				}
				if err := tableNoHeader(w, [][]string{
					{"Regions:", strings.Join(e.GetRegions(), ", ")},
					{"Services:", services},
					{"Policy revision:", strconv.FormatUint(e.GetPolicy().GetRevision(), 10)},
					{"Locked:", strconv.FormatBool(e.GetLocked())},
				}); err != nil {
					return err
				}
				if !wait {
					_, err := fmt.Fprintln(w, "Not waited for: `krypton governance status` shows each region's progress.")
					return err
				}
				fmt.Fprintln(w, "Reported by every named region (a refusal is in that region's audit log):")
				var rows [][]string
				for _, r := range resp.GetRegions() {
					rows = append(rows, []string{r.GetRegion(), strconv.FormatUint(r.GetAppliedCursor(), 10), timeText(r.GetReportedAt())})
				}
				return table(w, []string{"Region", "Applied cursor", "Reported"}, rows)
			})
		},
	})
}

func regionCursorsText(w io.Writer, regions []*kv1.RegionCursor, waited bool) error {
	if !waited {
		_, err := fmt.Fprintln(w, "Not waited for: `krypton governance status` shows each region's progress.")
		return err
	}
	fmt.Fprintln(w, "Effective in every region of the tenant:")
	var rows [][]string
	for _, r := range regions {
		rows = append(rows, []string{r.GetRegion(), strconv.FormatUint(r.GetAppliedCursor(), 10), timeText(r.GetReportedAt())})
	}
	return table(w, []string{"Region", "Applied cursor", "Reported"}, rows)
}

func serviceCommand() *command {
	return &command{
		name: "service", synopsis: "create and list a tenant's services (governance)",
		help: "Services of a tenant, registered at governance; every region of the tenant creates the service's key (L3) from the feed.",
		sub:  []*command{serviceCreateCommand(), serviceListCommand()},
	}
}

func serviceCreateCommand() *command {
	return govCommand(clientSpec{
		name: "create", synopsis: "register a service of a tenant", usage: "<tenant> <service>",
		help:  "Registers <service> of <tenant> at governance and emits a create-service event to the tenant's regions.",
		write: true,
		check: exactArgs(2, "<tenant> <service>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			sv, err := c.gov().CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Service: fs.Arg(1)})
			if err != nil {
				return err
			}
			return c.output(s.out, sv, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Created service %s/%s: event %d\n", sv.GetTenant(), sv.GetName(), sv.GetCursor())
				return err
			})
		},
	})
}

func serviceListCommand() *command {
	return govCommand(clientSpec{
		name: "list", synopsis: "list a tenant's services", usage: "<tenant>",
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			all := &kv1.GovernanceListServicesResponse{}
			for token := ""; ; {
				resp, err := c.gov().ListServices(ctx, &kv1.GovernanceListServicesRequest{Tenant: fs.Arg(0), PageSize: governance.MaxPageSize, PageToken: token})
				if err != nil {
					return err
				}
				all.Services = append(all.Services, resp.GetServices()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			return c.output(s.out, all, func(w io.Writer) error { return servicesTable(w, all.GetServices()) })
		},
	})
}

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
			fs.StringVar(&file, "file", "", "JSON file holding the policy (as `policy get -format json` prints it)")
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

func revokeCommand() *command {
	var tenant, service, reason string
	var version uint
	var dryRun, wait bool
	return govCommand(clientSpec{
		name: "revoke", synopsis: "revoke a tenant, a service or one key version in every region (governance)",
		usage: "-tenant <t> [-service <s> [-version <v>]] -reason <text> [-dry-run] [-wait]",
		help: "Revokes, for good, a whole tenant, one of its services, or one key version, in every region of the tenant. " +
			"-dry-run changes nothing and prints the blast radius: tenants, services, key versions (as last reported by the regions) " +
			"and regions. -wait returns once every region of the tenant has made the revocation effective (bounded by -timeout; on " +
			"timeout the revocation stands, and the same -request-id waits again).",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&tenant, "tenant", "", "the tenant (required)")
			fs.StringVar(&service, "service", "", "one service of the tenant")
			fs.UintVar(&version, "version", 0, "one key version of the service")
			fs.StringVar(&reason, "reason", "", "why, for the audit log (required unless -dry-run)")
			fs.BoolVar(&dryRun, "dry-run", false, "change nothing; print the blast radius")
			fs.BoolVar(&wait, "wait", false, "return only once every region of the tenant reports the revocation effective")
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 0, 0, "flags only"); err != nil {
				return err
			}
			switch {
			case tenant == "":
				return usagef("revoke: -tenant is required")
			case version != 0 && service == "":
				return usagef("revoke: -version needs -service")
			case version > 1<<32-1:
				return usagef("revoke: -version is too large")
			case !dryRun && strings.TrimSpace(reason) == "":
				return usagef("revoke: -reason is required")
			case dryRun && wait:
				return usagef("revoke: -dry-run and -wait do not go together")
			}
			return nil
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			req := &kv1.RevokeRequest{Target: &kv1.KeyScope{Tenant: tenant, Service: service, Version: uint32(version)}, Reason: reason, DryRun: dryRun, Wait: wait}
			if !dryRun {
				req.RequestId = c.requestID
			}
			resp, err := c.gov().Revoke(ctx, req)
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				scope := tenant
				if service != "" {
					scope += "/" + service
				}
				if version != 0 {
					scope += "/" + strconv.FormatUint(uint64(version), 10)
				}
				if dryRun {
					fmt.Fprintf(w, "Dry run: revoking %s would cover (nothing was changed):\n", scope)
				} else {
					e := resp.GetEvent()
					fmt.Fprintf(w, "Revoked %s: event %d (%s) at %s\n", scope, e.GetCursor(), enumName(e.GetKind(), "EVENT_KIND_"), timeText(e.GetTime()))
				}
				if err := blastText(w, resp.GetBlastRadius()); err != nil {
					return err
				}
				if dryRun {
					return nil
				}
				return regionCursorsText(w, resp.GetRegions(), wait)
			})
		},
	})
}

func blastText(w io.Writer, b *kv1.BlastRadius) error {
	refs := func(rs []*kv1.KeyRef, withVersion bool) string {
		if len(rs) == 0 {
			return "none reported"
		}
		var out []string
		for _, r := range rs {
			s := r.GetTenant() + "/" + r.GetService()
			if withVersion {
				s += "/" + strconv.FormatUint(uint64(r.GetVersion()), 10)
			}
			out = append(out, s)
		}
		return strings.Join(out, ", ")
	}
	return tableNoHeader(w, [][]string{
		{"Tenants:", strings.Join(b.GetTenants(), ", ")},
		{"Services:", refs(b.GetServices(), false)},
		{"Key versions:", refs(b.GetKeyVersions(), true)},
		{"Regions:", strings.Join(b.GetRegions(), ", ")},
	})
}

func governanceCommand() *command {
	return &command{
		name: "governance", synopsis: "run and inspect the governance plane",
		help: "The governance plane holds tenants, their L1 anchor pointers, services, access policy and the revocation log that every region follows.",
		sub:  []*command{governanceServerCommand(), governanceStatusCommand()},
	}
}

func governanceStatusCommand() *command {
	return govCommand(clientSpec{
		name: "status", synopsis: "the governance cluster and each region's lag",
		help:  "Describes the governance node that answers (Raft view, head of the log) and, per region, the cursor it reported applied, the events of its tenants still pending, and the age of the oldest.",
		check: exactArgs(0, "no arguments"),
		body: func(ctx context.Context, s *streams, _ *flag.FlagSet, c *apiClient) error {
			st, err := c.gov().Status(ctx, &kv1.GovernanceStatusRequest{})
			if err != nil {
				return err
			}
			return c.output(s.out, st, func(w io.Writer) error {
				leader := st.GetLeaderId()
				if leader == "" {
					leader = "(none)"
				}
				if err := tableNoHeader(w, [][]string{
					{"Node:", st.GetNodeId()},
					{"Leader:", leader},
					{"Term:", strconv.FormatUint(st.GetTerm(), 10)},
					{"Commit index:", strconv.FormatUint(st.GetCommitIndex(), 10)},
					{"Applied index:", strconv.FormatUint(st.GetAppliedIndex(), 10)},
					{"Head cursor:", strconv.FormatUint(st.GetHeadCursor(), 10)},
				}); err != nil {
					return err
				}
				if len(st.GetRegions()) == 0 {
					_, err := fmt.Fprintln(w, "\nNo region known yet.")
					return err
				}
				fmt.Fprintln(w)
				var rows [][]string
				for _, r := range st.GetRegions() {
					rows = append(rows, []string{r.GetCursor().GetRegion(), strconv.FormatUint(r.GetCursor().GetAppliedCursor(), 10),
						strconv.FormatUint(r.GetPendingEvents(), 10), r.GetLag().AsDuration().Round(time.Millisecond).String(), timeText(r.GetCursor().GetReportedAt())})
				}
				return table(w, []string{"Region", "Applied cursor", "Pending", "Lag", "Reported"}, rows)
			})
		},
	})
}

// govServerFlags are the flags of `krypton governance server`, read as `krypton server` reads its
// own (command line over KRYPTON_<NAME> over -config).
type govServerFlags struct {
	daemon                                  daemonFlags
	nodeID, dataDir                         string
	raftAddr, gossipAddr, apiAddr, httpAddr string
	pprofAddr                               string
	bootstrapExpect                         int
	join, caCert, cert, key, regions        string
	gossip                                  gossipKeyFlags
	devAnchor                               bool
	heartbeat                               time.Duration
	tuning                                  raftTuning
	oidc                                    oidcFlags
	audit                                   auditFlags
}

func (f *govServerFlags) declare(fs *flag.FlagSet) {
	f.daemon.declare(fs, "node-id")
	fs.StringVar(&f.nodeID, "node-id", "", "this node's id; its certificate must name it (spiffe://krypton/governance/node/<id>, krypton certs governance <id>)")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory for the Raft log, snapshots and the audit log")
	fs.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7510", "host:port for Raft (mutual TLS)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7520", "host:port for gossip (encrypted, TCP and UDP)")
	fs.StringVar(&f.apiAddr, "api-addr", defaultGovernanceAddr, "host:port for the GovernanceService API (mutual TLS)")
	fs.StringVar(&f.httpAddr, "http-addr", "", "host:port for /metrics and /healthz (plain HTTP); empty disables")
	fs.StringVar(&f.pprofAddr, "pprof", "", "host:port to serve /debug/pprof on, over mutual TLS to operator certificates only; empty (the default) disables the profiler")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "number of nodes that bootstrap a new governance cluster together (3 in production, 1 for development); 0 joins an existing one")
	fs.StringVar(&f.join, "join", "", "gossip addresses of other governance nodes, comma-separated")
	f.gossip.declare(fs)
	fs.StringVar(&f.caCert, "ca-cert", "", "PEM file of the CA that signs node, service and operator certificates")
	fs.StringVar(&f.cert, "cert", "", "PEM file of this node's certificate")
	fs.StringVar(&f.key, "key", "", "PEM file of this node's private key")
	fs.StringVar(&f.regions, "regions", "", "the only regions tenants may name, comma-separated; empty accepts any region name")
	fs.BoolVar(&f.devAnchor, "dev-anchor", false, "allow tenants on the file:// development anchor (never in production)")
	fs.DurationVar(&f.heartbeat, "heartbeat-interval", 5*time.Second, "how often the revocation feed sends a heartbeat when idle (at most 5s)")
	f.tuning.declare(fs)
	f.oidc.declare(fs)
	f.audit.declare(fs)
}

func (f *govServerFlags) governanceConfig() (governance.Config, error) {
	cfg := governance.DefaultConfig()
	cfg.NodeID = f.nodeID
	if f.nodeID == "" {
		return cfg, usagef("governance server: -node-id is required")
	}
	dir, err := dataDirFlag("governance server", f.dataDir)
	if err != nil {
		return cfg, err
	}
	cfg.DataDir = dir
	cfg.RaftAddr, cfg.GossipAddr, cfg.RPCAddr, cfg.HTTPAddr = f.raftAddr, f.gossipAddr, f.apiAddr, f.httpAddr
	cfg.PprofAddr = f.pprofAddr
	cfg.BootstrapExpect = f.bootstrapExpect
	cfg.Join = splitList(f.join)
	cfg.Regions = splitList(f.regions)
	cfg.AllowDevAnchor = f.devAnchor
	if f.heartbeat <= 0 {
		return cfg, usagef("governance server: -heartbeat-interval must be positive")
	}
	cfg.HeartbeatInterval = f.heartbeat
	cfg.Tune = f.tuning.apply
	if cfg.GossipKey, cfg.Roots, cfg.Certificate, err = nodeSecrets("governance server", pki.KindGovernance, &f.gossip, f.caCert, f.cert, f.key, f.nodeID); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

func governanceServerCommand() *command {
	f := &govServerFlags{}
	return &command{
		name:     "server",
		synopsis: "run a governance node",
		help: "Runs one node of the governance cluster until SIGINT or SIGTERM. Start three nodes with -bootstrap-expect 3 and -join " +
			"pointing at one another (one with -bootstrap-expect 1 for development). Region nodes follow its feed " +
			"(`krypton server -governance <addrs>`); operators use `krypton tenant|service|policy|revoke -governance <addr>`.",
		flags: f.declare,
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			return runDaemon(ctx, s, fs, "governance server", &f.daemon, &f.gossip, func(e *daemonEnv) (daemon, error) {
				cfg, err := f.governanceConfig()
				if err != nil {
					return daemon{}, err
				}
				cfg.Logger = e.log
				if cfg.AuditSyslog, err = f.audit.syslogConfig(e.log); err != nil {
					return daemon{}, err
				}
				if cfg.OIDC, err = f.oidc.verifier(e.log); err != nil {
					return daemon{}, err
				}
				e.atExit(func() { cfg.OIDC.Close() }) // after the node has stopped
				n, err := governance.Start(ctx, cfg)
				if err != nil {
					return daemon{}, err
				}
				fmt.Fprintf(e.s.err, "krypton: governance node %s serving on %s\n", cfg.NodeID, n.Addr())
				return daemon{stop: n.Close}, nil
			})
		},
	}
}

func ownerKeyText(fp string) string {
	if fp == "" {
		return "none (the anchor cannot be moved until one is registered: tenant set-owner)"
	}
	return fp
}

// readOwnerPub reads an owner public key file ("" for none) and checks it.
func readOwnerPub(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if _, err := owner.ParsePublicKey(string(b)); err != nil {
		return "", fmt.Errorf("%s: %v", path, err)
	}
	return string(b), nil
}
