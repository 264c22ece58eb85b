package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Service keys (L3): one per tenant and service, versioned. None of these commands ever sees key
// bytes; the API returns none.

func keyCommand() *command {
	return &command{
		name: "key", synopsis: "create, rotate, list, describe and revoke service keys",
		help: "Service keys (L3): one per tenant and service, with versions. The current version wraps; older ones only unwrap until revoked.",
		sub: []*command{
			keyCreateCommand(), keyRotateCommand(), keyListCommand(), keyDescribeCommand(), keyRevokeCommand(),
		},
	}
}

// versionsText summarises a key's versions: "1 decrypt-only, 2 active".
func versionsText(k *kv1.Key) string {
	var parts []string
	for _, v := range k.GetVersions() {
		parts = append(parts, fmt.Sprintf("%d %s", v.GetVersion(), enumName(v.GetState(), "KEY_STATE_")))
	}
	return strings.Join(parts, ", ")
}

func currentText(k *kv1.Key) string {
	if k.GetCurrentVersion() == 0 {
		return "none (revoked)"
	}
	return strconv.FormatUint(uint64(k.GetCurrentVersion()), 10)
}

func keysTable(w io.Writer, keys []*kv1.Key) error {
	var rows [][]string
	for _, k := range keys {
		rows = append(rows, []string{k.GetService(), currentText(k), versionsText(k)})
	}
	return table(w, []string{"Service", "Current", "Versions"}, rows)
}

func keyText(w io.Writer, k *kv1.Key) error {
	if err := tableNoHeader(w, [][]string{
		{"Key:", k.GetTenant() + "/" + k.GetService()},
		{"Current version:", currentText(k)},
	}); err != nil {
		return err
	}
	fmt.Fprintln(w)
	var rows [][]string
	for _, v := range k.GetVersions() {
		rows = append(rows, []string{strconv.FormatUint(uint64(v.GetVersion()), 10), enumName(v.GetState(), "KEY_STATE_"),
			timeText(v.GetCreatedAt()), timeText(v.GetRotatedAt()), timeText(v.GetRevokedAt())})
	}
	return table(w, []string{"Version", "State", "Created", "Rotated", "Revoked"}, rows)
}

func keyCreateCommand() *command {
	return clientCommand(clientSpec{
		name: "create", synopsis: "create the service key of a tenant's service", usage: "<tenant> <service>",
		help: "Creates the service key (L3) of <service> in <tenant>, at version 1, sealed by the tenant key. " +
			"A region that follows governance refuses it and names the command to use there: krypton service create -governance <addr> <tenant> <service>.",
		kind:  pki.KindOperator,
		write: true,
		check: exactArgs(2, "<tenant> <service>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			k, err := c.admin().CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Service: fs.Arg(1)})
			if err != nil {
				return err
			}
			return c.output(s.out, k, func(w io.Writer) error { return keyText(w, k) })
		},
	})
}

func keyRotateCommand() *command {
	return clientCommand(clientSpec{
		name: "rotate", synopsis: "add a new version to a service key", usage: "<tenant> <service>",
		help:  "Adds a version to the service key of <tenant>/<service>: the new one wraps from now on, the previous one only unwraps.",
		kind:  pki.KindOperator,
		write: true,
		check: exactArgs(2, "<tenant> <service>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			k, err := c.admin().RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: c.requestID, Tenant: fs.Arg(0), Service: fs.Arg(1)})
			if err != nil {
				return err
			}
			return c.output(s.out, k, func(w io.Writer) error { return keyText(w, k) })
		},
	})
}

func keyListCommand() *command {
	return clientCommand(clientSpec{
		name: "list", synopsis: "list a tenant's service keys", usage: "<tenant>",
		kind:  pki.KindOperator,
		check: exactArgs(1, "<tenant>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			all := &kv1.ListKeysResponse{}
			for token := ""; ; {
				resp, err := c.admin().ListKeys(ctx, &kv1.ListKeysRequest{Tenant: fs.Arg(0), PageSize: 1000, PageToken: token})
				if err != nil {
					return err
				}
				all.Keys = append(all.Keys, resp.GetKeys()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			return c.output(s.out, all, func(w io.Writer) error { return keysTable(w, all.GetKeys()) })
		},
	})
}

func keyDescribeCommand() *command {
	return clientCommand(clientSpec{
		name: "describe", synopsis: "show a service key's versions", usage: "<tenant> <service>",
		kind:  pki.KindOperator,
		check: exactArgs(2, "<tenant> <service>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			k, err := c.admin().DescribeKey(ctx, &kv1.DescribeKeyRequest{Tenant: fs.Arg(0), Service: fs.Arg(1)})
			if err != nil {
				return err
			}
			return c.output(s.out, k, func(w io.Writer) error { return keyText(w, k) })
		},
	})
}

func keyRevokeCommand() *command {
	var reason string
	var version uint64
	return clientCommand(clientSpec{
		name: "revoke", synopsis: "revoke a tenant, a service or one key version, for good", usage: "-reason <text> <tenant> [<service> [<version>]]",
		help: "Revokes every key of <tenant>, every version of <service>, or one <version>. Revocation is final. " +
			"The command returns only once no node of the region can use the revoked keys, and says how that was reached: " +
			"the nodes that confirmed applying it, and the nodes that did not answer but whose serving lease has run out. " +
			"A region that follows governance refuses it and names the command to use there: krypton revoke -governance <addr> ...",
		kind:  pki.KindOperator,
		write: true,
		flags: func(fs *flag.FlagSet) { fs.StringVar(&reason, "reason", "", "why, for the audit log (required)") },
		check: func(fs *flag.FlagSet) error {
			if err := nargs(fs, 1, 3, "-reason <text> <tenant> [<service> [<version>]]"); err != nil {
				return err
			}
			if fs.NArg() == 3 {
				v, err := strconv.ParseUint(fs.Arg(2), 10, 32)
				if err != nil || v == 0 {
					return usagef("%s: <version> must be a positive integer", cmdName(fs))
				}
				version = v
			}
			if strings.TrimSpace(reason) == "" {
				return usagef("%s: -reason is required", cmdName(fs))
			}
			return nil
		},
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			scope := &kv1.KeyScope{Tenant: fs.Arg(0), Service: fs.Arg(1), Version: uint32(version)}
			resp, err := c.admin().RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: c.requestID, Scope: scope, Reason: reason})
			if err != nil {
				return err
			}
			return c.output(s.out, resp, func(w io.Writer) error {
				what := "tenant " + scope.Tenant
				switch {
				case scope.Version != 0:
					what = fmt.Sprintf("%s/%s version %d", scope.Tenant, scope.Service, scope.Version)
				case scope.Service != "":
					what = scope.Tenant + "/" + scope.Service + " (every version)"
				}
				fmt.Fprintf(w, "Revoked %s\n", what)
				for _, r := range resp.GetRevoked() {
					fmt.Fprintf(w, "  %s/%s version %d\n", r.GetTenant(), r.GetService(), r.GetVersion())
				}
				return fenceText(w, resp.GetFence())
			})
		},
	})
}
