package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
)

// The command tree is hand-written over the standard flag package rather than built with cobra:
// flag accepts both -format and --format, as consul and vault do, where cobra's pflag rejects
// single-dash long flags; and the tree is small enough that a table reads better than a framework.

// command is one node of the command tree: either it runs, or it holds subcommands.
type command struct {
	name string
	// aliases are other names that run the command: a verb another plane used for the same action
	// (`policy get` for `policy describe`), kept so that scripts keep working (docs/governance.md, "Operator commands").
	aliases  []string
	synopsis string                 // one line, shown in listings
	usage    string                 // arguments after the name, for the usage line
	help     string                 // a paragraph shown by -h
	flags    func(fs *flag.FlagSet) // declares the command's flags; nil for none
	run      func(ctx context.Context, s *streams, fs *flag.FlagSet) error
	sub      []*command
}

// streams are where a command writes; tests pass buffers.
type streams struct {
	out io.Writer
	err io.Writer
}

// usageError marks a mistake in how a command was called: exit code 2, as flag parsing errors.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// dispatch runs the command line args against the root command c. `krypton --version` and
// `krypton -version` are `krypton version`, as in consul and vault: the first thing a newcomer types.
func dispatch(ctx context.Context, c *command, args []string, s *streams) error {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		if sub := c.find("version"); sub != nil {
			return sub.dispatch(ctx, c.name+" "+sub.name, args[1:], s)
		}
	}
	return c.dispatch(ctx, c.name, args, s)
}

func (c *command) dispatch(ctx context.Context, path string, args []string, s *streams) error {
	if len(c.sub) > 0 {
		if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
			if len(args) > 1 && args[0] == "help" {
				// `krypton help key describe` is `krypton key describe -h`, at any depth.
				sub := c.find(args[1])
				if sub == nil {
					c.printSubcommands(s.err, path)
					return usagef("unknown command %q for %q (run %s help)", args[1], path, path)
				}
				rest := []string{"-h"}
				if len(sub.sub) > 0 {
					rest = append([]string{"help"}, args[2:]...)
				}
				return sub.dispatch(ctx, path+" "+sub.name, rest, s)
			}
			c.printSubcommands(s.out, path)
			if len(args) == 0 {
				return usagef("a subcommand is required")
			}
			return nil
		}
		sub := c.find(args[0])
		if sub == nil {
			c.printSubcommands(s.err, path)
			// The path names the group ("krypton key") but must not lead the message: main's
			// printer adds the one "krypton: " prefix (errorLine).
			return usagef("unknown command %q for %q (run %s help)", args[0], path, path)
		}
		return sub.dispatch(ctx, path+" "+sub.name, args[1:], s)
	}
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(s.err)
	if c.flags != nil {
		c.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(s.err, "Usage: %s [flags] %s\n\n", path, c.usage)
		if c.help != "" {
			fmt.Fprintf(s.err, "%s\n\n", c.help)
		}
		fmt.Fprintln(s.err, "Flags (each can also be set as KRYPTON_<NAME>, e.g. -ca-cert as KRYPTON_CA_CERT):")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		return err
	}
	return c.run(ctx, s, fs)
}

func (c *command) find(name string) *command {
	for _, sub := range c.sub {
		if sub.name == name || slices.Contains(sub.aliases, name) {
			return sub
		}
	}
	return nil
}

func (c *command) printSubcommands(w io.Writer, path string) {
	fmt.Fprintf(w, "Usage: %s <command> [flags] [args]\n\n", path)
	if c.help != "" {
		fmt.Fprintf(w, "%s\n\n", c.help)
	}
	fmt.Fprintln(w, "Commands:")
	subs := append([]*command(nil), c.sub...)
	sort.Slice(subs, func(i, j int) bool { return subs[i].name < subs[j].name })
	width := 14 // the names' column: at least 14 wide, and one space more than the longest name
	for _, sub := range subs {
		width = max(width, len(sub.name)+1)
	}
	for _, sub := range subs {
		synopsis := sub.synopsis
		if len(sub.aliases) > 0 {
			synopsis += " (also: " + strings.Join(sub.aliases, ", ") + ")"
		}
		fmt.Fprintf(w, "  %-*s %s\n", width, sub.name, synopsis)
	}
}

// applyEnv sets every flag not given on the command line from KRYPTON_<NAME> when that variable is
// set: -ca-cert from KRYPTON_CA_CERT. Flags given explicitly win.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v, ok := lookup(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usagef("%s: %v", name, e)
			}
		}
	})
	return err
}

// envName is the environment variable that fills a flag: -ca-cert from KRYPTON_CA_CERT.
func envName(flagName string) string {
	return "KRYPTON_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}
