// Governance client plumbing (-governance, region-or-governance commands) and `governance status`.

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

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

func governanceCommand() *command {
	return &command{
		name: "governance", synopsis: "run and inspect the governance plane, reset a region's learned voters",
		help: "The governance plane holds tenants, their L1 anchor pointers, services, access policy and the revocation log that every region follows.",
		sub:  []*command{governanceServerCommand(), governanceStatusCommand(), governanceRegionCommand()},
	}
}

func governanceRegionCommand() *command {
	return &command{
		name: "region", synopsis: "what governance knows of a region",
		help: "Commands on governance's record of a region (its progress is in `krypton governance status`).",
		sub:  []*command{governanceRegionResetVotersCommand()},
	}
}

func governanceRegionResetVotersCommand() *command {
	var reason string
	return govCommand(clientSpec{
		name: "reset-voters", synopsis: "forget a region's voters governance learned from its reports", usage: "-reason <text> <region>",
		help: "Governance accepts a region's reports and feed subscriptions only from the voters of the region's Raft configuration " +
			"it last learned from a report. This forgets that configuration: the next report, from any node certificate of " +
			"<region>, teaches it again (trust on first use). Run it when a node reported a configuration that is not the " +
			"region's (its real voters are refused with \"not a voter\"), once that node is removed from the region and its " +
			"certificate revoked, so that the region's real voters are the ones reporting; a region rebuilt with new node IDs " +
			"needs it too. Recorded in the audit log with -reason.",
		write: true,
		flags: func(fs *flag.FlagSet) { fs.StringVar(&reason, "reason", "", "why, for the audit log (required)") },
		check: reasonRequired(&reason, "-reason <text> <region>"),
		body: func(ctx context.Context, s *streams, fs *flag.FlagSet, c *apiClient) error {
			r, err := c.gov().ResetRegionVoters(ctx, &kv1.ResetRegionVotersRequest{RequestId: c.requestID, Region: fs.Arg(0), Reason: reason})
			if err != nil {
				return err
			}
			return c.output(s.out, r, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Governance forgot %s's voters: the next report from a node of the region teaches them again "+
					"(`krypton governance status` shows the region).\n", r.GetRegion())
				return err
			})
		},
	})
}

// logFormatLine describes the log formats of a governance status: this node's, and the voters'
// lowest while a rolling upgrade is under way.
func logFormatLine(st *kv1.GovernanceStatusResponse) string {
	if st.GetOldestVoter() == "" {
		return fmt.Sprintf("%d (every voter reads it)", st.GetLogFormat())
	}
	return fmt.Sprintf("%d here; voter %s reads %d (upgrade it: commands of a newer format are refused until then)",
		st.GetLogFormat(), st.GetOldestVoter(), st.GetVotersLogFormat())
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
					{"Log format:", logFormatLine(st)},
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
