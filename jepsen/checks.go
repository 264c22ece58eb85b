package jepsen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// finalChecks heals the region and checks its end state.
func finalChecks(ctx context.Context, c *cluster, cs *conns, nm *nemesis, wl *workload, h *history, logf func(string, ...any)) []*Verdict {
	nm.healAll()
	members := newVerdict("membership")
	// Every node is a voter again once healed (a member nemesis cut short may have left one out).
	for i, nd := range c.nodes {
		if !slices.Contains(nm.voters(ctx), nd.id) {
			if err := nm.ensureVoter(ctx, i, 30*time.Second); err != nil {
				members.problem("%v", err)
			}
		}
	}
	members.Detail = "voters: " + strings.Join(nm.voters(ctx), ",")
	final := newVerdict("final-write")
	// One write after healing must succeed: retried with the same request id (idempotent) until
	// a leader takes it.
	k := &wkey{tenant: "t1", service: "final", byVersion: map[uint32][]int{}, revoked: map[uint32]bool{}}
	var err error
	for attempt := 0; len(c.gov) > 0 && attempt < 60 && ctx.Err() == nil; attempt++ {
		// In governance mode the final write is a service created at governance and applied by
		// the region through the feed: both planes, and the feed between them, recovered.
		err = wl.createAtGovernance(ctx, attempt, "jepsen-final-write", k.tenant, k.service, 10*time.Second)
		if err == nil {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	for attempt := 0; len(c.gov) == 0 && attempt < 60 && ctx.Err() == nil; attempt++ {
		err = wl.withAdmin(ctx, attempt%len(c.nodes), 10*time.Second, func(cctx context.Context, a kv1.AdminServiceClient) error {
			_, err := a.CreateKey(cctx, &kv1.CreateKeyRequest{RequestId: "jepsen-final-write", Tenant: k.tenant, Service: k.service})
			return err
		})
		if err == nil {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	if err != nil {
		final.problem("the final write failed after healing: %v", err)
	}
	// Converge: every node has applied what the leader committed; all tenants active again
	// (an anchor lockout lifts once the anchor answers).
	conv := newVerdict("state-converged")
	hashes, states := convergedStates(ctx, c, cs, nm, logf)
	var first string
	for i, hsh := range hashes {
		if hsh == "" {
			conv.problem("%s: could not read its state", c.nodes[i].id)
			continue
		}
		if first == "" {
			first = hsh
		} else if hsh != first {
			conv.problem("%s: state hash %s differs from %s's %s", c.nodes[i].id, hsh[:12], c.nodes[0].id, first[:12])
		}
	}
	if conv.Result == OK {
		conv.Detail = "every node's tenants and keys hash to " + first[:12]
	}
	os.WriteFile(filepath.Join(c.dir, "final-states.txt"), []byte(strings.Join(states, "\n\n")), 0o600)

	ops := h.snapshot()
	acked := checkAckedWrites(ops, c, cs)
	unwraps := checkFinalUnwraps(ctx, ops, wl, h)
	if len(c.gov) > 0 {
		return []*Verdict{members, final, conv, checkFeedCaughtUp(ctx, c, cs, nm), acked, unwraps}
	}
	return []*Verdict{members, final, conv, acked, unwraps}
}

// checkFeedCaughtUp: once healed, the region reports every governance event applied (no event of
// its tenants pending at the governance leader) within a minute.
func checkFeedCaughtUp(ctx context.Context, c *cluster, cs *conns, nm *nemesis) *Verdict {
	v := newVerdict("feed-caught-up")
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for ctx.Err() == nil {
		if g := nm.govLeader(ctx); g >= 0 {
			if cl, err := cs.gov(g); err == nil {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := cl.Status(cctx, &kv1.GovernanceStatusRequest{})
				cancel()
				if err == nil {
					last = fmt.Sprintf("head cursor %d, region not reported", st.GetHeadCursor())
					for _, r := range st.GetRegions() {
						if r.GetCursor().GetRegion() != c.region {
							continue
						}
						last = fmt.Sprintf("head cursor %d, region %s applied %d, %d pending", st.GetHeadCursor(), c.region,
							r.GetCursor().GetAppliedCursor(), r.GetPendingEvents())
						if r.GetPendingEvents() == 0 {
							v.Detail = last
							return v
						}
					}
				}
			}
		}
		if time.Now().After(deadline) {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	v.problem("the region did not catch up with the governance feed within a minute: %s", last)
	return v
}

// describeAll reads every tenant with its keys from node i's applied state.
func describeAll(ctx context.Context, cs *conns, i int) (map[string]*kv1.DescribeTenantResponse, error) {
	a, err := cs.admin(i)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lt, err := a.ListTenants(cctx, &kv1.ListTenantsRequest{PageSize: 1000})
	if err != nil {
		return nil, err
	}
	out := map[string]*kv1.DescribeTenantResponse{}
	for _, t := range lt.GetTenants() {
		d, err := a.DescribeTenant(cctx, &kv1.DescribeTenantRequest{Tenant: t.GetName()})
		if err != nil {
			return nil, err
		}
		out[t.GetName()] = d
	}
	return out, nil
}

// convergedStates waits (up to a minute) until every node reports the same applied state and no
// tenant is locked, and returns each node's state hash and text.
func convergedStates(ctx context.Context, c *cluster, cs *conns, nm *nemesis, logf func(string, ...any)) ([]string, []string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		hashes := make([]string, len(c.nodes))
		states := make([]string, len(c.nodes))
		same, locked := true, false
		for i := range c.nodes {
			d, err := describeAll(ctx, cs, i)
			if err != nil {
				same = false
				continue
			}
			names := make([]string, 0, len(d))
			for n := range d {
				names = append(names, n)
			}
			sort.Strings(names)
			var b strings.Builder
			for _, n := range names {
				if d[n].GetTenant().GetState() != kv1.TenantState_TENANT_STATE_ACTIVE {
					locked = true
				}
				js, _ := protojson.MarshalOptions{}.Marshal(d[n])
				b.Write(js)
				b.WriteByte('\n')
			}
			sum := sha256.Sum256([]byte(b.String()))
			hashes[i] = hex.EncodeToString(sum[:])
			states[i] = c.nodes[i].id + "\n" + b.String()
			if hashes[i] != hashes[0] {
				same = false
			}
		}
		if (same && !locked) || time.Now().After(deadline) || ctx.Err() != nil {
			if !same || locked {
				logf("final state: converged=%v locked=%v after waiting a minute", same, locked)
			}
			return hashes, states
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// checkAckedWrites: every acknowledged write is in every node's final state (create: the key
// exists; rotate: the version exists; revoke: the version, or the service, is revoked), and the
// versions of every key run 1..n without gaps.
func checkAckedWrites(ops []Op, c *cluster, cs *conns) *Verdict {
	v := newVerdict("acked-writes-durable")
	checked := 0
	for i := range c.nodes {
		d, err := describeAll(context.Background(), cs, i)
		if err != nil {
			v.problem("%s: %v", c.nodes[i].id, err)
			continue
		}
		keys := map[string]*kv1.Key{}
		for _, t := range d {
			for _, k := range t.GetKeys() {
				keys[k.GetTenant()+"/"+k.GetService()] = k
				for j, ver := range k.GetVersions() {
					if ver.GetVersion() != uint32(j+1) {
						v.problem("%s: %s/%s has version %d at position %d (a gap)", c.nodes[i].id, k.GetTenant(), k.GetService(), ver.GetVersion(), j+1)
					}
				}
			}
		}
		for _, op := range ops {
			if op.Outcome != OK || (op.Type != OpCreate && op.Type != OpRotate && op.Type != OpRevoke) {
				continue
			}
			checked++
			k := keys[op.Key]
			if k == nil {
				v.problem("%s: acknowledged %s %d of %s, but the key is missing", c.nodes[i].id, op.Type, op.ID, op.Key)
				continue
			}
			switch op.Type {
			case OpRotate:
				if int(op.Version) > len(k.GetVersions()) {
					v.problem("%s: rotation %d returned v%d, but %s has %d versions", c.nodes[i].id, op.ID, op.Version, op.Key, len(k.GetVersions()))
				}
			case OpRevoke:
				if op.Arg == 0 {
					// DescribeKey cannot show a revoked service (see DESIGN.md, "Findings"); the
					// final unwraps and the fence checker cover service revocations.
					continue
				}
				for _, ver := range k.GetVersions() {
					if op.Arg == ver.GetVersion() && ver.GetState() != kv1.KeyState_KEY_STATE_REVOKED {
						v.problem("%s: revocation %d of %s v%d acknowledged, but the version is %s", c.nodes[i].id, op.ID, op.Key, ver.GetVersion(), ver.GetState())
					}
				}
			}
		}
	}
	v.Detail = fmt.Sprintf("%d acknowledged writes checked on %d nodes", checked/max(len(c.nodes), 1), len(c.nodes))
	return v
}

// maxFinalUnwraps bounds the final unwraps.
const maxFinalUnwraps = 5000

// checkFinalUnwraps: every acknowledged wrap unwraps (to its plaintext) after healing unless its
// version was revoked, in which case every node refuses it.
func checkFinalUnwraps(ctx context.Context, ops []Op, wl *workload, h *history) *Verdict {
	v := newVerdict("acked-wraps-unwrap")
	revoked := map[string]map[uint32]bool{}
	svcRevoked := map[string]bool{}
	for _, op := range ops {
		if op.Type == OpRevoke && op.Outcome != Fail {
			// Indeterminate revocations may have happened: their keys are excused both ways.
			if revoked[op.Key] == nil {
				revoked[op.Key] = map[uint32]bool{}
			}
			if op.Arg == 0 {
				svcRevoked[op.Key] = true
			}
			revoked[op.Key][op.Arg] = true
		}
	}
	type job struct {
		op Op
		d  *opData
	}
	var jobs []job
	for _, op := range ops {
		if op.Type == OpWrap && op.Outcome == OK {
			if d := h.get(op.ID); d != nil {
				jobs = append(jobs, job{op, d})
			}
		}
	}
	// At most maxFinalUnwraps, so that the final phase stays short: wraps of versions not
	// revoked first (they must still open), then an even sample of the revoked (they must not).
	total := len(jobs)
	if total > maxFinalUnwraps {
		var live, dead []job
		for _, j := range jobs {
			if svcRevoked[j.op.Key] || revoked[j.op.Key][j.op.Version] {
				dead = append(dead, j)
			} else {
				live = append(live, j)
			}
		}
		even := func(js []job, n int) []job {
			if len(js) <= n {
				return js
			}
			out := make([]job, 0, n)
			for i := range n {
				out = append(out, js[i*len(js)/n])
			}
			return out
		}
		live = even(live, maxFinalUnwraps*4/5)
		jobs = append(live, even(dead, maxFinalUnwraps-len(live))...)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ch := make(chan job)
	var unwrapped, refused int
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				k := wl.all[j.op.Key]
				if k == nil {
					continue
				}
				// One node of each region of the tenant (with one region: one node).
				for _, g := range wl.groupsOf(k.tenant) {
					n := g[j.op.ID%len(g)]
					res := wl.unwrapOnce(ctx, probeProcess+len(wl.eps)+n, n, k, j.op.ID, j.d)
					isRevoked := svcRevoked[j.op.Key] || revoked[j.op.Key][j.op.Version]
					mu.Lock()
					switch {
					case res.Outcome == OK && res.Error != "":
						v.problem("wrap %d: final unwrap on %s: %s", j.op.ID, res.Node, res.Error)
					case res.Outcome == OK:
						unwrapped++
					case isRevoked:
						refused++
					default:
						v.problem("wrap %d (%s v%d, wrapped on %s): final unwrap on %s failed: %s %s", j.op.ID, j.op.Key, j.op.Version, j.op.Node, res.Node, res.Code, res.Error)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	v.Detail = fmt.Sprintf("%d of %d acknowledged wraps unwrapped again (on a node of each region of the tenant): %d opened, %d refused as revoked", len(jobs), total, unwrapped, refused)
	return v
}
