package jepsen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Verdict is one checker's result.
type Verdict struct {
	Checker string `json:"checker"`
	// Result is "ok", "fail", "unknown" (the linearizability search ran out of time) or "warn"
	// (an anomaly outside the safety promise; the run still passes).
	Result   string   `json:"result"`
	Detail   string   `json:"detail,omitempty"`
	Problems []string `json:"problems,omitempty"` // at most maxProblems
}

const maxProblems = 20

func (v *Verdict) problem(format string, args ...any) {
	v.Result = Fail
	if len(v.Problems) < maxProblems {
		v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
	}
}

func newVerdict(name string) *Verdict { return &Verdict{Checker: name, Result: OK} }

// keyState is the sequential specification of one service key, for porcupine: the highest
// version known to exist, which versions are revoked, and whether the whole service is.
type keyState struct {
	cur        uint32
	revoked    uint64 // bit v-1 set: version v revoked
	svcRevoked bool
}

func (s keyState) usable(v uint32) bool {
	return !s.svcRevoked && v >= 1 && v <= 64 && s.revoked&(1<<(v-1)) == 0
}

// keyModel is checked against the acknowledged operations only. Failed operations changed
// nothing; indeterminate writes are left out of the history rather than given an open-ended
// return, which made the search exponential in their number. Leaving them out is sound (it can
// only hide an anomaly, never invent one): a version an indeterminate rotation created is taken
// as existing when an acknowledged operation first reports it, and an indeterminate revocation
// constrains nothing.
//
// What the model insists on is the revocation fence: a revocation is linearizable, so once
// acknowledged no wrap or unwrap that begins later may use the version. A wrap or unwrap may use
// any version not revoked, not only the current one: a follower serves from its applied state,
// which may not yet hold the latest rotation; the region promises the fence, not linearizable
// rotation. RotateKey reports the key as it is when the response is built (see DESIGN.md,
// "Findings"), so its version is a lower bound on later ones rather than the version it made.
var keyModel = porcupine.Model{
	Init: func() any { return keyState{} },
	Step: func(st, in, out any) (bool, any) {
		s, op := st.(keyState), in.(Op)
		switch op.Type {
		case OpCreate:
			if s.cur != 0 {
				return false, s
			}
			s.cur = 1
			return true, s
		case OpRotate:
			if s.svcRevoked || op.Version <= s.cur {
				return false, s
			}
			s.cur++
			return true, s
		case OpRevoke:
			if op.Arg == 0 {
				s.svcRevoked = true
			} else {
				s.revoked |= 1 << (op.Arg - 1)
				s.cur = max(s.cur, op.Arg)
			}
			return true, s
		case OpWrap, OpUnwrap:
			if !s.usable(op.Version) {
				return false, s
			}
			s.cur = max(s.cur, op.Version)
			return true, s
		}
		return false, s
	},
	DescribeOperation: func(in, out any) string {
		op := in.(Op)
		s := fmt.Sprintf("%s %s@%s", op.Type, op.Key, op.Node)
		if op.Arg != 0 {
			s += fmt.Sprintf(" arg=%d", op.Arg)
		}
		s += " -> " + op.Outcome
		if op.Version != 0 {
			s += fmt.Sprintf(" v%d", op.Version)
		}
		return s
	},
	DescribeState: func(st any) string {
		s := st.(keyState)
		if s.cur == 0 {
			return "absent"
		}
		var rv []string
		for v := uint32(1); v <= s.cur && v <= 64; v++ {
			if s.revoked&(1<<(v-1)) != 0 {
				rv = append(rv, fmt.Sprint(v))
			}
		}
		out := fmt.Sprintf("v1..v%d revoked{%s}", s.cur, strings.Join(rv, ","))
		if s.svcRevoked {
			out += " SERVICE REVOKED"
		}
		return out
	},
}

// porcupineHistory keeps the acknowledged operations (see keyModel).
func porcupineHistory(ops []Op) ([]porcupine.Operation, int) {
	var out []porcupine.Operation
	keys := map[string]bool{}
	for _, op := range ops {
		if op.Outcome != OK {
			continue
		}
		keys[op.Key] = true
		out = append(out, porcupine.Operation{ClientId: op.Process, Input: op, Call: op.Invoke, Return: op.Complete})
	}
	return out, len(keys)
}

// checkLinearizable checks each key's history with porcupine.
func checkLinearizable(ops []Op, timeout time.Duration) (*Verdict, porcupine.Model, porcupine.LinearizationInfo) {
	v := newVerdict("linearizable")
	model := keyModel
	model.Partition = func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, o := range history {
			k := o.Input.(Op).Key
			if _, ok := by[k]; !ok {
				order = append(order, k)
			}
			by[k] = append(by[k], o)
		}
		var parts [][]porcupine.Operation
		for _, k := range order {
			parts = append(parts, by[k])
		}
		return parts
	}
	hist, nkeys := porcupineHistory(ops)
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, hist, timeout)
	v.Detail = fmt.Sprintf("%d operations on %d keys checked in %s", len(hist), nkeys, time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Illegal:
		v.problem("some key's history is not linearizable; see linearizability.html")
	case porcupine.Unknown:
		v.Result = "unknown"
		v.Detail += " (timed out)"
	}
	return v, model, info
}

// checkRevocationFence: no operation that began after a revocation was acknowledged used a
// revoked version successfully, on any node.
func checkRevocationFence(ops []Op) *Verdict {
	v := newVerdict("revocation-fence")
	type ack struct {
		at      int64
		version uint32 // 0: the whole service
		id      int
	}
	acks := map[string][]ack{}
	for _, op := range ops {
		if op.Type == OpRevoke && op.Outcome == OK {
			acks[op.Key] = append(acks[op.Key], ack{op.Complete, op.Arg, op.ID})
		}
	}
	n := 0
	for _, op := range ops {
		if (op.Type != OpWrap && op.Type != OpUnwrap) || op.Outcome != OK {
			continue
		}
		for _, a := range acks[op.Key] {
			if op.Invoke > a.at && (a.version == 0 || a.version == op.Version) {
				n++
				v.problem("op %d: %s of %s v%d on %s succeeded %s after revocation %d was acknowledged",
					op.ID, op.Type, op.Key, op.Version, op.Node, time.Duration(op.Invoke-a.at).Round(time.Millisecond), a.id)
			}
		}
	}
	checked := 0
	for _, a := range acks {
		checked += len(a)
	}
	v.Detail = fmt.Sprintf("%d acknowledged revocations", checked)
	if n > 0 {
		v.Detail += fmt.Sprintf("; %d uses of revoked keys after the acknowledgement", n)
	}
	return v
}

// checkPlaintexts: every acknowledged unwrap returned the plaintext that was wrapped.
func checkPlaintexts(ops []Op) *Verdict {
	v := newVerdict("unwrap-plaintext")
	for _, op := range ops {
		if op.Type == OpUnwrap && op.Outcome == OK && op.Error != "" {
			v.problem("op %d: unwrap of wrap %d on %s: %s", op.ID, op.WrapOf, op.Node, op.Error)
		}
		if op.Type == OpUnwrap && op.Outcome == OK && op.Arg != 0 && op.Version != op.Arg {
			v.problem("op %d: unwrap of a v%d blob reported v%d", op.ID, op.Arg, op.Version)
		}
	}
	return v
}

// checkVersions: acknowledged rotations of a key report versions increasing in real time (a
// rotation that began after another was acknowledged reports a higher version). Two concurrent
// rotations may report the same version, as RotateKey reports the key's current version when it
// answers; the detail counts them.
func checkVersions(ops []Op) *Verdict {
	v := newVerdict("versions-increase")
	by := map[string][]Op{}
	for _, op := range ops {
		if op.Type == OpRotate && op.Outcome == OK {
			by[op.Key] = append(by[op.Key], op)
		}
	}
	same := 0
	for k, rs := range by {
		seen := map[uint32]bool{}
		for _, r := range rs {
			if seen[r.Version] {
				same++
			}
			seen[r.Version] = true
		}
		sort.Slice(rs, func(i, j int) bool { return rs[i].Complete < rs[j].Complete })
		for i := range rs {
			for j := i + 1; j < len(rs); j++ {
				if rs[j].Invoke > rs[i].Complete && rs[j].Version <= rs[i].Version {
					v.problem("%s: rotation %d began after rotation %d returned v%d, yet returned v%d", k, rs[j].ID, rs[i].ID, rs[i].Version, rs[j].Version)
				}
			}
		}
	}
	v.Detail = fmt.Sprintf("%d keys; %d acknowledged rotations reported a version another had reported", len(by), same)
	return v
}

// checkThroughput: the cluster did work before the first fault, so that a dead cluster cannot
// pass by failing everything.
func checkThroughput(ops []Op, before int64, minRate float64) *Verdict {
	v := newVerdict("throughput")
	n := 0
	for _, op := range ops {
		if op.Outcome == OK && op.Complete <= before {
			n++
		}
	}
	secs := float64(before) / 1e9
	rate := float64(n) / max(secs, 0.001)
	v.Detail = fmt.Sprintf("%d ok operations in the %.1f s before the first fault (%.0f/s; minimum %.0f/s)", n, secs, rate, minRate)
	if rate < minRate {
		v.problem("%.1f ok operations a second before any fault, below the minimum of %.0f", rate, minRate)
	}
	return v
}

// LoadHistory reads a run's history.jsonl.
func LoadHistory(path string) ([]Op, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ops []Op
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var op Op
		if err := json.Unmarshal(line, &op); err != nil {
			return nil, fmt.Errorf("jepsen: %s: %w", path, err)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// CheckHistory runs the checkers that need only the history (linearizability, the revocation
// fence, plaintexts, versions) on a saved run's operations, to re-check a run after a change to
// a checker.
func CheckHistory(ops []Op, timeout time.Duration) []*Verdict {
	clients := 0
	for _, op := range ops {
		if op.Process < probeProcess {
			clients = max(clients, op.Process+1)
		}
	}
	lin, _, _ := checkLinearizable(remapClients(ops, clients), timeout)
	return []*Verdict{lin, checkRevocationFence(ops), checkPlaintexts(ops), checkVersions(ops), checkCreateThenUse(ops)}
}

// Warn is a verdict that reports an anomaly outside the region's safety promise without failing
// the run.
const Warn = "warn"

// checkCreateThenUse: a wrap that began after the key's creation was acknowledged should not be
// told the key does not exist (region/wrapsvc.go catches up with the leader on NotFound so that
// "create, then wrap anywhere" works). A warning, not a failure: a node cut off from the leader
// cannot catch up, and then answers NotFound rather than Unavailable.
func checkCreateThenUse(ops []Op) *Verdict {
	v := newVerdict("create-then-wrap")
	created := map[string]int64{}
	for _, op := range ops {
		if op.Type == OpCreate && op.Outcome == OK {
			created[op.Key] = op.Complete
		}
	}
	n := 0
	for _, op := range ops {
		at, ok := created[op.Key]
		if op.Type != OpWrap || op.Code != "NotFound" || !ok || op.Invoke <= at {
			continue
		}
		n++
		if len(v.Problems) < maxProblems {
			v.Problems = append(v.Problems, fmt.Sprintf("op %d: wrap of %s on %s began %s after its creation was acknowledged and failed NotFound (%s)",
				op.ID, op.Key, op.Node, time.Duration(op.Invoke-at).Round(time.Millisecond), op.Error))
		}
	}
	if n > 0 {
		v.Result = Warn
		v.Detail = fmt.Sprintf("%d wraps of acknowledged keys answered NotFound", n)
	}
	return v
}

// checkKillSwitch measures the customer's kill switch: for each time a tenant's anchor was
// disabled (anchor-dead; anchor-hung, while another tenant's anchor hangs), how long after it
// operations on the tenant's keys still began and succeeded. region/DESIGN.md ("L1 checks") promises a lockout within one check period, fenced
// like a revocation (the lease); past check period + lease × 1.05 + 1 s the checker warns (a
// warning, not a failure: a leader paused or cut off by another fault checks late, which the
// promise allows).
func checkKillSwitch(ops []Op, faults []Fault, t Timing) (*Verdict, time.Duration) {
	v := newVerdict("kill-switch")
	bound := t.AnchorCheck + time.Duration(float64(t.Lease)*1.05) + time.Second
	var worst time.Duration
	n := 0
	for _, f := range faults {
		if f.Kind != AnchorDead && f.Kind != AnchorHung {
			continue
		}
		var tenant string
		if _, err := fmt.Sscanf(f.Detail, "tenant %s disabled", &tenant); err != nil {
			continue
		}
		n++
		var last time.Duration
		for _, op := range ops {
			if op.Outcome != OK || (op.Type != OpWrap && op.Type != OpUnwrap) || !strings.HasPrefix(op.Key, tenant+"/") {
				continue
			}
			if op.Invoke >= f.Start && op.Invoke <= f.End {
				last = max(last, time.Duration(op.Invoke-f.Start))
			}
		}
		worst = max(worst, last)
		if last > bound {
			v.Result = Warn
			if len(v.Problems) < maxProblems {
				v.Problems = append(v.Problems, fmt.Sprintf("tenant %s: its keys still served %s after its anchor was disabled (bound %s)", tenant, last.Round(time.Millisecond), bound.Round(time.Millisecond)))
			}
		}
	}
	v.Detail = fmt.Sprintf("%d anchor disablings; worst time from disabling to the last use that began: %s (bound %s)", n, worst.Round(time.Millisecond), bound.Round(time.Millisecond))
	return v, worst
}

// checkGovernanceKillSwitch: once DeleteAnchor with wait was acknowledged (every region of the
// tenant applied and fenced it), no wrap or unwrap of the tenant's keys that began after the
// acknowledgement and before the anchor was set again succeeded, on any node
// (docs/governance.md, "The kill switch"). Unlike the customer's own kill switch (checkKillSwitch,
// a warning bounded by the L1 check period), this one is acknowledged, so it is a hard check.
func checkGovernanceKillSwitch(ops []Op, faults []Fault) *Verdict {
	v := newVerdict("governance-kill-switch")
	n, refused := 0, 0
	for _, f := range faults {
		if f.Kind != GovernanceKillSwitch || f.Acked == 0 {
			continue
		}
		var tenant string
		if _, err := fmt.Sscanf(f.Detail, "tenant %s", &tenant); err != nil {
			continue
		}
		n++
		for _, op := range ops {
			if (op.Type != OpWrap && op.Type != OpUnwrap) || !strings.HasPrefix(op.Key, tenant+"/") ||
				op.Invoke <= f.Acked || op.Invoke >= f.Lifted {
				continue
			}
			if op.Outcome == OK {
				v.problem("op %d: %s of %s v%d on %s succeeded %s after the kill switch of %s was acknowledged",
					op.ID, op.Type, op.Key, op.Version, op.Node, time.Duration(op.Invoke-f.Acked).Round(time.Millisecond), tenant)
			} else if op.Outcome == Fail {
				refused++
			}
		}
	}
	v.Detail = fmt.Sprintf("%d acknowledged kill switches; %d wraps and unwraps of their tenants refused while in force", n, refused)
	return v
}
