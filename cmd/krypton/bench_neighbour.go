package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

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
	case nb.rate <= 0:
		return usagef("-neighbour-rate must be positive")
	case nb.quota > fsm.MaxQuotaRate:
		return usagef("-neighbour-quota must be at most %d", fsm.MaxQuotaRate)
	}
	return nil
}

// neighbourPhase is one phase's figures: tenant B's latency, and tenant A's throughput.
type neighbourPhase struct {
	name    string
	b, a    *bench.Result
	aErrors string
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

	var phases []neighbourPhase
	fmt.Fprintf(s.err, "krypton: phase 1: tenant %s alone at %.0f wraps/s\n", neighbourTenant, b.Rate)
	alone, err := bench.Run(ctx, b, targetsB, nil)
	if err != nil {
		return err
	}
	phases = append(phases, neighbourPhase{name: "B alone", b: alone})
	loaded := func(name string) error {
		fmt.Fprintf(s.err, "krypton: %s\n", name)
		type out struct {
			r   *bench.Result
			err error
		}
		ach := make(chan out, 1)
		go func() {
			r, err := bench.Run(ctx, o.cfg, targetsA, nil)
			ach <- out{r, err}
		}()
		rb, errB := bench.Run(ctx, b, targetsB, nil)
		ra := <-ach
		if errB != nil {
			return errB
		}
		if ra.err != nil {
			return ra.err
		}
		phases = append(phases, neighbourPhase{name: name, b: rb, a: ra.r, aErrors: errorList(ra.r.Total.Errors)})
		return nil
	}
	if err := loaded("B beside A flooding"); err != nil {
		return err
	}
	if o.nb.quota > 0 {
		q := fsm.Quota{Rate: uint32(o.nb.quota)}
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
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("bench: tenant %s's quota did not reach every node in 30s", benchTenant)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := loaded(fmt.Sprintf("B beside A flooding under a quota of %d/s per node", o.nb.quota)); err != nil {
			return err
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
		"tenant A (%s/%s) floods with %s %s; %s measured per phase.\n\n",
		neighbourTenant, neighbourService, b.Rate, benchTenant, benchService, o.cfg.Op, load, o.cfg.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tB p50 ms\tB p99 ms\tB errors\tA ops/s\tA errors\t")
	for _, p := range phases {
		aOps, aErr := "-", "-"
		if p.a != nil {
			aOps, aErr = fmt.Sprintf("%.0f", p.a.Total.OpsPerSecond), p.aErrors
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", p.name, ms(p.b.Total.Latency.P50), ms(p.b.Total.Latency.P99), errorList(p.b.Total.Errors), aOps, aErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	base := phases[0].b.Total.Latency
	var lines []string
	for _, p := range phases[1:] {
		l := p.b.Total.Latency
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
