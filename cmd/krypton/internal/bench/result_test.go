package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// synthetic is a histogram of 1000 calls: 1 µs, 2 µs, ..., 1000 µs, once each, whose
// percentiles are known: p50 = 500 µs, p90 = 900, p99 = 990, p99.9 = 999, max = 1000.
func synthetic(t *testing.T) *hdrhistogram.Histogram {
	t.Helper()
	h := NewHistogram()
	for v := int64(1); v <= 1000; v++ {
		if err := h.RecordValue(v); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestLatencyOfSynthetic(t *testing.T) {
	l := LatencyOf(synthetic(t))
	// Below 2048 µs, three significant digits make every microsecond its own bucket.
	want := Latency{Count: 1000, Min: 1, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	got := l
	got.Mean, got.StdDev = 0, 0
	if got != want {
		t.Errorf("LatencyOf = %+v, want %+v", got, want)
	}
	if math.Abs(l.Mean-500.5) > 0.01 {
		t.Errorf("mean = %v, want 500.5", l.Mean)
	}
	if LatencyOf(NewHistogram()) != (Latency{}) {
		t.Error("LatencyOf an empty histogram is not zero")
	}
}

func TestLatencyOfLargeValues(t *testing.T) {
	// Above 2048 µs values share buckets; HdrHistogram keeps them within 0.1 %.
	h := NewHistogram()
	for range 99 {
		h.RecordValue(5000)
	}
	h.RecordValue(3_000_000)
	l := LatencyOf(h)
	if rel(l.P50, 5000) > 0.001 || rel(l.P99, 5000) > 0.001 || rel(l.Max, 3_000_000) > 0.001 || rel(l.P999, 3_000_000) > 0.001 {
		t.Errorf("LatencyOf = %+v, want p50 = p99 ≈ 5000 and p99.9 = max ≈ 3,000,000 within 0.1%%", l)
	}
	// Latencies beyond the histogram's range are recorded as its highest value, not dropped.
	if micros(2*time.Hour) != highestMicros || micros(0) != lowestMicros || micros(1500*time.Microsecond) != 1500 {
		t.Error("micros does not clamp to the histogram's range")
	}
}

func rel(got, want int64) float64 { return math.Abs(float64(got-want)) / float64(want) }

func TestDistributionOf(t *testing.T) {
	d := DistributionOf(synthetic(t))
	if len(d) < 10 {
		t.Fatalf("%d brackets, want a distribution", len(d))
	}
	if d[0].Percentile != 0 || d[len(d)-1].Percentile != 100 || d[len(d)-1].Micros != 1000 || d[len(d)-1].Count != 1000 {
		t.Errorf("distribution runs from %+v to %+v, want 0%% to 100%% = 1000 µs, 1000 calls", d[0], d[len(d)-1])
	}
	for i := 1; i < len(d); i++ {
		if d[i].Percentile < d[i-1].Percentile || d[i].Micros < d[i-1].Micros || d[i].Count < d[i-1].Count {
			t.Fatalf("distribution not monotonic at %d: %+v after %+v", i, d[i], d[i-1])
		}
	}
	var at50 *Bracket
	for i := range d {
		if d[i].Percentile == 50 {
			at50 = &d[i]
		}
	}
	if at50 == nil || at50.Micros != 500 || at50.Count != 500 {
		t.Errorf("50th percentile bracket = %+v, want 500 µs after 500 calls", at50)
	}
	if len(DistributionOf(NewHistogram())) != 0 {
		t.Error("an empty histogram has a distribution")
	}
}

// syntheticResult is a finished mixed run over two seconds, with errors, built as Run builds it.
func syntheticResult(t *testing.T) *Result {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Op, cfg.Tenant, cfg.Service = OpMixed, "acme", "payments"
	start := time.Unix(1_700_000_000, 0)
	rec := newRecorder(cfg.ops(), start, start.Add(time.Second), start.Add(3*time.Second))
	at := start.Add(time.Second)
	for i, op := range []Op{OpWrap, OpUnwrap, OpDataKey, OpRewrap} {
		for v := 1; v <= 1000; v++ {
			rec.record(op, at, at.Add(time.Duration(v*(i+1))*time.Microsecond), outcome{items: 1, ok: 1})
		}
	}
	rec.record(OpWrap, at, at.Add(time.Millisecond), outcome{items: 1, fails: []codes.Code{codes.Unavailable}, whole: true})
	rec.record(OpRewrap, at, at.Add(time.Millisecond), outcome{items: 1, fails: []codes.Code{codes.FailedPrecondition}, whole: true})
	// Warm-up calls count nowhere in the result.
	rec.record(OpWrap, start, start.Add(time.Hour), outcome{items: 1, fails: []codes.Code{codes.Internal}, whole: true})
	rec.record(OpWrap, start, start.Add(time.Hour), outcome{items: 1, ok: 1})
	return newResult(cfg, []string{"127.0.0.1:7400"}, start, 2*time.Second, false, rec)
}

func TestResultFigures(t *testing.T) {
	r := syntheticResult(t)
	if r.Total.Calls != 4002 || r.Total.Ops != 4002 || r.Total.OK != 4000 {
		t.Errorf("total calls/ops/ok = %d/%d/%d, want 4002/4002/4000", r.Total.Calls, r.Total.Ops, r.Total.OK)
	}
	if r.Total.OpsPerSecond != 2000 {
		t.Errorf("ops/s = %v, want 2000 (4000 successes in 2 s)", r.Total.OpsPerSecond)
	}
	wantErrs := map[string]int64{"Unavailable": 1, "FailedPrecondition": 1}
	if len(r.Total.Errors) != 2 || r.Total.Errors["Unavailable"] != 1 || r.Total.Errors["FailedPrecondition"] != 1 {
		t.Errorf("errors = %v, want %v", r.Total.Errors, wantErrs)
	}
	if len(r.ByOp) != 4 {
		t.Fatalf("%d per-operation summaries, want 4", len(r.ByOp))
	}
	for i, s := range r.ByOp {
		// Values above 2048 µs fall in 2 µs buckets: within 0.1 %.
		if s.Op != mixedOps[i] || s.OK != 1000 || rel(s.Latency.Max, int64(1000*(i+1))) > 0.001 || s.Latency.P50 != int64(500*(i+1)) {
			t.Errorf("summary %d = %s ok %d p50 %d max %d, want %s ok 1000 p50 %d max %d", i, s.Op, s.OK, s.Latency.P50, s.Latency.Max, mixedOps[i], 500*(i+1), 1000*(i+1))
		}
	}
	if r.Total.Latency.Count != 4000 || rel(r.Total.Latency.Max, 4000) > 0.001 {
		t.Errorf("total latency = %+v, want 4000 answered calls, max 4000 µs", r.Total.Latency)
	}
}

func TestWriteJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := syntheticResult(t).WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Config struct {
			Op              string   `json:"op"`
			Load            string   `json:"load"`
			LatencyFrom     string   `json:"latency_from"`
			DurationSeconds float64  `json:"duration_seconds"`
			Targets         []string `json:"targets"`
		} `json:"config"`
		Total struct {
			OK      int64            `json:"ok"`
			Errors  map[string]int64 `json:"errors"`
			Latency map[string]float64
		} `json:"total"`
		ByOp         []json.RawMessage `json:"by_op"`
		Distribution []Bracket         `json:"distribution"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("result JSON does not parse: %v\n%s", err, buf.String())
	}
	c := got.Config
	if c.Op != "mixed" || c.Load != "closed-loop" || c.LatencyFrom != "send" || c.DurationSeconds != 10 || len(c.Targets) != 1 {
		t.Errorf("config = %+v", c)
	}
	if got.Total.OK != 4000 || got.Total.Errors["Unavailable"] != 1 || len(got.ByOp) != 4 {
		t.Errorf("total ok %d, errors %v, %d operations", got.Total.OK, got.Total.Errors, len(got.ByOp))
	}
	for _, k := range []string{"p50_us", "p90_us", "p99_us", "p99_9_us", "max_us", "min_us", "mean_us"} {
		if _, ok := got.Total.Latency[k]; !ok {
			t.Errorf("total.latency has no %s", k)
		}
	}
	if n := len(got.Distribution); n == 0 || got.Distribution[n-1].Percentile != 100 {
		t.Errorf("distribution %v does not end at 100%%", got.Distribution)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := syntheticResult(t).WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"mixed, unary, 16 callers",
		"p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
		"errors by code: FailedPrecondition 1, Unavailable 1",
		"from send to answer",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// wrap's row: 1000 ok, 500 ops/s, p50 0.500 ms, max 1.000 ms, 1 error; the total row "all".
	if !rowHas(out, "wrap", "1000", "500", "0.500", "1.000", "1") || !rowHas(out, "all", "4000", "2000", "2") {
		t.Errorf("rows do not hold the figures:\n%s", out)
	}
}

func rowHas(table, name string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != name {
			continue
		}
		for _, c := range cells {
			found := false
			for _, x := range f[1:] {
				found = found || x == c
			}
			if !found {
				return false
			}
		}
		return true
	}
	return false
}

func TestWritePlot(t *testing.T) {
	for _, format := range []string{"svg", "png"} {
		var buf bytes.Buffer
		if err := syntheticResult(t).WritePlot(&buf, format); err != nil {
			t.Fatal(err)
		}
		if format == "svg" && !bytes.Contains(buf.Bytes(), []byte("<svg")) {
			t.Errorf("svg plot is not SVG: %.100q", buf.String())
		}
		if format == "png" && !bytes.HasPrefix(buf.Bytes(), []byte("\x89PNG")) {
			t.Errorf("png plot is not PNG")
		}
	}
	if err := (&Result{hist: NewHistogram()}).WritePlot(&bytes.Buffer{}, "svg"); err == nil {
		t.Error("a plot of no calls did not fail")
	}
	if _, err := PlotFormat("latency.pdf"); err == nil {
		t.Error("PlotFormat accepted .pdf")
	}
	if f, err := PlotFormat("x/Latency.SVG"); err != nil || f != "svg" {
		t.Errorf("PlotFormat(Latency.SVG) = %q, %v", f, err)
	}
}

func TestPercentileAxis(t *testing.T) {
	for k, want := range []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"} {
		if got := percentileLabel(k); got != want {
			t.Errorf("percentileLabel(%d) = %q, want %q", k, got, want)
		}
	}
	for p, want := range map[float64]float64{0: 0, 90: 1, 99: 2, 99.9: 3} {
		if got := tailX(p); math.Abs(got-want) > 1e-9 {
			t.Errorf("tailX(%v) = %v, want %v", p, got, want)
		}
	}
}

func TestBatchOutcome(t *testing.T) {
	errs := []*kv1.ItemError{{Code: uint32(codes.NotFound)}, {Code: uint32(codes.FailedPrecondition)}}
	o := batchOutcome(8, 8, nil, errs)
	if o.items != 8 || o.ok != 6 || len(o.fails) != 2 || o.whole {
		t.Errorf("2 item errors of 8: %+v", o)
	}
	o = batchOutcome(8, 5, nil, nil)
	if o.ok != 5 || len(o.fails) != 3 || o.fails[0] != codes.Internal {
		t.Errorf("3 results missing of 8: %+v, want them Internal", o)
	}
	o = batchOutcome(4, 0, status.Error(codes.Unavailable, "no lease"), nil)
	if o.ok != 0 || len(o.fails) != 4 || o.fails[3] != codes.Unavailable || !o.whole {
		t.Errorf("a failed call of 4: %+v, want 4 Unavailable", o)
	}
	if o := batchOutcome(4, 0, errors.New("not a status"), nil); o.fails[0] != codes.Unknown {
		t.Errorf("a non-status error counts as %v, want Unknown", o.fails[0])
	}
}

func TestPackedUnwrapErrors(t *testing.T) {
	resp := &kv1.PackedUnwrapResponse{
		Plaintexts: [][]byte{{1}, nil, {3}, nil, nil, {6}},
		Errors: []*kv1.PackedItemError{
			{Index: 1, Error: &kv1.ItemError{Code: uint32(codes.NotFound)}},
			{Index: 3, Error: &kv1.ItemError{Code: uint32(codes.PermissionDenied)}},
			{Index: 3, Error: &kv1.ItemError{Code: uint32(codes.Aborted)}}, // repeated: skipped
			{Index: 9, Error: &kv1.ItemError{Code: uint32(codes.Aborted)}}, // no such item: skipped
		},
	}
	// Item 4 has neither a plaintext nor an entry: Internal.
	o := batchOutcome(6, 6, nil, packedUnwrapErrors(nil, resp))
	want := []codes.Code{codes.NotFound, codes.PermissionDenied, codes.Internal}
	if o.ok != 3 || !slices.Equal(o.fails, want) {
		t.Errorf("outcome %+v, want 3 ok and fails %v", o, want)
	}
}

func TestDescriptionNamesTheForm(t *testing.T) {
	for _, c := range []struct {
		op   Op
		form BatchForm
		want string
	}{
		{OpWrap, FormPacked, "wrap, batches of 8, packed (PackedWrap)"},
		{OpUnwrap, FormItems, "unwrap, batches of 8, items (BatchUnwrap)"},
		{OpRewrap, FormPacked, "rewrap, batches of 8, items (BatchRewrap)"},
		{OpMixed, FormPacked, "mixed, batches of 8, packed (PackedWrap, PackedUnwrap, PackedGenerateDataKey, BatchRewrap)"},
	} {
		cfg := DefaultConfig()
		cfg.Op, cfg.Batch, cfg.BatchForm = c.op, 8, c.form
		r := &Result{Config: RunConfig{Op: cfg.Op, Batch: cfg.Batch, BatchForm: string(cfg.form(cfg.Op)), Callers: 1, Load: "closed-loop"}}
		if got := r.Description(); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s in %s: %q, want it to start %q", c.op, c.form, got, c.want)
		}
	}
	unary := DefaultConfig()
	if f := unary.form(OpWrap); f != "" {
		t.Errorf("a unary run's form is %q, want none", f)
	}
}

func TestScheduled(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rate = 100 // every 10 ms
	start := time.Unix(0, 0)
	if n := scheduled(cfg, start, start.Add(time.Second), start.Add(3*time.Second)); n != 200 {
		t.Errorf("scheduled over 2 s at 100/s = %d, want 200", n)
	}
	cfg.Batch = 10 // 100 items/s in calls of 10: every 100 ms
	if n := scheduled(cfg, start, start.Add(50*time.Millisecond), start.Add(time.Second)); n != 9 {
		t.Errorf("scheduled calls = %d, want 9 (100 ms ... 900 ms)", n)
	}
}

func TestValidate(t *testing.T) {
	good := DefaultConfig()
	good.Tenant, good.Service = "acme", "payments"
	if err := good.Validate(); err != nil {
		t.Fatalf("default config with a key: %v", err)
	}
	for name, c := range map[string]func(c *Config){
		"Config.Op":           func(c *Config) { c.Op = "encrypt" },
		"Config.Batch":        func(c *Config) { c.Batch = 1025 },
		"Config.BatchForm":    func(c *Config) { c.BatchForm = "compact" },
		"Config.Callers":      func(c *Config) { c.Callers = 0 },
		"Config.Rate ":        func(c *Config) { c.Rate = -1 },
		"less than 1µs":       func(c *Config) { c.Rate = 2e6 },
		"Config.Duration":     func(c *Config) { c.Duration = 0 },
		"Config.Warmup":       func(c *Config) { c.Warmup = -time.Second },
		"Config.CallTimeout":  func(c *Config) { c.CallTimeout = 0 },
		"Config.ReadyTimeout": func(c *Config) { c.ReadyTimeout = 0 },
		"Config.Tenant":       func(c *Config) { c.Tenant = "Acme" },
		"Config.Service":      func(c *Config) { c.Service = "" },
	} {
		bad := good
		c(&bad)
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), strings.TrimSpace(name)) {
			t.Errorf("%s: Validate() = %v, want an error naming it", name, err)
		}
	}
}
