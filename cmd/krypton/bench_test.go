package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kryptonkms/krypton/internal/leaktest"
)

// TestBenchSpawn runs `krypton bench -spawn 3` in this process, as a person would: a real
// three-node region over gRPC with mutual TLS. It checks what the run produced — counts and
// structure, never speed — and that nothing is left running.
func TestBenchSpawn(t *testing.T) {
	ignore := goleak.IgnoreCurrent() // goroutines already running are not this test's
	dir := t.TempDir()
	out, plot := filepath.Join(dir, "r.json"), filepath.Join(dir, "p.svg")
	var stdout, stderr bytes.Buffer
	err := dispatch(context.Background(), rootCommand(), []string{"bench", "-spawn", "3",
		"-duration", "2s", "-warmup", "500ms", "-callers", "4", "-op", "mixed", "-out", out, "-plot", plot},
		&streams{out: &stdout, err: &stderr})
	if err != nil {
		t.Fatalf("krypton bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}

	var res struct {
		Config struct {
			Op      string   `json:"op"`
			Callers int      `json:"callers"`
			Load    string   `json:"load"`
			Targets []string `json:"targets"`
		} `json:"config"`
		Total struct {
			Calls   int64            `json:"calls"`
			OK      int64            `json:"ok"`
			Errors  map[string]int64 `json:"errors"`
			Latency struct {
				Count int64 `json:"count"`
				P50   int64 `json:"p50_us"`
				P99   int64 `json:"p99_us"`
				Max   int64 `json:"max_us"`
			} `json:"latency"`
		} `json:"total"`
		ByOp []struct {
			Op string `json:"op"`
			OK int64  `json:"ok"`
		} `json:"by_op"`
		Distribution []struct {
			Percentile float64 `json:"percentile"`
		} `json:"distribution"`
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("-out is not the result JSON: %v\n%s", err, b)
	}
	if res.Config.Op != "mixed" || res.Config.Callers != 4 || res.Config.Load != "closed-loop" || len(res.Config.Targets) != 3 {
		t.Errorf("config = %+v, want mixed, 4 callers, closed loop, 3 nodes", res.Config)
	}
	if res.Total.OK <= 0 || res.Total.Latency.Count <= 0 {
		t.Errorf("total: %d successful operations, %d timed calls; want some", res.Total.OK, res.Total.Latency.Count)
	}
	if l := res.Total.Latency; !(0 < l.P50 && l.P50 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("latency landmarks out of order: %+v", l)
	}
	var ops []string
	for _, s := range res.ByOp {
		ops = append(ops, s.Op)
		if s.OK <= 0 {
			t.Errorf("%s: no successful operation", s.Op)
		}
	}
	if strings.Join(ops, ",") != "wrap,unwrap,datakey,rewrap" {
		t.Errorf("operations %v, want wrap, unwrap, datakey, rewrap", ops)
	}
	if n := len(res.Distribution); n == 0 || res.Distribution[n-1].Percentile != 100 {
		t.Errorf("distribution of %d brackets does not end at 100%%", n)
	}
	svg, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("-plot %s is not an SVG", plot)
	}
	for _, want := range []string{"p50 ms", "p99.9 ms", "unwrap", "errors by code:", "result: " + out, "plot: " + plot} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "measuring") || !strings.Contains(stderr.String(), "ops/s") {
		t.Errorf("no progress line on stderr:\n%s", stderr.String())
	}

	if err := leaktest.Check(10*time.Second, ignore); err != nil {
		t.Fatalf("goroutines left behind by krypton bench: %v", err)
	}
}

// TestBenchElections runs `krypton bench -elections -in-process` for a few seconds: a real
// three-node region watched through its metrics. It checks what the run reports — a term, the
// timings the nodes got, probe wraps served — never how stable the region was.
func TestBenchElections(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	out := filepath.Join(t.TempDir(), "e.json")
	var stdout, stderr bytes.Buffer
	err := dispatch(context.Background(), rootCommand(), []string{"bench", "-elections", "-in-process",
		"-duration", "3s", "-probe-interval", "500ms", "-raft-heartbeat-timeout", "2s", "-raft-election-timeout", "3s", "-out", out},
		&streams{out: &stdout, err: &stderr})
	if err != nil {
		t.Fatalf("krypton bench -elections: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var res struct {
		Processes bool              `json:"node_processes"`
		Timings   map[string]string `json:"raft_timings"`
		TermStart uint64            `json:"term_start"`
		TermEnd   uint64            `json:"term_end"`
		Probes    int               `json:"probes"`
		Silences  []int             `json:"follower_silences_over_0_5_1_2_4_s"`
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("-out is not the result JSON: %v\n%s", err, b)
	}
	if res.Processes || res.TermStart == 0 || res.TermEnd < res.TermStart || res.Probes == 0 || len(res.Silences) != 4 {
		t.Errorf("result %+v: want in-process nodes, a term, probes and four silence counts", res)
	}
	// The -raft-* timings are the ones reported.
	if res.Timings["heartbeat"] != "2s" || res.Timings["election"] != "3s" || res.Timings["leader_lease"] != "1s" {
		t.Errorf("timings %v: want the 2 s heartbeat and 3 s election given, and the default 1 s leader lease", res.Timings)
	}
	for _, want := range []string{"term changes", "step-downs for lost quorum contact", "serving leases:", "result: " + out} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	if err := leaktest.Check(10*time.Second, ignore); err != nil {
		t.Fatalf("goroutines left behind by krypton bench -elections: %v", err)
	}
}

// TestBenchSpawnGatewayFramed runs `krypton bench -spawn 3 -spawn-gateway -gateway-front framed`
// for a second: data keys through a real gateway's Unix socket in the framed protocol, with no
// error, and the gateway's batches reported.
func TestBenchSpawnGatewayFramed(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := dispatch(context.Background(), rootCommand(), []string{"bench", "-spawn", "3", "-spawn-gateway",
		"-gateway-front", "framed", "-op", "datakey", "-duration", "1s", "-warmup", "300ms", "-callers", "8", "-quiet"},
		&streams{out: &stdout, err: &stderr})
	if err != nil {
		t.Fatalf("krypton bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"datakey", "errors by code: none", "framed:", "gateway batches: "} {
		if !strings.Contains(stdout.String()+stderr.String(), want) {
			t.Errorf("output lacks %q:\nstdout:\n%s\nstderr:\n%s", want, stdout.String(), stderr.String())
		}
	}
}

// TestBenchServerPIDFlag: -server-pid is for running nodes; with -spawn or a gateway it is refused
// before anything starts, naming what to use instead.
func TestBenchServerPIDFlag(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "-spawn", "3", "-server-pid", "1"},
		{"bench", "-gateway", "127.0.0.1:1", "-key", "a/b", "-op", "datakey", "-server-pid", "1"},
	} {
		var stdout, stderr bytes.Buffer
		err := dispatch(context.Background(), rootCommand(), args, &streams{out: &stdout, err: &stderr})
		if err == nil || !strings.Contains(err.Error(), "-server-pid is for running nodes") {
			t.Errorf("%v: %v, want a refusal naming -server-pid", args, err)
		}
	}
}
