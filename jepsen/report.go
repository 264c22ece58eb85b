package jepsen

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// writeReport writes the run directory's report: summary.json and summary.txt, faults.json,
// refusals.json, the latency plot (latency.png) and porcupine's visualization
// (linearizability.html). history.jsonl is written as the run goes.
func writeReport(res *Result, c *cluster, ops []Op, faults []Fault, refusals []Refusal, model porcupine.Model, info porcupine.LinearizationInfo, clients int) error {
	dir := res.Dir
	js, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), js, 0o644); err != nil {
		return err
	}
	fj, _ := json.MarshalIndent(faults, "", "  ")
	os.WriteFile(filepath.Join(dir, "faults.json"), fj, 0o644)
	rj, _ := json.MarshalIndent(refusals, "", "  ")
	os.WriteFile(filepath.Join(dir, "refusals.json"), rj, 0o644)
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(res.Text()), 0o644); err != nil {
		return err
	}
	var anns []porcupine.Annotation
	for _, f := range faults {
		anns = append(anns, porcupine.Annotation{Tag: "nemesis", Start: f.Start, End: f.End,
			Description: f.Kind, Details: f.Detail, BackgroundColor: "#f4cccc"})
	}
	info.AddAnnotations(anns)
	if err := porcupine.VisualizePath(model, info, filepath.Join(dir, "linearizability.html")); err != nil {
		return err
	}
	return plotLatency(filepath.Join(dir, "latency.png"), res, ops, faults)
}

// Text is the human summary.
func (r *Result) Text() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "%s  scenario %s: %d nodes, %s, nemeses %s\n", verdict, r.Scenario.Name, r.Scenario.Nodes, r.Scenario.Duration, strings.Join(r.Scenario.Nemeses, ","))
	fmt.Fprintf(&b, "seed %d, network %s, elapsed %s\n", r.Seed, r.Network, r.Elapsed.Round(time.Second))
	if r.Scenario.Regions > 1 {
		fmt.Fprintf(&b, "multi-region mode: regions %s and %s of %d nodes each; tenant %s homed in %s and in both, %s in %s only\n", regionA, regionB, r.Scenario.Nodes, sharedTenant, regionA, residentTenant, regionA)
	}
	if r.Scenario.Governance > 0 {
		fmt.Fprintf(&b, "governance mode: %d governance node(s) feed the region; tenants, services and revocations from governance\n", r.Scenario.Governance)
	}
	t := r.Timing
	fmt.Fprintf(&b, "raft: heartbeat %s, election %s, leader lease %s, snapshot threshold %d every %s, trailing logs %d; serving lease %s, anchor check %s, grace %s\n",
		t.Heartbeat, t.Election, t.LeaderLease, t.SnapshotThreshold, t.SnapshotInterval, t.TrailingLogs, t.Lease, t.AnchorCheck, t.AnchorGrace)
	if len(r.Skipped) > 0 {
		fmt.Fprintf(&b, "skipped (network namespaces and disks need root): %s\n", strings.Join(r.Skipped, ","))
	}
	b.WriteString("\noperations:\n")
	keys := make([]string, 0, len(r.Ops))
	total := 0
	for k, n := range r.Ops {
		keys = append(keys, k)
		total += n
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-16s %7d\n", k, r.Ops[k])
	}
	fmt.Fprintf(&b, "  %-16s %7d\n", "total", total)
	b.WriteString("\nfaults:\n")
	fkeys := make([]string, 0, len(r.Faults))
	for k := range r.Faults {
		fkeys = append(fkeys, k)
	}
	sort.Strings(fkeys)
	for _, k := range fkeys {
		fmt.Fprintf(&b, "  %-20s %3d\n", k, r.Faults[k])
	}
	if len(r.Restores) > 0 {
		fmt.Fprintf(&b, "snapshot restores of the early backup: %d refused, %d applied, %d indeterminate, %d skipped\n",
			r.Restores[RestoreRefused], r.Restores[RestoreApplied], r.Restores[RestoreIndeterminate], r.Restores[RestoreSkipped])
	}
	fmt.Fprintf(&b, "\nrevocations probed: %d node refusals (%d probes of paused or cut-off nodes unanswered); worst time from acknowledgement to the last node's refusal: %s\n", r.Refusals, r.Unanswered, r.WorstRefusal.Round(time.Millisecond))
	if l := r.RevokeLatency; l != nil {
		fmt.Fprintf(&b, "governance revocations acknowledged (every region applied and fenced): %d; latency p50 %s, p99 %s, max %s\n",
			l.Count, l.P50.Round(time.Millisecond), l.P99.Round(time.Millisecond), l.Max.Round(time.Millisecond))
	}
	if l := r.ImportLag; l != nil {
		fmt.Fprintf(&b, "versions made in %s and then used in %s: %d; from the rotation's acknowledgement to the first use there p50 %s, p99 %s, max %s\n",
			regionA, regionB, l.Count, l.P50.Round(time.Millisecond), l.P99.Round(time.Millisecond), l.Max.Round(time.Millisecond))
	}
	if len(r.RefusalCodes) > 0 {
		var codes []string
		for c, n := range r.RefusalCodes {
			codes = append(codes, fmt.Sprintf("%s %d", c, n))
		}
		sort.Strings(codes)
		fmt.Fprintf(&b, "refusals by code: %s\n", strings.Join(codes, ", "))
	}
	b.WriteString("\ncheckers:\n")
	for _, v := range r.Verdicts {
		fmt.Fprintf(&b, "  %-22s %-7s %s\n", v.Checker, v.Result, v.Detail)
		for _, p := range v.Problems {
			fmt.Fprintf(&b, "      - %s\n", p)
		}
	}
	fmt.Fprintf(&b, "\nreport: %s\n", r.Dir)
	return b.String()
}

// shade is a plotter that fills the fault windows behind the points.
type shade struct {
	windows [][2]float64
	labels  []string
}

func (s shade) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	for i, w := range s.windows {
		x0, x1 := trX(w[0]), trX(w[1])
		if x1 < x0+1 {
			x1 = x0 + 1
		}
		var path vg.Path
		path.Move(vg.Point{X: x0, Y: c.Min.Y})
		path.Line(vg.Point{X: x1, Y: c.Min.Y})
		path.Line(vg.Point{X: x1, Y: c.Max.Y})
		path.Line(vg.Point{X: x0, Y: c.Max.Y})
		path.Close()
		c.SetColor(color.NRGBA{R: 230, G: 80, B: 80, A: 40})
		c.Fill(path)
		sty := draw.TextStyle{Color: color.NRGBA{R: 150, A: 255}, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler}
		sty.Font.Size = vg.Points(6)
		sty.Rotation = 1.5708
		c.FillText(sty, vg.Point{X: x0 + vg.Points(6), Y: c.Max.Y - vg.Points(40)}, s.labels[i])
	}
}

// maxPlotPoints bounds the fast and the slow points of each series of the latency plot: drawing a
// glyph per operation took 13 s for 26,000 operations under -race (make test), longer than the
// run's checks.
const maxPlotPoints = 3000

// thinPoints keeps at most n of pts: an even sample of the fast ones (under 100 ms) and, apart,
// of the slow ones (what a fault does), up to n each, so that the plot keeps its shape and a
// few slow operations among many fast ones all stay.
func thinPoints(pts plotter.XYs, n int) plotter.XYs {
	if len(pts) <= n {
		return pts
	}
	var slow, fast plotter.XYs
	for _, p := range pts {
		if p.Y >= 100 {
			slow = append(slow, p)
		} else {
			fast = append(fast, p)
		}
	}
	even := func(ps plotter.XYs, k int) plotter.XYs {
		if len(ps) <= k {
			return ps
		}
		out := make(plotter.XYs, 0, k)
		for i := range k {
			out = append(out, ps[i*len(ps)/k])
		}
		return out
	}
	return append(even(slow, n), even(fast, n)...)
}

func plotLatency(path string, res *Result, ops []Op, faults []Fault) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (seed %d): latency of every operation; fault windows shaded", res.Scenario.Name, res.Seed)
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.X.Label.Text = "seconds since start"
	p.Y.Label.Text = "latency (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var sh shade
	for _, f := range faults {
		sh.windows = append(sh.windows, [2]float64{float64(f.Start) / 1e9, float64(f.End) / 1e9})
		sh.labels = append(sh.labels, f.Kind)
	}
	p.Add(sh, plotter.NewGrid())
	types := []string{OpWrap, OpUnwrap, OpCreate, OpRotate, OpRevoke}
	for i, typ := range types {
		for j, outcome := range []string{OK, Fail, Info} {
			var pts plotter.XYs
			for _, op := range ops {
				if op.Type == typ && op.Outcome == outcome {
					pts = append(pts, plotter.XY{X: float64(op.Invoke) / 1e9, Y: max(float64(op.Complete-op.Invoke)/1e6, 0.05)})
				}
			}
			pts = thinPoints(pts, maxPlotPoints)
			if len(pts) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return err
			}
			sc.Color = plotutil.Color(i)
			sc.Radius = vg.Points(1)
			sc.Shape = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.CrossGlyph{}, draw.TriangleGlyph{}}[j]
			if j > 0 {
				sc.Radius = vg.Points(2)
			}
			p.Add(sc)
			p.Legend.Add(typ+" "+outcome, sc)
		}
	}
	p.Legend.Top = true
	return p.Save(12*vg.Inch, 6*vg.Inch, path)
}

// checkNoPlaintext scans every node's data directory and log for the data keys the harness
// wrapped and unwrapped (raw, hex and base64): none may be there.
func checkNoPlaintext(c *cluster, h *history) *Verdict {
	v := newVerdict("no-plaintext-on-disk")
	needles := plaintextIndex(h)
	files, bytesScanned := 0, 0
	for _, nd := range append(append([]*node(nil), c.nodes...), c.gov...) {
		// The node's home (its log, and its data directory or the disk it is mounted from);
		// a disk's image is not read raw: its files are, through the mount.
		root := filepath.Join(c.dir, "nodes", nd.id)
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, ".img") || d.Name() == "jepsen-fill" {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			files++
			bytesScanned += len(b)
			if off, ok := needles.find(b); ok {
				rel, _ := filepath.Rel(c.dir, path)
				v.problem("a data key the harness wrapped is in %s at offset %d", rel, off)
			}
			return nil
		})
	}
	v.Detail = fmt.Sprintf("%d data keys sought in %d files (%d MB)", needles.count, files, bytesScanned>>20)
	return v
}
