package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/kryptonkms/krypton/internal/version"
)

func rootCommand() *command {
	return &command{
		name: "krypton",
		help: "Krypton wraps and unwraps data keys under keys sealed by a root key that stays in the customer's KMS or HSM.",
		sub: []*command{
			versionCommand(),
			certsCommand(),
			membersCommand(),
			statusCommand(),
			operatorCommand(),
			joinCommand(),
			leaveCommand(),
			snapshotCommand(),
			tenantCommandWithGovernance(),
			keyCommand(),
			wrapCommand(),
			unwrapCommand(),
			datakeyCommand(),
			serverCommand(),
			gatewayCommand(),
			kmsPluginCommand(),
			devCommand(),
			benchCommand(),
			auditCommand(),
			governanceCommand(),
			ownerCommand(),
			serviceCommand(),
			policyCommand(),
			revokeCommand(),
			loginCommand(),
			logoutCommand(),
		},
	}
}

func versionCommand() *command {
	return &command{
		name:     "version",
		synopsis: "print the version and commit",
		run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() > 0 {
				return usagef("version takes no arguments")
			}
			_, err := fmt.Fprintln(s.out, version.String())
			return err
		},
	}
}
