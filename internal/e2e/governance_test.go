package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

var revocations = flag.Int("revocations", 10, "key versions TestGovernance/revocation revokes one by one, timing each (100 for the closing note's figures)")

// TestGovernance runs the cross-plane checks of issue 5 on one shared set of planes (a three-node
// governance and two three-node regions): each subtest uses its own tenant. The feed-survival
// subtest kills and restarts nodes, so it runs last.
func TestGovernance(t *testing.T) {
	p := startPlanes(t)
	t.Run("revocation", func(t *testing.T) { p.t = t; testRevocation(t, p) })
	t.Run("policy", func(t *testing.T) { p.t = t; testPolicy(t, p) })
	t.Run("kill-switch", func(t *testing.T) { p.t = t; testKillSwitch(t, p) })
	t.Run("flaky-anchor", func(t *testing.T) { p.t = t; testFlakyAnchor(t, p) })
	t.Run("resync", func(t *testing.T) { p.t = t; testResync(t, p) })
	t.Run("feed-survival", func(t *testing.T) { p.t = t; testFeedSurvival(t, p) })
}

// testRevocation: a revocation issued at governance with wait is effective on every node of both
// regions when Revoke returns. It revokes -revocations key versions one at a time and prints the
// latency of each Revoke call (issue at governance to return, i.e. to effective everywhere).
func testRevocation(t *testing.T, p *planes) {
	p.createTenant("acme", "pay")
	blobs := p.wrapEverywhere("acme", "pay") // under version 1
	// Versions 2..N+1 in both regions (region-local rotations), so that 1..N can be revoked.
	for _, r := range p.regions() {
		admin := map[int]kv1.AdminServiceClient{}
		for v := 2; v <= *revocations+1; v++ {
			// Retried with the same request id while the region is between leaders.
			waitFor(t, time.Minute, "rotation to version "+strconv.Itoa(v), func() bool {
				ld := r.WaitLeader()
				if admin[ld] == nil {
					admin[ld] = r.AdminClient(ld)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				_, err := admin[ld].RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "rot-" + strconv.Itoa(v), Tenant: "acme", Service: "pay"})
				switch status.Code(err) {
				case codes.OK:
					return true
				case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
					return false
				}
				t.Fatalf("rotate: %v", err)
				return false
			})
		}
	}
	var lat []time.Duration
	for v := uint32(1); v <= uint32(*revocations); v++ {
		id := governancetest.RequestID()
		start := time.Now()
		var resp *kv1.RevokeResponse
		p.gov("revoke", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			var err error
			resp, err = c.Revoke(ctx, &kv1.RevokeRequest{RequestId: id, Target: &kv1.KeyScope{Tenant: "acme", Service: "pay", Version: v}, Reason: "test", Wait: true})
			return err
		})
		lat = append(lat, time.Since(start))
		if len(resp.GetRegions()) != 2 {
			t.Fatalf("Revoke waited for regions %v, want eu and us", resp.GetRegions())
		}
		// Effective everywhere the moment Revoke returns: no waiting here.
		p.eachNode(func(name string, r *regiontest.Region, i int) {
			if _, err := r.Nodes[i].State().Usable("acme", "pay", v, fsm.OpUnwrap); !errors.Is(err, fsm.ErrRevoked) {
				t.Fatalf("%s/%s: version %d after Revoke returned: %v", name, r.Cfgs[i].NodeID, v, err)
			}
		})
		if v == 1 {
			// And over the API: every node refuses every blob of version 1.
			for _, w := range blobs {
				r := p.regions()[w.region]
				for i := range r.Nodes {
					c := p.wrapClient(r, i, "acme", "pay")
					expectCode(t, codes.FailedPrecondition, fmt.Sprintf("unwrap of a revoked blob on %s/%s", w.region, r.Cfgs[i].NodeID), func() error {
						_, err := c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: w.blob})
						return err
					})
				}
			}
		}
	}
	// A version no region has: governance does not know versions, the regions record the event
	// as refused (NotFound) and still report it, so Revoke with wait returns.
	id := governancetest.RequestID()
	var resp *kv1.RevokeResponse
	p.gov("revoke an unknown version", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		var err error
		resp, err = c.Revoke(ctx, &kv1.RevokeRequest{RequestId: id, Target: &kv1.KeyScope{Tenant: "acme", Service: "pay", Version: 999}, Reason: "typo", Wait: true})
		return err
	})
	cursor := resp.GetEvent().GetCursor()
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		log := r.Nodes[i].State().RevocationLog(0)
		j := slices.IndexFunc(log, func(rv fsm.Revocation) bool { return rv.Cursor == cursor })
		if j < 0 || log[j].Kind != fsm.RevokedKeyVersion || log[j].Error != "version-not-found" {
			t.Fatalf("%s/%s: the unknown version's revocation is not recorded as refused: %+v", name, r.Cfgs[i].NodeID, log)
		}
	})
	for name, r := range p.regions() {
		waitFor(t, 10*time.Second, "region "+name+" auditing the refused revocation", func() bool {
			for i := range r.Nodes {
				if len(auditLines(t, r, i, `"kind":"governance.event-refused"`, `"version":999`)) > 0 {
					return true
				}
			}
			return false
		})
	}

	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	t.Logf("revocation latency, Revoke(wait) at governance until effective on every node of 2 regions x 3 nodes, over %d revocations: median %v, p90 %v, worst %v, best %v",
		len(sorted), sorted[len(sorted)/2].Round(time.Microsecond), sorted[len(sorted)*9/10].Round(time.Microsecond),
		sorted[len(sorted)-1].Round(time.Microsecond), sorted[0].Round(time.Microsecond))
	t.Logf("figures from: go test ./internal/e2e -run 'TestGovernance/revocation' -revocations=%d -v", *revocations)
}

// testPolicy: a policy from governance widens and narrows who may use a key, on every node; a
// denied caller gets PermissionDenied and the denial is in that node's audit log.
func testPolicy(t *testing.T, p *planes) {
	p.createTenant("pol", "pay")
	blobs := p.wrapEverywhere("pol", "pay") // by the default rule: pol/pay's own certificate
	id := governancetest.RequestID()
	var rev uint64
	p.gov("set policy", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		pol, err := c.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: id, Policy: &kv1.Policy{Tenant: "pol", Rules: []*kv1.PolicyRule{{
			Caller: "spiffe://krypton/tenant/pol/service/web*", Service: "pay", Operations: []kv1.Operation{kv1.Operation_OPERATION_UNWRAP},
		}}}})
		rev = pol.GetRevision()
		return err
	})
	p.waitEveryNode("the policy on every node", func(n *region.Node) bool {
		pol, err := n.State().Policy("pol")
		return err == nil && pol.Revision == rev
	})
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		where := name + "/" + r.Cfgs[i].NodeID
		// Widened: web-frontend may now unwrap pay's blobs.
		w := blobs[slices.IndexFunc(blobs, func(w wrapped) bool { return w.region == name })]
		web, pay := p.wrapClient(r, i, "pol", "web-frontend"), p.wrapClient(r, i, "pol", "pay")
		var resp *kv1.UnwrapResponse
		expectCode(t, codes.OK, where+": unwrap allowed by policy", func() error {
			var err error
			resp, err = web.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: w.blob})
			return err
		})
		if !bytes.Equal(resp.GetPlaintext(), w.plain) {
			t.Fatalf("%s: unwrapped other bytes", where)
		}
		// Narrowed: the rules replace the default, so pay itself may no longer wrap.
		expectCode(t, codes.PermissionDenied, where+": wrap denied by policy", func() error {
			_, err := pay.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "pol", Service: "pay"}, Plaintext: bytes.Repeat([]byte{7}, 32)})
			return err
		})
		// Nor may web-frontend wrap (it may only unwrap).
		expectCode(t, codes.PermissionDenied, where+": wrap by an unwrap-only caller", func() error {
			_, err := web.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "pol", Service: "pay"}, Plaintext: bytes.Repeat([]byte{7}, 32)})
			return err
		})
	})
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		var lines []string
		waitFor(t, 10*time.Second, "the denial in "+name+"/"+r.Cfgs[i].NodeID+"'s audit log", func() bool {
			lines = auditLines(t, r, i, `"kind":"policy.deny"`, `"actor":"spiffe://krypton/tenant/pol/service/pay"`, `"tenant":"pol"`, `"service":"pay"`, `"operation":"wrap"`)
			return len(lines) == 1
		})
	})
}

// testKillSwitch: deleting the pointer locks the tenant out on every node of every region; a
// pointer to another key is refused by the regions (the tenant stays locked); setting it back
// restores service and every blob wrapped before still unwraps.
func testKillSwitch(t *testing.T, p *planes) {
	p.createTenant("kill", "vault")
	blobs := p.wrapEverywhere("kill", "vault")
	id := governancetest.RequestID()
	p.gov("delete anchor", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: id, Tenant: "kill", Reason: "customer pulled the plug", Wait: true})
		return err
	})
	refusedEverywhere := func(when string) {
		t.Helper()
		for _, w := range blobs {
			r := p.regions()[w.region]
			for i := range r.Nodes {
				c := p.wrapClient(r, i, "kill", "vault")
				expectCode(t, codes.FailedPrecondition, when+": unwrap on "+w.region+"/"+r.Cfgs[i].NodeID, func() error {
					_, err := c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: w.blob})
					return err
				})
				expectCode(t, codes.FailedPrecondition, when+": wrap on "+w.region+"/"+r.Cfgs[i].NodeID, func() error {
					_, err := c.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "kill", Service: "vault"}, Plaintext: w.plain})
					return err
				})
			}
		}
	}
	refusedEverywhere("after DeleteAnchor returned")

	// A pointer to a different root key cannot open the sealed keys: refused in every region.
	other := "file://" + filepath.Join(t.TempDir(), "other.key")
	pv, err := anchor.Open(context.Background(), other, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	pv.Close()
	var cursor uint64
	id = governancetest.RequestID()
	p.gov("set a wrong anchor", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		tn, err := c.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: id, Tenant: "kill", AnchorUri: other,
			Consent: p.g.Owner.Consent(t, owner.Statement{Tenant: "kill", Op: owner.OpSetAnchor, Anchor: other, RequestID: id})})
		cursor = tn.GetCursor()
		return err
	})
	p.waitEveryNode("the wrong anchor's event applied", func(n *region.Node) bool { return n.State().GovernanceCursor() >= cursor })
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		log := r.Nodes[i].State().RevocationLog(0)
		j := slices.IndexFunc(log, func(rv fsm.Revocation) bool { return rv.Cursor == cursor })
		if j < 0 || log[j].Kind != fsm.EventAnchorSet || log[j].Error != "anchor-mismatch" {
			t.Fatalf("%s/%s: the wrong anchor's event is not recorded as refused: %+v", name, r.Cfgs[i].NodeID, log)
		}
	})
	refusedEverywhere("after a wrong SetAnchor")

	// The right pointer again: every node serves, every blob opens.
	id = governancetest.RequestID()
	p.gov("set the anchor back", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: id, Tenant: "kill", AnchorUri: p.eu.Anchor,
			Consent: p.g.Owner.Consent(t, owner.Statement{Tenant: "kill", Op: owner.OpSetAnchor, Anchor: p.eu.Anchor, RequestID: id})})
		return err
	})
	for _, w := range blobs {
		r := p.regions()[w.region]
		for i := range r.Nodes {
			c := p.wrapClient(r, i, "kill", "vault")
			var resp *kv1.UnwrapResponse
			waitFor(t, 30*time.Second, "unwrap on "+w.region+"/"+r.Cfgs[i].NodeID+" after the anchor is back", func() bool {
				resp, err = c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: w.blob})
				return err == nil
			})
			if !bytes.Equal(resp.GetPlaintext(), w.plain) {
				t.Fatalf("%s/%s unwrapped other bytes", w.region, r.Cfgs[i].NodeID)
			}
		}
	}
	// The region leaders recorded the kill switch and its lifting.
	for name, r := range p.regions() {
		waitFor(t, 10*time.Second, "region "+name+" auditing the kill switch and the anchor set back", func() bool {
			var deleted, set int
			for i := range r.Nodes {
				deleted += len(auditLines(t, r, i, `"kind":"tenant.anchor-delete"`, `"tenant":"kill"`))
				// The lift's record names the old anchor (deleted), the new one and the owner key that
				// consented (issue 14, finding 4).
				set += len(auditLines(t, r, i, `"kind":"tenant.anchor-set"`, `"tenant":"kill"`, `"old-anchor":"(deleted: this lifts the kill switch)"`,
					`"anchor":"`+p.eu.Anchor+`"`, `"owner-key":"`+p.g.Owner.Fingerprint()+`"`))
			}
			return deleted > 0 && set > 0
		})
	}
}

// testFlakyAnchor: an event that needs an anchor that does not answer must not hold back the
// events behind it. A tenant is created on a root key that is unavailable: each region's leader
// retries it for GovernanceAnchorWait (2 s here), then records it refused and goes on, so a
// revocation of another tenant issued after it still becomes effective everywhere and Revoke with
// wait returns. Once the key answers, its other tenant works as before.
func testFlakyAnchor(t *testing.T, p *planes) {
	keyPath := filepath.Join(t.TempDir(), "flaky.key")
	uri := "file://" + keyPath
	pv, err := anchor.Open(context.Background(), uri, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	pv.Close()
	p.createTenant("bystander", "pay")
	marker := keyPath + file.UnavailableSuffix
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var stuck uint64
	id := governancetest.RequestID()
	p.gov("create a tenant on a root key that does not answer", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		tn, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: "flaky", AnchorUri: uri, Regions: []string{"eu", "us"}})
		stuck = tn.GetCursor()
		return err
	})
	start := time.Now()
	id = governancetest.RequestID()
	p.gov("revoke behind the stuck event", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.Revoke(ctx, &kv1.RevokeRequest{RequestId: id, Target: &kv1.KeyScope{Tenant: "bystander", Service: "pay"}, Reason: "test", Wait: true})
		return err
	})
	t.Logf("a revocation queued behind an event whose root key does not answer took %v (GovernanceAnchorWait 2s)", time.Since(start).Round(time.Millisecond))
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		if _, err := r.Nodes[i].State().Usable("bystander", "pay", 0, fsm.OpWrap); !errors.Is(err, fsm.ErrRevoked) {
			t.Fatalf("%s/%s: the revocation is not effective: %v", name, r.Cfgs[i].NodeID, err)
		}
		log := r.Nodes[i].State().RevocationLog(0)
		j := slices.IndexFunc(log, func(rv fsm.Revocation) bool { return rv.Cursor == stuck })
		if j < 0 || log[j].Kind != fsm.EventTenantCreated || log[j].Error != "anchor-unavailable" {
			t.Fatalf("%s/%s: the stuck event is not recorded as refused: %+v", name, r.Cfgs[i].NodeID, log[max(0, len(log)-3):])
		}
	})
	// The key answers again: a tenant on it is created as usual.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	p.createTenantOn("flaky-again", uri, "first")
}

// testFeedSurvival issues a stream of events at governance while it kills the governance leader,
// kills a region leader while it applies, restarts a governance node (cutting every stream it
// serves); meanwhile the "us" region's proxy duplicates, replays and cuts. Every event must be
// applied exactly once and in order in every region, as governance's log has it.
func testFeedSurvival(t *testing.T, p *planes) {
	p.createTenant("chaos", "s0")
	var rev uint64
	event := func(k int) {
		id := governancetest.RequestID()
		p.gov("event", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			var err error
			switch (k - 1) % 5 {
			case 0:
				_, err = c.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: id, Tenant: "chaos", Reason: "chaos " + strconv.Itoa(k)})
			case 1:
				_, err = c.UnlockTenant(ctx, &kv1.GovernanceUnlockTenantRequest{RequestId: id, Tenant: "chaos"})
			case 2:
				var pol *kv1.Policy
				pol, err = c.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: id, Policy: &kv1.Policy{Tenant: "chaos", Rules: []*kv1.PolicyRule{{
					Caller: "spiffe://krypton/tenant/chaos/**", Service: "*", Operations: []kv1.Operation{kv1.Operation_OPERATION_WRAP},
				}}}})
				if err == nil {
					rev = pol.GetRevision()
				}
			case 3:
				_, err = c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "chaos", Service: "s" + strconv.Itoa(k)})
			case 4:
				_, err = c.Revoke(ctx, &kv1.RevokeRequest{RequestId: id, Target: &kv1.KeyScope{Tenant: "chaos", Service: "s" + strconv.Itoa(k-1)}, Reason: "chaos"})
			}
			return err
		})
	}
	k := 0
	burst := func(n int) {
		for range n {
			k++
			event(k)
		}
	}
	burst(10)
	// The governance leader dies mid-stream; events go on once another leads.
	gl := p.g.WaitLeader()
	p.g.Kill(gl)
	burst(10)
	p.g.Restart(gl)
	// A region leader dies while it applies.
	el := p.eu.WaitLeader()
	k++
	event(k)
	p.eu.Kill(el)
	burst(9)
	p.eu.Start(el)
	// A governance follower restarts: every stream it served is cut.
	gf := (p.g.WaitLeader() + 1) % len(p.g.Cfgs)
	p.g.Kill(gf)
	burst(5)
	p.g.Restart(gf)
	burst(5)

	counts := p.checkExactlyOnce()
	t.Logf("events compared: %v; replay proxy: %d events sent, %d replayed, %d streams cut", counts, p.proxy.sent.Load(), p.proxy.replayed.Load(), p.proxy.cuts.Load())
	if p.proxy.replayed.Load() == 0 || p.proxy.cuts.Load() == 0 {
		t.Errorf("the replay proxy neither replayed nor cut: the test did not exercise duplicate delivery")
	}
	// The chaos tenant's end state is the same on every node: its last policy, its revocations.
	p.waitEveryNode("the chaos policy on every node", func(n *region.Node) bool {
		pol, err := n.State().Policy("chaos")
		return err == nil && pol.Revision == rev
	})
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		for _, rv := range r.Nodes[i].State().RevocationLog(0) {
			if rv.Tenant == "chaos" && rv.Error != "" {
				t.Errorf("%s/%s refused a chaos event: %+v", name, r.Cfgs[i].NodeID, rv)
			}
		}
	})
}

// waitFor is clustertest.Eventually for a *testing.T in a subtest.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		tm := time.NewTimer(20 * time.Millisecond)
		<-tm.C
	}
}

// expectCode calls call until it answers something other than Unavailable, and fails unless that
// is want. Unavailable is what a node that has lost its serving lease answers (it refuses every
// key then); on two shared cores under the race detector that happens, and is not the answer the
// test is after.
func expectCode(t *testing.T, want codes.Code, what string, call func() error) {
	t.Helper()
	var err error
	waitFor(t, 30*time.Second, what+" (a node that serves)", func() bool {
		err = call()
		return status.Code(err) != codes.Unavailable || want == codes.Unavailable
	})
	if status.Code(err) != want {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}
