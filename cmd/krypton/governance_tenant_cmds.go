// `krypton tenant` against governance: create, list, describe, lock, anchors, resync, owner keys.

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/quota"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

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
		"set-quota": govSetQuotaCommand(),
	}
	for i, sub := range t.sub {
		if g := gov[sub.name]; g != nil {
			t.sub[i] = dualCommand(sub, g)
		}
	}
	t.sub = append(t.sub, govSetAnchorCommand(), govDeleteAnchorCommand(), govTenantResyncCommand(), govTenantSetRegionsCommand())
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
		{"Home region:", homeText(t.GetHomeRegion())},
		{"Created:", timeText(t.GetCreatedAt())},
		{"Last event:", strconv.FormatUint(t.GetCursor(), 10)},
		{"Owner key:", ownerKeyText(t.GetOwnerKeyFingerprint())},
		{"Quota:", quota.FromProto(t.GetQuota()).String()},
	}
	for _, r := range slices.Sorted(maps.Keys(t.GetRegionAnchors())) {
		u := t.GetRegionAnchors()[r]
		if u == "" {
			u = "(deleted: the kill switch is on)"
		}
		rows = append(rows, []string{"Anchor of " + r + ":", u})
	}
	if t.GetAnchorDeletedAt() != nil {
		rows = append(rows, []string{"Anchor deleted:", timeText(t.GetAnchorDeletedAt())})
	}
	if p := t.GetFloorPending(); len(p) > 0 {
		rows = append(rows, []string{"Made shared:", "waiting for " + strings.Join(p, ", ") + " to report their own key versions (each must have the tenant)"})
	}
	return tableNoHeader(w, append(rows, extra...))
}

// regionAnchorsFlag is a repeated -region-anchor REGION=URI: a region's own anchor.
type regionAnchorsFlag map[string]string

func (f regionAnchorsFlag) String() string { return "" }

func (f regionAnchorsFlag) Set(v string) error {
	r, u, ok := strings.Cut(v, "=")
	if !ok || r == "" || u == "" {
		return fmt.Errorf("want REGION=URI (one region's own anchor, e.g. eu=awskms://arn:aws:kms:eu-west-1:111122223333:alias/acme)")
	}
	if _, dup := f[r]; dup {
		return fmt.Errorf("region %s is named twice", r)
	}
	f[r] = u
	return nil
}

func govTenantCreateCommand() *command {
	var anchorURI, regions, ownerPub, ownerPEM, home string
	regionAnchors := regionAnchorsFlag{}
	return govCommand(clientSpec{
		name: "create", synopsis: "create a tenant at governance", usage: "-anchor <uri> -regions <r1,r2> [-home <region>] [-region-anchor <region>=<uri> ...] <tenant>",
		help: "Creates <tenant> at governance with its L1 anchor URI and the regions it may live in; every one of those regions " +
			"creates it from the governance feed. With -home the tenant is shared: the home region makes every key version and " +
			"the others receive them sealed through governance, so a blob wrapped in one region unwraps in all of them " +
			"(docs/governance.md, \"Multi-region tenants\"); without it each region makes its own keys.",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&anchorURI, "anchor", "", "the tenant's L1 anchor URI (required)")
			fs.StringVar(&regions, "regions", "", "regions the tenant may live in, comma-separated (governance only; required there)")
			fs.StringVar(&home, "home", "", "the shared tenant's home region, one of -regions, whose leader makes its keys (governance only)")
			fs.Var(regionAnchors, "region-anchor", "`region=uri`: that region's own L1 anchor (a regional KMS key), instead of -anchor; repeat for each region (governance only)")
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
			t, err := c.gov().CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: c.requestID, Tenant: fs.Arg(0), AnchorUri: anchorURI, Regions: splitList(regions), OwnerPublicKey: ownerPEM, HomeRegion: home, RegionAnchors: regionAnchors})
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
	var anchorURI, consentPath, consent, region string
	return govCommand(clientSpec{
		name: "set-anchor", synopsis: "point a tenant at a (new) L1 anchor (governance)", usage: "-anchor <uri> [-region <region>] -consent <file> <tenant>",
		help: "Sets <tenant>'s L1 anchor URI at governance; every region of the tenant without an anchor of its own follows " +
			"(with -region, only that region's own anchor). After `tenant delete-anchor` " +
			"it turns the kill switch off: regions unseal the tenant's keys again and every blob wrapped before still unwraps. " +
			"It needs the tenant owner's consent (-consent), which the owner makes with `krypton owner consent -op set-anchor`; " +
			"the change is sent under the request id the consent names.",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&anchorURI, "anchor", "", "the tenant's L1 anchor URI (required)")
			fs.StringVar(&consentPath, "consent", "", "the tenant owner's consent file ('krypton owner consent'; required)")
			fs.StringVar(&region, "region", "", "set only this region's own anchor (the consent must name it too)")
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
			t, err := c.gov().SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: c.requestID, Tenant: fs.Arg(0), AnchorUri: anchorURI, Consent: consent, Region: region})
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

func homeText(h string) string {
	if h == "" {
		return "(none: each region makes its own keys)"
	}
	return h + " (shared: one key hierarchy in every region)"
}

func govTenantSetRegionsCommand() *command {
	var regions, home, consentPath, consent string
	var wait bool
	return govCommand(clientSpec{
		name: "set-regions", synopsis: "change a shared tenant's regions (residency; governance)", usage: "-regions <r1,r2> [-home <region>] [-consent <file>] [-wait] <tenant>",
		help: "Replaces the regions a shared tenant (created with -home) lives in. A region added receives the tenant's sealed " +
			"keys from its home region and opens every blob wrapped before; a region removed wipes the tenant and refuses its " +
			"blobs. The home region must stay. With -wait it returns once every old and new region has reported the change " +
			"(bounded by -timeout; on timeout the change stands, and the same -request-id waits again). With -home, it makes a " +
			"tenant created without one shared (-regions its regions as they are): each region keeps its own key versions, and " +
			"the home's next ones, numbered above every region's, are shared. Adding a region or -home needs the tenant " +
			"owner's consent (-consent), which the owner makes with `krypton owner consent -op set-regions -regions <r1,r2> " +
			"[-home <region>]`; the change is sent under the request id the consent names. Removing regions needs none.",
		write: true,
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&regions, "regions", "", "the tenant's new regions, comma-separated (required)")
			fs.StringVar(&home, "home", "", "make a tenant created without a home shared, with this home region")
			fs.BoolVar(&wait, "wait", false, "return only once every old and new region reports the change")
			fs.StringVar(&consentPath, "consent", "", "the tenant owner's consent file, to add a region or set -home ('krypton owner consent -op set-regions')")
		},
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 1, "-regions <r1,r2> [-wait] <tenant>"); err != nil {
				return err
			}
			if len(splitList(regions)) == 0 {
				return usagef("%s: -regions is required", cmdName(fs))
			}
			var err error
			consent, err = consentFlag(fs, consentPath)
			return err
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.gov().SetTenantRegions(ctx, &kv1.SetTenantRegionsRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Regions: splitList(regions), Wait: wait, HomeRegion: home, Consent: consent})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				e := resp.GetEvent()
				removed := strings.Join(e.GetRemovedRegions(), ", ")
				if removed == "" {
					removed = "none"
				}
				fmt.Fprintf(w, "Regions of tenant %s: %s (removed: %s); event %d at %s\n", fs.Arg(0), strings.Join(e.GetRegions(), ", "), removed, e.GetCursor(), timeText(e.GetTime()))
				return regionCursorsText(w, resp.GetRegions(), wait)
			})
		},
	})
}
