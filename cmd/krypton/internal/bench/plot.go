package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// PlotFormat returns the image format of a plot file from its extension: "svg" or "png".
func PlotFormat(path string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".svg", ".png":
		return ext[1:], nil
	}
	return "", fmt.Errorf("bench: a plot is written as .svg or .png, not %q", filepath.Ext(path))
}

// WritePlot draws r in format ("svg" or "png") to w: on top the latency by percentile, in the
// manner of HdrHistogram's plots (the x axis stretches the tail: 90 %, 99 %, 99.9 % are equally
// spaced), one line per operation; below, each second's p50 and p99 over the measured time.
func (r *Result) WritePlot(w io.Writer, format string) error {
	if r.hist == nil || r.hist.TotalCount() == 0 {
		return errors.New("bench: nothing to plot: no call was answered")
	}
	top, err := r.percentilePlot()
	if err != nil {
		return err
	}
	bottom, err := r.timelinePlot()
	if err != nil {
		return err
	}
	c, err := draw.NewFormattedCanvas(8*vg.Inch, 8*vg.Inch, format)
	if err != nil {
		return err
	}
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	plots := [][]*plot.Plot{{top}, {bottom}}
	canvases := plot.Align(plots, tiles, draw.New(c))
	top.Draw(canvases[0][0])
	bottom.Draw(canvases[1][0])
	_, err = c.WriteTo(w)
	return err
}

// tailX places a percentile on the x axis: log10(1/(1-p)), so 90 % is 1, 99 % is 2, 99.9 % is 3.
func tailX(percentile float64) float64 { return math.Log10(100 / (100 - percentile)) }

func (r *Result) percentilePlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "krypton bench: " + r.Description()
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true

	lines := []struct {
		name string
		h    *hdrhistogram.Histogram
	}{{fmt.Sprintf("%s (max %s ms)", r.Total.Op, ms(r.Total.Latency.Max)), r.hist}}
	if r.Config.Op == OpMixed {
		lines = lines[:0]
		for _, s := range r.ByOp {
			lines = append(lines, struct {
				name string
				h    *hdrhistogram.Histogram
			}{fmt.Sprintf("%s (max %s ms)", s.Op, ms(s.Latency.Max)), r.hists[s.Op]})
		}
	}
	maxX := 1.0
	for i, l := range lines {
		var pts plotter.XYs
		for _, b := range DistributionOf(l.h) {
			if b.Percentile >= 100 {
				continue // at x = ∞; the legend gives the max
			}
			pts = append(pts, plotter.XY{X: tailX(b.Percentile), Y: float64(b.Micros) / 1000})
		}
		if len(pts) == 0 {
			continue
		}
		maxX = max(maxX, pts[len(pts)-1].X)
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(l.name, line)
	}
	var ticks []plot.Tick
	for k := 0; float64(k) <= math.Ceil(maxX) && k <= 6; k++ {
		ticks = append(ticks, plot.Tick{Value: float64(k), Label: percentileLabel(k)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = 0, math.Ceil(maxX)
	return p, nil
}

// percentileLabel names the tick at x = k: 0 %, 90 %, 99 %, 99.9 %, ...
func percentileLabel(k int) string {
	if k == 0 {
		return "0%"
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.*f", k, 100-100/math.Pow10(k)), "0"), ".") + "%"
}

func (r *Result) timelinePlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "latency over the measured time, per second (all operations)"
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "latency (ms)"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	p.Y.Min = 0
	if len(r.Timeline) == 0 {
		p.X.Max, p.Y.Max = 1, 1
		return p, nil
	}
	for i, s := range []struct {
		name string
		v    func(Point) int64
	}{{"p50", func(t Point) int64 { return t.P50Micros }}, {"p99", func(t Point) int64 { return t.P99Micros }}} {
		pts := make(plotter.XYs, len(r.Timeline))
		for j, t := range r.Timeline {
			pts[j] = plotter.XY{X: t.AtSeconds, Y: float64(s.v(t)) / 1000}
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		line.Color, points.Color = plotutil.Color(i), plotutil.Color(i)
		points.Radius = vg.Points(2)
		p.Add(line, points)
		p.Legend.Add(s.name, line, points)
	}
	return p, nil
}
