// `krypton tenant set-quota`: a tenant's or a service's quota, at a region node or at governance.

package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/quota"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

const quotaUsage = "[-rate <n>] [-burst <n>] [-concurrency <n>] <tenant> [<service>]"

const quotaHelp = "Sets the quota of <tenant>, or of its <service>, replacing the one it had: at most -rate requests per second " +
	"(an item of a batch or packed call is one request) with bursts of -burst (0: the rate), and at most -concurrency calls in flight. " +
	"0 leaves that dimension unlimited; all 0 removes the quota. Every region node enforces it on its own for the calls it serves, " +
	"and refuses the calls beyond it with ResourceExhausted and a retry hint (docs/operations.md, \"Quotas\")."

// quotaFlags adds -rate, -burst and -concurrency to fs, reading them into q.
func quotaFlags(fs *flag.FlagSet, q *quota.Limits) {
	fs.Func("rate", "requests per second (0: unlimited)", uintFlag(&q.Rate))
	fs.Func("burst", "requests at once above the rate (0: the rate)", uintFlag(&q.Burst))
	fs.Func("concurrency", "calls in flight (0: unlimited)", uintFlag(&q.Concurrency))
}

func uintFlag(dst *uint32) func(string) error {
	return func(s string) error {
		var v uint64
		if _, err := fmt.Sscan(s, &v); err != nil || fmt.Sprint(v) != s || v > 1<<32-1 {
			return fmt.Errorf("%q is not a whole number of at least 0", s)
		}
		*dst = uint32(v)
		return nil
	}
}

func quotaText(w io.Writer, tenant, service string, q *kv1.Quota) error {
	who := "tenant " + tenant
	if service != "" {
		who = "service " + tenant + "/" + service
	}
	_, err := fmt.Fprintf(w, "Quota of %s: %s\n", who, quota.FromProto(q))
	return err
}

func tenantSetQuotaCommand() *command {
	var q quota.Limits
	return clientCommand(clientSpec{
		name: "set-quota", synopsis: "set a tenant's or service's quota", usage: quotaUsage,
		help:  quotaHelp + " A region that follows governance refuses it: set it at governance (-governance).",
		kind:  pki.KindOperator,
		write: true,
		flags: func(fs *flag.FlagSet) { quotaFlags(fs, &q) },
		check: func(fs *flag.FlagSet) error { return nargs(fs, 1, 2, quotaUsage) },
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.admin().SetQuota(ctx, &kv1.SetQuotaRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Service: fs.Arg(1), Quota: quota.ToProto(q)})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error { return quotaText(w, fs.Arg(0), fs.Arg(1), resp.GetQuota()) })
		},
	})
}

func govSetQuotaCommand() *command {
	var q quota.Limits
	return govCommand(clientSpec{
		name: "set-quota", synopsis: "set a tenant's or service's quota (governance)", usage: quotaUsage,
		help:  quotaHelp + " Governance sends it to every region of the tenant (a SET_QUOTA event).",
		write: true,
		flags: func(fs *flag.FlagSet) { quotaFlags(fs, &q) },
		check: func(fs *flag.FlagSet) error { return nargs(fs, 1, 2, quotaUsage) },
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			resp, err := c.gov().SetQuota(ctx, &kv1.GovernanceSetQuotaRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Service: fs.Arg(1), Quota: quota.ToProto(q)})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error { return quotaText(w, fs.Arg(0), fs.Arg(1), resp.GetQuota()) })
		},
	})
}
