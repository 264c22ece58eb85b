package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/kryptonkms/krypton/cmd/krypton/internal/bench"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The noisy-neighbour measurement (`krypton bench -spawn 3 -neighbour`): how much a tenant that
// floods the region slows another tenant's light load. It is a measurement, printed; nothing
// asserts its figures.
const (
	neighbourTenant  = "neighbour"
	neighbourService = "light"
)

// neighbourBench holds bench's -neighbour flags.
type neighbourBench struct {
	on      bool
	rate    float64 // tenant B's open-loop rate
	callers int     // tenant B's most calls in flight
	quota   uint    // with a value: a third phase with tenant A under a quota of this many requests/s
	rounds  int     // rounds of every phase, interleaved
}

func (nb *neighbourBench) check(o *benchOptions) error {
	if !nb.on {
		if nb.quota != 0 {
			return usagef("-neighbour-quota is for -neighbour")
		}
		return nil
	}
	switch {
	case o.spawn == 0:
		return usagef("-neighbour needs -spawn %d: it creates the second tenant itself", devNodes)
	case o.gw.enabled():
		return usagef("-neighbour loads the region's nodes, not a gateway")
	case nb.rounds < 1:
		return usagef("-neighbour-rounds must be at least 1")
	case nb.rate <= 0:
		return usagef("-neighbour-rate must be positive")
	case nb.quota > fsm.MaxQuotaRate:
		return usagef("-neighbour-quota must be at most %d", fsm.MaxQuotaRate)
	}
	return nil
}

// neighbourPhase is one phase's figures over every round: tenant B's latency and errors, and
// tenant A's throughput and errors.
type neighbourPhase struct {
	name         string
	bHist        *hdrhistogram.Histogram
	bErrs, aErrs map[string]int64
	aOps         float64 // summed over the rounds: divided by rounds when printed
	rounds       int
}

func (p *neighbourPhase) add(b, a *bench.Result) {
	p.rounds++
	p.bHist.Merge(b.Histogram())
	for k, v := range b.Total.Errors {
		p.bErrs[k] += v
	}
	if a != nil {
		p.aOps += a.Total.OpsPerSecond
		for k, v := range a.Total.Errors {
			p.aErrs[k] += v
		}
	}
}

// runNeighbour measures tenant B (unary wraps at -neighbour-rate, open loop) alone, then beside
// tenant A (the load the other flags describe, as bench.Run runs it), and, with -neighbour-quota,
// beside tenant A under that quota.
func (o *benchOptions) runNeighbour(ctx context.Context, s *streams, d *devRegion, cfgA transport.ClientConfig, addrs []string) error {
	leader := d.leader()
	if leader < 0 {
		return fmt.Errorf("bench: the development region has no leader")
	}
	if _, err := d.nodes[leader].CreateTenant(ctx, newRequestID(), neighbourTenant, d.anchorURI); err != nil {
		return fmt.Errorf("bench: creating tenant %s: %w", neighbourTenant, err)
	}
	if _, err := d.nodes[leader].CreateKey(ctx, newRequestID(), neighbourTenant, neighbourService); err != nil {
		return fmt.Errorf("bench: creating key %s/%s: %w", neighbourTenant, neighbourService, err)
	}
	cert, err := d.ca.IssueService(neighbourTenant, neighbourService, 24*time.Hour)
	if err != nil {
		return err
	}
	cfgB := transport.ClientConfig{Roots: d.ca.Pool(), Certificate: cert.TLSCertificate()}
	dial := func(cfg transport.ClientConfig) ([]bench.Target, func(), error) {
		var ts []bench.Target
		var closers []func()
		stop := func() {
			for _, c := range closers {
				c()
			}
		}
		for range o.conns {
			for _, a := range addrs {
				c := cfg
				c.Server = pki.Identity{Kind: pki.KindNode}
				conn, err := transport.Dial(ctx, a, c)
				if err != nil {
					stop()
					return nil, nil, err
				}
				closers = append(closers, func() { conn.Close() })
				ts = append(ts, bench.Target{Name: a, Client: kv1.NewWrapServiceClient(conn)})
			}
		}
		return ts, stop, nil
	}
	targetsA, stopA, err := dial(cfgA)
	if err != nil {
		return err
	}
	defer stopA()
	targetsB, stopB, err := dial(cfgB)
	if err != nil {
		return err
	}
	defer stopB()

	b := o.cfg
	b.Tenant, b.Service = neighbourTenant, neighbourService
	b.Op, b.Batch, b.Rate, b.Callers = bench.OpWrap, 0, o.nb.rate, o.nb.callers

	// The phases are interleaved: each round runs every phase once, in order, and each phase's
	// figures merge its windows of every round, so that a drift of the machine's load over the
	// run (other work on shared cores) falls on every phase alike.
	names := []string{"B alone", "B beside A flooding"}
	if o.nb.quota > 0 {
		names = append(names, fmt.Sprintf("B beside A flooding under a quota of %d/s per node", o.nb.quota))
	}
	phases := make([]neighbourPhase, len(names))
	for i, name := range names {
		phases[i] = neighbourPhase{name: name, bHist: bench.NewHistogram(), bErrs: map[string]int64{}}
		if i > 0 {
			phases[i].aErrs = map[string]int64{}
		}
	}
	setQuota := func(q fsm.Quota) error {
		if _, err := d.nodes[leader].SetQuota(ctx, newRequestID(), benchTenant, "", q); err != nil {
			return fmt.Errorf("bench: setting tenant %s's quota: %w", benchTenant, err)
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			all := true
			for _, n := range d.nodes {
				if t, err := n.State().Tenant(benchTenant); err != nil || t.Quota != q {
					all = false
				}
			}
			if all {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("bench: tenant %s's quota did not reach every node in 30s", benchTenant)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for round := 1; round <= o.nb.rounds; round++ {
		for i := range phases {
			p := &phases[i]
			fmt.Fprintf(s.err, "krypton: round %d/%d: %s\n", round, o.nb.rounds, p.name)
			if i == 2 {
				if err := setQuota(fsm.Quota{Rate: uint32(o.nb.quota)}); err != nil {
					return err
				}
			}
			type out struct {
				r   *bench.Result
				err error
			}
			ach := make(chan out, 1)
			if i > 0 {
				go func() {
					r, err := bench.Run(ctx, o.cfg, targetsA, nil)
					ach <- out{r, err}
				}()
			}
			rb, errB := bench.Run(ctx, b, targetsB, nil)
			var ra out
			if i > 0 {
				ra = <-ach
			}
			if errB != nil {
				return errB
			}
			if ra.err != nil {
				return ra.err
			}
			p.add(rb, ra.r)
			if i == 2 {
				if err := setQuota(fsm.Quota{}); err != nil {
					return err
				}
			}
		}
	}
	return writeNeighbour(s.out, o, b, phases)
}

func errorList(errs map[string]int64) string {
	if len(errs) == 0 {
		return "-"
	}
	return errorSummary(errs)
}

func writeNeighbour(w io.Writer, o *benchOptions, b bench.Config, phases []neighbourPhase) error {
	load := fmt.Sprintf("%d callers, closed loop", o.cfg.Callers)
	if o.cfg.Rate > 0 {
		load = fmt.Sprintf("open loop at %.0f ops/s", o.cfg.Rate)
	}
	if o.cfg.Batch > 0 {
		load += fmt.Sprintf(", batches of %d", o.cfg.Batch)
	}
	fmt.Fprintf(w, "Noisy neighbour: tenant B (%s/%s) sends unary wraps at %.0f/s (open loop, latency from intended send);\n"+
		"tenant A (%s/%s) floods with %s %s; %d interleaved rounds of every phase, %s measured per phase and round.\n\n",
		neighbourTenant, neighbourService, b.Rate, benchTenant, benchService, o.cfg.Op, load, o.nb.rounds, o.cfg.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tB calls\tB p50 ms\tB p99 ms\tB errors\tA ops/s\tA errors\t")
	for _, p := range phases {
		aOps, aErr := "-", "-"
		if p.aErrs != nil {
			aOps, aErr = fmt.Sprintf("%.0f", p.aOps/float64(max(p.rounds, 1))), errorList(p.aErrs)
		}
		l := bench.LatencyOf(p.bHist)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", p.name, l.Count, ms(l.P50), ms(l.P99), errorList(p.bErrs), aOps, aErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	base := bench.LatencyOf(phases[0].bHist)
	var lines []string
	for _, p := range phases[1:] {
		l := bench.LatencyOf(p.bHist)
		lines = append(lines, fmt.Sprintf("%s / B alone: p50 x%.2f, p99 x%.2f", p.name, ratio(l.P50, base.P50), ratio(l.P99, base.P99)))
	}
	_, err := fmt.Fprintf(w, "\n%s\n", strings.Join(lines, "\n"))
	return err
}

func ms(us int64) string { return fmt.Sprintf("%.3f", float64(us)/1000) }

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
