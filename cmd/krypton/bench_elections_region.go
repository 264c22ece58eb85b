package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kryptonkms/krypton/internal/pki"
)

// watchedRegion is a region `krypton bench -elections` watches through the metrics its nodes
// export (cluster/metrics.go, region/metrics.go).
type watchedRegion interface {
	nodes() int
	// refresh reads every node's metrics; metric then answers from that reading.
	refresh()
	// metric is one unlabelled gauge or counter of node i; false if the node did not answer.
	metric(i int, name string) (float64, bool)
	// cpu is the CPU seconds the nodes' processes have used.
	cpu() float64
	// logs are the node logs, where Raft's step-downs are counted.
	logs() []string
}

// values flattens unlabelled gauges and counters.
func values(mfs []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, mf := range mfs {
		if len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			out[mf.GetName()] = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			out[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// devWatch is the in-process development region (krypton dev), read from the nodes' registries.
type devWatch struct {
	d    *devRegion
	snap []map[string]float64
}

func (w *devWatch) nodes() int { return len(w.d.nodes) }

func (w *devWatch) refresh() {
	w.snap = make([]map[string]float64, len(w.d.nodes))
	for i, n := range w.d.nodes {
		if mfs, err := n.Registry().Gather(); err == nil {
			w.snap[i] = values(mfs)
		}
	}
}

func (w *devWatch) metric(i int, name string) (float64, bool) {
	v, ok := w.snap[i][name]
	return v, ok
}

// cpu: the nodes share this process, whose CPU every registry reports.
func (w *devWatch) cpu() float64 { v, _ := w.metric(0, "process_cpu_seconds_total"); return v }

func (w *devWatch) logs() []string { return []string{w.d.logPath} }

// procRegion is a three-node region of `krypton server` processes (this binary) on loopback, as
// in production but for the addresses: no governance, no tenants, the default region settings.
type procRegion struct {
	dir     string
	cmds    []*exec.Cmd
	httpURL []string
	logPath []string
	snap    []map[string]float64
	client  *http.Client
}

// startProcRegion starts the region and waits until every node serves; the caller closes the
// returned region (which stops the processes and removes the directory) even on an error.
func startProcRegion(ctx context.Context, t *raftTuning, log io.Writer) (*procRegion, error) {
	dir, err := os.MkdirTemp("", "krypton-elections-")
	if err != nil {
		return nil, err
	}
	p := &procRegion{dir: dir, client: &http.Client{Timeout: 5 * time.Second}}
	self, err := os.Executable()
	if err != nil {
		return p, err
	}
	ca, err := pki.NewCA("krypton bench -elections CA", 0)
	if err != nil {
		return p, err
	}
	caPath := filepath.Join(dir, "ca.pem")
	if err := ca.WriteFiles(caPath, filepath.Join(dir, "ca-key.pem")); err != nil {
		return p, err
	}
	// `krypton server` takes the gossip key from a file only (never argv).
	key := make([]byte, 32)
	rand.Read(key)
	keyPath := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(keyPath, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return p, err
	}
	const n = devNodes
	addrs := make([][4]string, n) // api, raft, gossip, http
	for i := range n {
		for k := range 4 {
			if addrs[i][k], err = devAddr(0, i, k == 2); err != nil {
				return p, err
			}
		}
	}
	for i := range n {
		id := "node-" + strconv.Itoa(i+1)
		cert, err := ca.IssueNode(id, pki.NodeOptions{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Region: "bench"})
		if err != nil {
			return p, err
		}
		certPath, certKey := filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")
		if err := cert.WriteFiles(certPath, certKey); err != nil {
			return p, err
		}
		var join []string
		for j := range n {
			if j != i {
				join = append(join, addrs[j][2])
			}
		}
		argv := []string{"server", "-node-id", id, "-region", "bench", "-data-dir", filepath.Join(dir, id),
			"-api-addr", addrs[i][0], "-raft-addr", addrs[i][1], "-gossip-addr", addrs[i][2], "-http-addr", addrs[i][3],
			"-bootstrap-expect", strconv.Itoa(n), "-join", strings.Join(join, ","),
			"-gossip-key-file", keyPath, "-ca-cert", caPath, "-cert", certPath, "-key", certKey, "-log-level", "warn"}
		for _, f := range []struct {
			name string
			v    time.Duration
		}{{"raft-heartbeat-timeout", t.heartbeat}, {"raft-election-timeout", t.election}, {"raft-leader-lease-timeout", t.leaderLease}} {
			if f.v > 0 {
				argv = append(argv, "-"+f.name, f.v.String())
			}
		}
		logPath := filepath.Join(dir, id+".log")
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return p, err
		}
		cmd := exec.Command(self, argv...)
		cmd.Stdout, cmd.Stderr = logf, logf
		err = cmd.Start()
		logf.Close()
		if err != nil {
			return p, fmt.Errorf("bench: starting %s: %w", id, err)
		}
		p.cmds = append(p.cmds, cmd)
		p.logPath = append(p.logPath, logPath)
		p.httpURL = append(p.httpURL, "http://"+addrs[i][3]+"/metrics")
	}
	fmt.Fprintf(log, "krypton: %d krypton server processes in %s (logs there)\n", n, dir)
	err = poll(ctx, 60*time.Second, "every node to serve", func() bool {
		p.refresh()
		for i := range n {
			if v, ok := p.metric(i, "krypton_lease_serving"); !ok || v != 1 {
				return false
			}
		}
		return true
	})
	return p, err
}

func (p *procRegion) nodes() int { return len(p.httpURL) }

func (p *procRegion) refresh() {
	p.snap = make([]map[string]float64, len(p.httpURL))
	for i, u := range p.httpURL {
		resp, err := p.client.Get(u)
		if err != nil {
			continue
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			continue
		}
		list := make([]*dto.MetricFamily, 0, len(mfs))
		for _, mf := range mfs {
			list = append(list, mf)
		}
		p.snap[i] = values(list)
	}
}

func (p *procRegion) metric(i int, name string) (float64, bool) {
	v, ok := p.snap[i][name]
	return v, ok
}

func (p *procRegion) cpu() float64 {
	var sum float64
	for i := range p.httpURL {
		v, _ := p.metric(i, "process_cpu_seconds_total")
		sum += v
	}
	return sum
}

func (p *procRegion) logs() []string { return p.logPath }

// close stops the nodes (SIGKILL: nothing of theirs is kept) and removes the directory.
func (p *procRegion) close() {
	for _, c := range p.cmds {
		c.Process.Kill()
		c.Wait()
	}
	os.RemoveAll(p.dir)
}
