package jepsen

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Soak sampling (Options.Sample): every node's /metrics is scraped on a fixed period and the
// resource series a leak would show in are written to samples.csv in the run directory, one row
// per node, metric and sample. `make soak` runs a long scenario with it and plots the file
// (jepsen/soakplot); the resources-flat verdict compares the start of the run with its end.

// sampledMetrics are the series a soak watches: memory, goroutines, descriptors, the keyring.
// A metric with several series (the keyring by kind) is summed.
var sampledMetrics = []string{
	"process_resident_memory_bytes",
	"go_memstats_heap_inuse_bytes",
	"go_goroutines",
	"process_open_fds",
	"krypton_keyring_keys",
}

// Sample is one scrape of one metric on one node.
type Sample struct {
	At     time.Duration // since the run started
	Node   string
	Metric string
	Value  float64
}

// sampler scrapes the region's nodes. Run owns it: run starts it and returns when its context
// ends.
type sampler struct {
	c      *cluster
	client *http.Client
	start  time.Time
	every  time.Duration
	out    io.Writer

	mu      sync.Mutex
	samples []Sample
}

func newSampler(c *cluster, start time.Time, every time.Duration, out io.Writer) *sampler {
	tr := &http.Transport{
		// The nodes live in their own namespaces: dial as the clients do.
		DialContext:       func(ctx context.Context, _, addr string) (net.Conn, error) { return c.net.dial(ctx, addr) },
		DisableKeepAlives: true, // a killed node's idle connection must not linger in a pool
	}
	return &sampler{c: c, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}, start: start, every: every, out: out}
}

func (s *sampler) run(ctx context.Context) {
	defer s.client.CloseIdleConnections()
	w := csv.NewWriter(s.out)
	w.Write([]string{"seconds", "node", "metric", "value"})
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		for i, nd := range s.c.nodes {
			if !s.c.running(i) {
				continue
			}
			vals, err := s.scrape(ctx, s.c.httpAddr(i))
			if err != nil {
				continue // a paused or cut-off node: no sample, not a failure
			}
			at := time.Since(s.start)
			s.mu.Lock()
			for _, m := range sampledMetrics {
				v, ok := vals[m]
				if !ok {
					continue
				}
				s.samples = append(s.samples, Sample{At: at, Node: nd.id, Metric: m, Value: v})
				w.Write([]string{strconv.FormatFloat(at.Seconds(), 'f', 1, 64), nd.id, m, strconv.FormatFloat(v, 'f', -1, 64)})
			}
			s.mu.Unlock()
		}
		w.Flush()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) scrape(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jepsen: %s/metrics: %s", addr, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, name := range sampledMetrics {
		f, ok := fams[name]
		if !ok {
			continue
		}
		var sum float64
		for _, m := range f.GetMetric() {
			sum += value(f.GetType(), m)
		}
		out[name] = sum
	}
	return out, nil
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

func (s *sampler) snapshot() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

// growthSlack is how much a series may grow from the first third of a run to the last before the
// resources-flat verdict warns: a ratio and an absolute floor, so that a node that restarted
// into a fresh process (low memory, few goroutines) and warmed up again does not read as a leak.
var growthSlack = map[string]struct {
	ratio float64
	abs   float64
}{
	"process_resident_memory_bytes": {1.5, 32 << 20},
	"go_memstats_heap_inuse_bytes":  {1.5, 16 << 20},
	"go_goroutines":                 {1.5, 50},
	"process_open_fds":              {1.5, 20},
	"krypton_keyring_keys":          {1.5, 16},
}

// checkResourcesFlat compares, per metric, the median over every node's samples in the first
// third of the run with the median in the last third. A growth past growthSlack is a warning,
// not a failure: it is a lead for a leak to chase, not a broken promise, and a short run's
// thirds are too close together to tell a leak from a warm-up.
func checkResourcesFlat(samples []Sample, d time.Duration) (*Verdict, []string) {
	v := newVerdict("resources-flat")
	if len(samples) == 0 {
		v.Result = Warn
		v.Detail = "no samples: no node's /metrics answered"
		return v, nil
	}
	var lines []string
	for _, m := range sampledMetrics {
		var first, last []float64
		for _, s := range samples {
			if s.Metric != m {
				continue
			}
			switch {
			case s.At < d/3:
				first = append(first, s.Value)
			case s.At >= 2*d/3:
				last = append(last, s.Value)
			}
		}
		if len(first) == 0 || len(last) == 0 {
			continue
		}
		a, b := median(first), median(last)
		line := fmt.Sprintf("%s: %s → %s (×%.2f)", m, human(m, a), human(m, b), b/max(a, 1))
		lines = append(lines, line)
		sl := growthSlack[m]
		if b > a*sl.ratio && b-a > sl.abs {
			v.Result = Warn
			v.Problems = append(v.Problems, line)
		}
	}
	v.Detail = "first third → last third, median over nodes: " + strings.Join(lines, "; ")
	return v, lines
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func human(metric string, v float64) string {
	if strings.HasSuffix(metric, "_bytes") {
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// plotResources draws one panel per sampled metric, a line per node, with the fault windows
// shaded as in latency.png: the soak's picture (docs/operations.md shows one).
func plotResources(path string, res *Result, samples []Sample, faults []Fault) error {
	const cols = 1
	rows := len(sampledMetrics)
	img := vgimg.New(12*vg.Inch, vg.Length(rows)*2.4*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	var sh shade
	for _, f := range faults {
		sh.windows = append(sh.windows, [2]float64{float64(f.Start) / 1e9, float64(f.End) / 1e9})
		sh.labels = append(sh.labels, f.Kind)
	}
	var nodes []string
	for _, s := range samples {
		if !slices.Contains(nodes, s.Node) {
			nodes = append(nodes, s.Node)
		}
	}
	slices.Sort(nodes)
	for r, m := range sampledMetrics {
		p := plot.New()
		p.Title.Text = m
		if r == 0 {
			p.Title.Text = fmt.Sprintf("%s (seed %d, %s): %s per node; fault windows shaded", res.Scenario.Name, res.Seed, res.Scenario.Duration, m)
		}
		p.Title.TextStyle.Font.Size = vg.Points(9)
		p.X.Label.Text = "seconds since start"
		scale, unit := 1.0, ""
		if strings.HasSuffix(m, "_bytes") {
			scale, unit = 1<<20, "MiB"
		}
		p.Y.Label.Text = unit
		p.Add(sh, plotter.NewGrid())
		for i, n := range nodes {
			var pts plotter.XYs
			for _, s := range samples {
				if s.Metric == m && s.Node == n {
					pts = append(pts, plotter.XY{X: s.At.Seconds(), Y: s.Value / scale})
				}
			}
			if len(pts) == 0 {
				continue
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			p.Add(l)
			p.Legend.Add(n, l)
		}
		p.Legend.Top = true
		p.Y.Min = 0
		p.Draw(tiles.At(dc, 0, r))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
