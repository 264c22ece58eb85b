// `krypton bench -elections`: how stable a region's leadership is on this machine, idle or beside
// CPU hogs (issue 16: an idle region on two starved cores went from term 2 to 61 in an hour).

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// electionBench are the flags of `krypton bench -elections`.
type electionBench struct {
	enabled bool
	hogs    int           // busy goroutines in a separate process beside the region
	probe   time.Duration // one wrap per node this often; 0: none
	hogFor  time.Duration // with -cpu-hog: this process is the hog child
	// inProcess runs the nodes in this process (as krypton dev) instead of one process each.
	inProcess bool
	raft      raftTuning
}

func (e *electionBench) declare(fs *flag.FlagSet) {
	fs.BoolVar(&e.enabled, "elections", false, "measure leadership stability instead of throughput: start a development region with production settings (-raft-* timings, a 5 s serving lease), leave it idle for -duration (with -hogs: beside CPU hogs) and report Raft term changes, leader changes and leader step-downs per hour, and the serving-lease lapses and refused probe wraps")
	fs.IntVar(&e.hogs, "hogs", 0, "with -elections: this many busy goroutines burn CPU in a separate process (krypton bench -cpu-hog) for the whole run; it is killed when the run ends and exits by itself when this process does")
	fs.DurationVar(&e.probe, "probe-interval", time.Second, "with -elections -in-process: one wrap on each node this often, to count refusals for a lapsed lease (0: none, a fully idle region)")
	fs.BoolVar(&e.inProcess, "in-process", false, "with -elections: run the three nodes in this process, as krypton dev does, with a governance node, a tenant and -probe-interval wraps; by default each node is its own krypton server process (this binary), as in production, and the figures come from their /metrics")
	fs.DurationVar(&e.hogFor, "cpu-hog", 0, "internal, what -hogs starts: burn -hogs cores for this long, or until stdin closes")
	e.raft.declare(fs)
}

// hog burns n cores until d has passed or stdin closes (the parent is gone, however it ended).
func (e *electionBench) hog(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.hogFor)
	defer cancel()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	var stop sync.WaitGroup
	for range max(e.hogs, 1) {
		stop.Add(1)
		go func() {
			defer stop.Done()
			x := uint64(1)
			for ctx.Err() == nil {
				for range 1 << 16 {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
			_ = x
		}()
	}
	stop.Wait()
	return nil
}

// startHogs starts the hog child; stop kills it and waits for it.
func (e *electionBench) startHogs(d time.Duration) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "bench", "-cpu-hog", d.String(), "-hogs", strconv.Itoa(e.hogs))
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(e.hogs))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}, nil
}

// silenceBuckets are the lower bounds of the follower silences counted (electionResult.Silences).
var silenceBuckets = []float64{0.5, 1, 2, 4}

// electionResult is what -elections reports (and writes with -out).
type electionResult struct {
	Duration          string            `json:"duration"`
	Processes         bool              `json:"node_processes"`
	Hogs              int               `json:"hogs"`
	Timings           map[string]string `json:"raft_timings"`
	LoadAvgMean       float64           `json:"loadavg1_mean"`
	LoadAvgMax        float64           `json:"loadavg1_max"`
	TermStart         uint64            `json:"term_start"`
	TermEnd           uint64            `json:"term_end"`
	TermChanges       uint64            `json:"term_changes"`
	LeaderChanges     int               `json:"leader_changes"`
	NoLeaderSeconds   float64           `json:"no_leader_seconds"`
	StepDowns         int               `json:"leader_step_downs"`
	LeaseLapses       int               `json:"lease_lapses"`
	NotServingSeconds float64           `json:"not_serving_node_seconds"`
	Probes            int               `json:"probes"`
	ProbesRefused     int               `json:"probes_refused_no_lease"`
	ProbesFailed      int               `json:"probes_failed_other"`
	// Silences counts followers' silences (no word from the leader) of at least 0.5, 1, 2 and 4 s.
	Silences         []int   `json:"follower_silences_over_0_5_1_2_4_s"`
	MaxSampleGap     float64 `json:"max_sample_gap_seconds"`
	LogEntries       uint64  `json:"log_entries"`
	CPUSeconds       float64 `json:"process_cpu_seconds"`
	TermsPerHour     float64 `json:"term_changes_per_hour"`
	LeadersPerHour   float64 `json:"leader_changes_per_hour"`
	StepDownsPerHour float64 `json:"step_downs_per_hour"`
}

// loadAvg reads the one-minute load average (Linux); false elsewhere.
func loadAvg() (float64, bool) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return v, err == nil
}

// runElections starts the region, watches it for o.cfg.Duration and prints the result.
func (o *benchOptions) runElections(ctx context.Context, s *streams) error {
	e := &o.el
	dur := o.cfg.Duration
	res := electionResult{Duration: dur.String(), Hogs: e.hogs, Timings: map[string]string{}, Processes: !e.inProcess}
	// The timings as the nodes get them: cluster.DefaultConfig with the -raft-* flags applied.
	c := cluster.DefaultConfig()
	e.raft.apply(&c)
	res.Timings["heartbeat"] = c.HeartbeatTimeout.String()
	res.Timings["election"] = c.ElectionTimeout.String()
	res.Timings["leader_lease"] = c.LeaderLeaseTimeout.String()
	res.Timings["commit"] = c.CommitTimeout.String()
	var (
		w       watchedRegion
		clients []kv1.WrapServiceClient
	)
	if e.inProcess {
		d, err := startDev(ctx, &devOptions{logLevel: "warn", defaultSettings: true, tune: e.raft.apply}, s.err)
		if err != nil {
			return err
		}
		defer d.close()
		w = &devWatch{d: d}
		if e.probe > 0 {
			for i := range d.nodes {
				conn, err := d.dial(i, d.service[0], d.service[1])
				if err != nil {
					return err
				}
				clients = append(clients, kv1.NewWrapServiceClient(conn))
			}
		}
	} else {
		p, err := startProcRegion(ctx, &e.raft, s.err)
		if p != nil {
			defer p.close()
		}
		if err != nil {
			return err
		}
		w = p
	}
	if e.hogs > 0 {
		stop, err := e.startHogs(dur + 10*time.Second)
		if err != nil {
			return fmt.Errorf("bench: starting the CPU hogs: %w", err)
		}
		defer stop()
	}
	fmt.Fprintf(s.err, "krypton: watching the idle region for %s (hogs: %d, GOMAXPROCS %d, timings %v)\n", dur, e.hogs, runtime.GOMAXPROCS(0), res.Timings)

	logStart := make([]int64, len(w.logs()))
	for i, l := range w.logs() {
		logStart[i] = logSize(l)
	}
	n := w.nodes()
	const tick = 100 * time.Millisecond
	var (
		mu                 sync.Mutex
		serving            = make([]bool, n)
		leader             = -2
		loadSum            float64
		loadN              int
		probeWG            sync.WaitGroup
		lastLoad, lastProb time.Time
		silence            = make([]float64, n)
		lastSample         = time.Now()
	)
	res.Silences = make([]int, len(silenceBuckets))
	for i := range serving {
		serving[i] = true
	}
	maxOf := func(name string) float64 {
		var t float64
		for i := range n {
			if v, ok := w.metric(i, name); ok && v > t {
				t = v
			}
		}
		return t
	}
	w.refresh()
	res.TermStart = uint64(maxOf("krypton_cluster_raft_term"))
	indexStart := maxOf("krypton_cluster_raft_commit_index")
	cpuStart := w.cpu()
	ref := &kv1.KeyRef{Tenant: "demo", Service: "app"}
	plain := bytes.Repeat([]byte{5}, 32)
	start := time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	for time.Since(start) < dur {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		w.refresh()
		dt := time.Since(lastSample).Seconds()
		lastSample = time.Now()
		res.MaxSampleGap = max(res.MaxSampleGap, dt)
		now := -1
		for i := range n {
			if v, _ := w.metric(i, "krypton_cluster_raft_is_leader"); v == 1 {
				now = i
			}
			// A follower's silence: how long since it last heard from the leader, kept at its
			// peak until it hears again, then counted by length.
			if v, _ := w.metric(i, "krypton_cluster_raft_last_contact_seconds"); v > silence[i] {
				silence[i] = v
			} else if v < 0.25 && silence[i] > 0 {
				for b, limit := range silenceBuckets {
					if silence[i] >= limit {
						res.Silences[b]++
					}
				}
				silence[i] = 0
			}
			v, _ := w.metric(i, "krypton_lease_serving")
			if on := v == 1; on != serving[i] {
				if !on {
					res.LeaseLapses++
				}
				serving[i] = on
			}
			if !serving[i] {
				res.NotServingSeconds += dt
			}
		}
		if now < 0 {
			res.NoLeaderSeconds += dt
		} else if now != leader {
			if leader != -2 {
				res.LeaderChanges++
			}
			leader = now
		}
		if time.Since(lastLoad) >= 5*time.Second {
			lastLoad = time.Now()
			if v, ok := loadAvg(); ok {
				loadSum += v
				loadN++
				res.LoadAvgMax = max(res.LoadAvgMax, v)
			}
		}
		if e.probe > 0 && time.Since(lastProb) >= e.probe {
			lastProb = time.Now()
			for _, c := range clients {
				probeWG.Add(1)
				go func() {
					defer probeWG.Done()
					pctx, cancel := context.WithTimeout(ctx, max(e.probe, time.Second))
					defer cancel()
					_, err := c.Wrap(pctx, &kv1.WrapRequest{Key: ref, Plaintext: plain})
					mu.Lock()
					defer mu.Unlock()
					res.Probes++
					switch {
					case err == nil:
					case status.Code(err) == codes.Unavailable:
						res.ProbesRefused++
					default:
						res.ProbesFailed++
					}
				}()
			}
		}
	}
	probeWG.Wait()
	w.refresh()
	res.TermEnd = uint64(maxOf("krypton_cluster_raft_term"))
	res.TermChanges = res.TermEnd - res.TermStart
	res.LogEntries = uint64(maxOf("krypton_cluster_raft_commit_index") - indexStart)
	res.CPUSeconds = w.cpu() - cpuStart
	for i, l := range w.logs() {
		res.StepDowns += countLines(l, logStart[i], "failed to contact quorum of nodes, stepping down")
	}
	if loadN > 0 {
		res.LoadAvgMean = loadSum / float64(loadN)
	}
	h := dur.Hours()
	res.TermsPerHour = float64(res.TermChanges) / h
	res.LeadersPerHour = float64(res.LeaderChanges) / h
	res.StepDownsPerHour = float64(res.StepDowns) / h
	mu.Lock()
	defer mu.Unlock()
	how := "one process per node"
	if e.inProcess {
		how = "all nodes in this process"
	}
	fmt.Fprintf(s.out, "duration %s, %s, hogs %d, load average (1 min) mean %.1f max %.1f, raft timings %v\n",
		dur, how, e.hogs, res.LoadAvgMean, res.LoadAvgMax, res.Timings)
	fmt.Fprintf(s.out, "term %d -> %d: %d term changes (%.1f/h), %d leader changes (%.1f/h), %d step-downs for lost quorum contact (%.1f/h), %.1f s without a leader\n",
		res.TermStart, res.TermEnd, res.TermChanges, res.TermsPerHour, res.LeaderChanges, res.LeadersPerHour, res.StepDowns, res.StepDownsPerHour, res.NoLeaderSeconds)
	fmt.Fprintf(s.out, "raft log: %d entries committed; CPU of the nodes' processes %.1f s (%.0f %% of one core)\n",
		res.LogEntries, res.CPUSeconds, 100*res.CPUSeconds/dur.Seconds())
	fmt.Fprintf(s.out, "follower silences (no word from the leader) of >= 0.5 s, 1 s, 2 s, 4 s: %v; longest gap between two samples (this process not running) %.2f s\n",
		res.Silences, res.MaxSampleGap)
	fmt.Fprintf(s.out, "serving leases: %d lapses, %.1f node-seconds not serving; probe wraps: %d, %d refused (no lease), %d failed otherwise\n",
		res.LeaseLapses, res.NotServingSeconds, res.Probes, res.ProbesRefused, res.ProbesFailed)
	if o.out != "" {
		if err := writeFileAtomic(o.out, true, func(f *os.File) error {
			enc := json.NewEncoder(f)
			enc.SetIndent("", "  ")
			return enc.Encode(res)
		}); err != nil {
			return fmt.Errorf("-out: %w", err)
		}
		fmt.Fprintf(s.out, "result: %s\n", o.out)
	}
	return nil
}

func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// countLines counts the lines of path after offset that contain what (Raft logs its step-downs;
// there is no metric for them).
func countLines(path string, offset int64, what string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0
	}
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if strings.Contains(sc.Text(), what) {
			n++
		}
	}
	return n
}
