package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
)

// Result is what a run measured. It marshals to the JSON of `krypton bench -out`.
type Result struct {
	Config RunConfig `json:"config"`
	// Start is when the load started (warm-up included).
	Start time.Time `json:"start"`
	// MeasuredSeconds is the measured time: Config.DurationSeconds unless Interrupted.
	MeasuredSeconds float64 `json:"measured_seconds"`
	// Interrupted says the run was stopped before its end.
	Interrupted bool `json:"interrupted"`
	// Unsent (open loop only) counts the calls due in the measured time that were never sent,
	// because every caller was still busy when the run ended: a sign that the target rate was
	// not kept.
	Unsent int64 `json:"unsent_calls,omitempty"`
	// ProcessCPUSeconds is the CPU time (user and system, all cores) this process used in the
	// measured time: the load generator's, and the nodes' too when they run in the same process
	// (`krypton bench -spawn`). CPUMicrosPerOp divides it by the successful operations. Both are
	// 0 when not measured (an interrupted run, or a platform without getrusage).
	ProcessCPUSeconds float64 `json:"process_cpu_seconds,omitempty"`
	CPUMicrosPerOp    float64 `json:"process_cpu_us_per_op,omitempty"`
	// GatewayCPUSeconds and GatewayCPUMicrosPerOp are the same for the gateway's process, when
	// Config.GatewayCPU reads it (0 otherwise).
	GatewayCPUSeconds     float64 `json:"gateway_cpu_seconds,omitempty"`
	GatewayCPUMicrosPerOp float64 `json:"gateway_cpu_us_per_op,omitempty"`
	// GatewayBatches and GatewayBatchItems are the batches the gateway sent to the region in the
	// measured time and the requests they carried, when Config.GatewayBatches reads them.
	GatewayBatches    float64 `json:"gateway_batches,omitempty"`
	GatewayBatchItems float64 `json:"gateway_batch_items,omitempty"`
	// GatewayDelegated is the data keys the gateway wrapped itself, under delegated wrapping
	// keys, in the measured time (no region call).
	GatewayDelegated float64 `json:"gateway_delegated_data_keys,omitempty"`
	// ServerCPUSeconds and ServerCPUMicrosPerOp are the same for the nodes' server process, when
	// Config.ServerCPU reads it (`krypton bench -server-pid`; 0 otherwise).
	ServerCPUSeconds     float64 `json:"server_cpu_seconds,omitempty"`
	ServerCPUMicrosPerOp float64 `json:"server_cpu_us_per_op,omitempty"`
	// Total sums every operation; ByOp has one summary per operation of a mixed run.
	Total Summary   `json:"total"`
	ByOp  []Summary `json:"by_op,omitempty"`
	// Distribution is the latency of Total by percentile, as HdrHistogram's percentile
	// distribution (five ticks per halving of the remaining tail).
	Distribution []Bracket `json:"distribution"`
	// Timeline is one point per second of the measured time.
	Timeline []Point `json:"timeline"`

	hist  *hdrhistogram.Histogram // of Total
	hists map[Op]*hdrhistogram.Histogram
}

// Histogram is the latency histogram of Total, in microseconds (NewHistogram's form), for
// merging the results of several runs; do not modify it.
func (r *Result) Histogram() *hdrhistogram.Histogram { return r.hist }

// RunConfig is the configuration as the result shows it.
type RunConfig struct {
	Op                 Op       `json:"op"`
	Batch              int      `json:"batch"`
	BatchForm          string   `json:"batch_form,omitempty"` // batched runs: "packed" or "items"
	Callers            int      `json:"callers"`
	Rate               float64  `json:"rate,omitempty"`
	Load               string   `json:"load"`         // "closed-loop" or "open-loop"
	LatencyFrom        string   `json:"latency_from"` // "send" or "intended-send"
	DurationSeconds    float64  `json:"duration_seconds"`
	WarmupSeconds      float64  `json:"warmup_seconds"`
	CallTimeoutSeconds float64  `json:"call_timeout_seconds"`
	Tenant             string   `json:"tenant"`
	Service            string   `json:"service"`
	Keys               int      `json:"keys,omitempty"`     // > 1: calls spread over this many keys
	KeyDist            string   `json:"key_dist,omitempty"` // with Keys: zipf or uniform
	Targets            []string `json:"targets"`
}

// Summary is the figures of one operation, or of all.
type Summary struct {
	Op    Op    `json:"op"`
	Calls int64 `json:"calls"`
	// Ops counts operations (items), OK the ones that succeeded; they equal Calls unless batched.
	Ops int64 `json:"ops"`
	OK  int64 `json:"ok"`
	// Errors counts failed operations by gRPC code name.
	Errors         map[string]int64 `json:"errors"`
	OpsPerSecond   float64          `json:"ops_per_second"` // successful operations
	CallsPerSecond float64          `json:"calls_per_second"`
	Latency        Latency          `json:"latency"`
}

// Latency is a latency distribution's landmarks, in microseconds, of the calls answered (a
// failed call is counted in Errors, not here).
type Latency struct {
	Count  int64   `json:"count"`
	Min    int64   `json:"min_us"`
	Mean   float64 `json:"mean_us"`
	P50    int64   `json:"p50_us"`
	P90    int64   `json:"p90_us"`
	P99    int64   `json:"p99_us"`
	P999   int64   `json:"p99_9_us"`
	Max    int64   `json:"max_us"`
	StdDev float64 `json:"stddev_us"`
}

// Bracket is one step of a percentile distribution: Percentile % of the calls took at most
// Micros, and Count calls did.
type Bracket struct {
	Percentile float64 `json:"percentile"`
	Micros     int64   `json:"latency_us"`
	Count      int64   `json:"count"`
}

// LatencyOf reads the landmarks of a histogram in microseconds.
func LatencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	return Latency{
		Count:  h.TotalCount(),
		Min:    h.Min(),
		Mean:   h.Mean(),
		P50:    h.ValueAtPercentile(50),
		P90:    h.ValueAtPercentile(90),
		P99:    h.ValueAtPercentile(99),
		P999:   h.ValueAtPercentile(99.9),
		Max:    h.Max(),
		StdDev: h.StdDev(),
	}
}

// DistributionOf is h's percentile distribution, five ticks per halving of the tail: 0, 10, 20,
// ..., 50, 55, 60, ..., 75, 77.5, ... up to 100.
func DistributionOf(h *hdrhistogram.Histogram) []Bracket {
	if h.TotalCount() == 0 {
		return []Bracket{}
	}
	var out []Bracket
	for _, b := range h.CumulativeDistributionWithTicks(5) {
		out = append(out, Bracket{Percentile: b.Quantile, Micros: b.ValueAt, Count: b.Count})
	}
	return out
}

func newResult(cfg Config, targets []string, start time.Time, measured time.Duration, interrupted bool, rec *recorder) *Result {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r := &Result{
		Config: RunConfig{
			Op: cfg.Op, Batch: cfg.Batch, BatchForm: string(cfg.form(cfg.Op)), Callers: cfg.Callers, Rate: cfg.Rate,
			Load: "closed-loop", LatencyFrom: "send",
			DurationSeconds: cfg.Duration.Seconds(), WarmupSeconds: cfg.Warmup.Seconds(), CallTimeoutSeconds: cfg.CallTimeout.Seconds(),
			Tenant: cfg.Tenant, Service: cfg.Service, Targets: targets,
		},
		Start: start.UTC(), MeasuredSeconds: measured.Seconds(), Interrupted: interrupted,
		Timeline: append([]Point{}, rec.timeline...),
		hist:     NewHistogram(), hists: map[Op]*hdrhistogram.Histogram{},
	}
	if cfg.Keys > 1 {
		r.Config.Keys, r.Config.KeyDist = cfg.Keys, string(cfg.KeyDist)
		if r.Config.KeyDist == "" {
			r.Config.KeyDist = string(DistZipf)
		}
	}
	if cfg.Rate > 0 {
		r.Config.Load, r.Config.LatencyFrom = "open-loop", "intended-send"
	}
	total := &opStats{hist: r.hist, errors: map[codes.Code]int64{}}
	for _, op := range cfg.ops() {
		s := rec.byOp[op]
		r.hists[op] = s.hist
		total.merge(s)
		if cfg.Op == OpMixed {
			r.ByOp = append(r.ByOp, s.summary(op, measured))
		}
	}
	r.Total = total.summary(cfg.Op, measured)
	r.Distribution = DistributionOf(r.hist)
	if cfg.Rate > 0 && !interrupted {
		r.Unsent = max(scheduled(cfg, start, rec.measureFrom, rec.end)-total.calls, 0)
	}
	return r
}

// setCPU records the process's CPU time over the measured time.
func (r *Result) setCPU(used time.Duration) {
	r.ProcessCPUSeconds = used.Seconds()
	if r.Total.OK > 0 {
		r.CPUMicrosPerOp = float64(used.Microseconds()) / float64(r.Total.OK)
	}
}

// setGatewayCPU records the gateway process's CPU time over the measured time.
func (r *Result) setGatewayCPU(used time.Duration) {
	r.GatewayCPUSeconds = used.Seconds()
	if r.Total.OK > 0 {
		r.GatewayCPUMicrosPerOp = float64(used.Microseconds()) / float64(r.Total.OK)
	}
}

// setGatewayBatches records the gateway's batches over the measured time.
func (r *Result) setGatewayBatches(batches, items, delegated float64) {
	r.GatewayBatches, r.GatewayBatchItems, r.GatewayDelegated = batches, items, delegated
}

// setServerCPU records the server process's CPU time over the measured time.
func (r *Result) setServerCPU(used time.Duration) {
	r.ServerCPUSeconds = used.Seconds()
	if r.Total.OK > 0 {
		r.ServerCPUMicrosPerOp = float64(used.Microseconds()) / float64(r.Total.OK)
	}
}

// scheduled counts the open-loop calls due in [from, end): call i is due at start + i·interval.
func scheduled(cfg Config, start, from, end time.Time) int64 {
	iv := cfg.interval()
	first := (from.Sub(start) + iv - 1) / iv // the first i due at or after from
	last := (end.Sub(start) + iv - 1) / iv   // the first i due at or after end
	return int64(last - first)
}

func (s *opStats) merge(o *opStats) {
	s.hist.Merge(o.hist)
	s.calls += o.calls
	s.items += o.items
	s.ok += o.ok
	s.callErr += o.callErr
	for c, n := range o.errors {
		s.errors[c] += n
	}
}

func (s *opStats) summary(op Op, measured time.Duration) Summary {
	sum := Summary{Op: op, Calls: s.calls, Ops: s.items, OK: s.ok, Errors: map[string]int64{}, Latency: LatencyOf(s.hist)}
	for c, n := range s.errors {
		sum.Errors[c.String()] = n
	}
	if secs := measured.Seconds(); secs > 0 {
		sum.OpsPerSecond = float64(s.ok) / secs
		sum.CallsPerSecond = float64(s.calls) / secs
	}
	return sum
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Description is one line saying what was run.
func (r *Result) Description() string {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "%s", c.Op)
	if c.Batch > 0 {
		fmt.Fprintf(&b, ", batches of %d", c.Batch)
		if c.BatchForm != "" {
			fmt.Fprintf(&b, ", %s (%s)", c.BatchForm, batchRPCs(c.Op, BatchForm(c.BatchForm)))
		}
	} else {
		b.WriteString(", unary")
	}
	if c.Load == "open-loop" {
		fmt.Fprintf(&b, ", open loop at %g ops/s (at most %d in flight)", c.Rate, c.Callers)
	} else {
		fmt.Fprintf(&b, ", %d callers", c.Callers)
	}
	if c.Keys > 1 {
		fmt.Fprintf(&b, ", %d keys (%s)", c.Keys, c.KeyDist)
	}
	fmt.Fprintf(&b, ", %gs after %gs warm-up, %d node(s)", c.DurationSeconds, c.WarmupSeconds, len(c.Targets))
	return b.String()
}

// batchRPCs names the RPCs a batched run of op sends in form.
func batchRPCs(op Op, form BatchForm) string {
	prefix := "Batch"
	if form == FormPacked {
		prefix = "Packed"
	}
	switch op {
	case OpWrap:
		return prefix + "Wrap"
	case OpUnwrap:
		return prefix + "Unwrap"
	case OpDataKey:
		return prefix + "GenerateDataKey"
	case OpRewrap:
		return "BatchRewrap"
	}
	if form == FormPacked {
		return "PackedWrap, PackedUnwrap, PackedGenerateDataKey, BatchRewrap"
	}
	return "BatchWrap, BatchUnwrap, BatchGenerateDataKey, BatchRewrap"
}

// WriteTable writes the figures for people: one row per operation (and a total for a mixed
// run), latencies in milliseconds, then the errors by code and how latency was measured.
func (r *Result) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "krypton bench: %s\n", r.Description())
	fmt.Fprintf(&b, "targets: %s\n\n", strings.Join(r.Config.Targets, ", "))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := []string{"op", "ok ops", "ops/s"}
	if r.Config.Batch > 0 {
		header = append(header, "calls/s")
	}
	header = append(header, "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "")
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	rows := append(append([]Summary{}, r.ByOp...), r.Total)
	for _, s := range rows {
		name := string(s.Op)
		if s.Op == OpMixed {
			name = "all"
		}
		cells := []string{name, fmt.Sprint(s.OK), fmt.Sprintf("%.0f", s.OpsPerSecond)}
		if r.Config.Batch > 0 {
			cells = append(cells, fmt.Sprintf("%.0f", s.CallsPerSecond))
		}
		l := s.Latency
		cells = append(cells, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), fmt.Sprint(s.Ops-s.OK), "")
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nerrors by code: %s\n", errorList(r.Total.Errors))
	if r.ProcessCPUSeconds > 0 && r.MeasuredSeconds > 0 {
		fmt.Fprintf(&b, "process CPU: %.2f cores busy, %.2f µs per ok op (this process: the load generator, and the nodes with -spawn)\n",
			r.ProcessCPUSeconds/r.MeasuredSeconds, r.CPUMicrosPerOp)
	}
	if r.GatewayCPUSeconds > 0 && r.MeasuredSeconds > 0 {
		fmt.Fprintf(&b, "gateway CPU: %.2f cores busy, %.2f µs per ok op (the gateway's own process)\n",
			r.GatewayCPUSeconds/r.MeasuredSeconds, r.GatewayCPUMicrosPerOp)
	}
	if (r.GatewayBatches > 0 || r.GatewayDelegated > 0) && r.MeasuredSeconds > 0 {
		b.WriteString("gateway batches: ")
		if r.GatewayBatches > 0 {
			fmt.Fprintf(&b, "%.0f a second, %.1f requests each on average (region calls of the gateway)",
				r.GatewayBatches/r.MeasuredSeconds, r.GatewayBatchItems/r.GatewayBatches)
		} else {
			b.WriteString("none")
		}
		if r.GatewayDelegated > 0 {
			fmt.Fprintf(&b, "; %.0f data keys a second wrapped by the gateway itself (delegated wrapping keys)",
				r.GatewayDelegated/r.MeasuredSeconds)
		}
		b.WriteString("\n")
	}
	if r.ServerCPUSeconds > 0 && r.MeasuredSeconds > 0 {
		fmt.Fprintf(&b, "server CPU: %.2f cores busy, %.2f µs per ok op (the nodes' server process, -server-pid)\n",
			r.ServerCPUSeconds/r.MeasuredSeconds, r.ServerCPUMicrosPerOp)
	}
	if r.Config.Load == "open-loop" {
		b.WriteString("latency: from each call's intended send time (open loop; queueing behind slow calls counts)\n")
		if r.Unsent > 0 {
			fmt.Fprintf(&b, "unsent: %d calls due in the measured time were never sent: the target rate was not kept\n", r.Unsent)
		}
	} else {
		b.WriteString("latency: from send to answer (closed loop; each caller waits for its answer before its next call)\n")
	}
	if r.Interrupted {
		fmt.Fprintf(&b, "interrupted: figures cover the first %.1fs of the measured time\n", r.MeasuredSeconds)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ms shows microseconds as milliseconds with three decimals.
func ms(us int64) string { return fmt.Sprintf("%.3f", float64(us)/1000) }

func errorList(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s %d", c, errs[c]))
	}
	return strings.Join(parts, ", ")
}
