package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kryptonkms/krypton/internal/version"
)

// usageError marks a mistake in how a command was called (exit code 2, as flag parsing errors).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "krypton",
		Short:         "Krypton: sovereign key wrapping",
		Long:          "Krypton wraps and unwraps data keys under keys sealed by a root key that stays in the customer's KMS or HSM.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.String())
			return err
		},
	}
}
