// `krypton revoke`: revoking a tenant, service or key version, and its blast radius.

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

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
