package region_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// quotaRefusals sums krypton_quota_refusals_total{kind} on node n.
func quotaRefusals(t *testing.T, n *region.Node, kind string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "krypton_quota_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// retryDelay is the RetryInfo detail of a ResourceExhausted answer, or -1 without one.
func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return -1
}

// setQuota sets a quota through node i's admin API, on an ungoverned region.
func setQuota(t *testing.T, r *regiontest.Region, i int, id, tenant, service string, q *kv1.Quota) error {
	t.Helper()
	_, err := r.AdminClient(i).SetQuota(ctxT(t), &kv1.SetQuotaRequest{RequestId: id, Tenant: tenant, Service: service, Quota: q})
	return err
}

// A tenant over its rate quota gets ResourceExhausted with a RetryInfo detail and a message that
// names the quota and how to raise it, on any node (the quota replicates to every node); a second
// tenant on the same node is unaffected; a packed batch counts its items; another tenant's caller
// naming the limited tenant's key is refused by the policy first and spends none of its quota; bad
// quotas are refused with InvalidArgument before the log.
func TestQuotaRate(t *testing.T) {
	r := regiontest.Start(t, 3)
	leader := r.WaitLeader()
	admin := r.AdminClient(leader)
	createTenant(t, admin, r.Anchor, "acme", "pay")
	createTenant(t, admin, r.Anchor, "globex", "pay")
	node := r.Followers()[0]
	mustWrap(t, r, node, "acme", "pay")
	mustWrap(t, r, node, "globex", "pay")

	before := proposals(t, r.Nodes[leader])
	bad := map[string]*kv1.Quota{
		"rate too large":        {Rate: 10_000_001},
		"burst without rate":    {Burst: 5},
		"burst too large":       {Rate: 1, Burst: 10_000_001},
		"concurrency too large": {Concurrency: 1_000_001},
	}
	for name, q := range bad {
		err := setQuota(t, r, leader, "bad-"+strings.ReplaceAll(name, " ", "-"), "acme", "", q)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "quota") {
			t.Errorf("%s: %v, want InvalidArgument naming the quota", name, err)
		}
	}
	if err := setQuota(t, r, leader, "bad-name", "Acme!", "", &kv1.Quota{Rate: 1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad tenant name: %v", err)
	}
	if got := proposals(t, r.Nodes[leader]); got != before {
		t.Fatalf("bad quotas reached the Raft log: %v proposals, want %v", got, before)
	}
	if err := setQuota(t, r, leader, "no-tenant", "nobody", "", &kv1.Quota{Rate: 1}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown tenant: %v, want NotFound", err)
	}

	if err := setQuota(t, r, leader, "acme-rate", "acme", "", &kv1.Quota{Rate: 1, Burst: 3}); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 20*time.Second, "the quota on every node", func() bool {
		for _, i := range running(r) {
			if tn, err := r.Nodes[i].State().Tenant("acme"); err != nil || tn.Quota.Rate != 1 || tn.Quota.Burst != 3 {
				return false
			}
		}
		return true
	})
	if d, err := admin.DescribeTenant(ctxT(t), &kv1.DescribeTenantRequest{Tenant: "acme"}); err != nil || d.GetTenant().GetQuota().GetRate() != 1 {
		t.Fatalf("DescribeTenant: %v %v", d.GetTenant().GetQuota(), err)
	}

	// globex's caller naming acme's key: refused by the policy, before acme's quota.
	intruder := r.ServingWrapClient(node, "globex", "pay")
	for range 10 {
		_, err := intruder.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintext: randKey(t)})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("another tenant's caller: %v, want PermissionDenied", err)
		}
	}

	acme := r.ServingWrapClient(node, "acme", "pay")
	wrap := func() error {
		_, err := acme.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintext: randKey(t)})
		return err
	}
	// The burst is whole: the intruder spent none of it.
	if err := wrap(); err != nil {
		t.Fatalf("acme's first call within its burst: %v", err)
	}
	var refused error
	for i := 0; i < 200 && refused == nil; i++ {
		if err := wrap(); status.Code(err) == codes.ResourceExhausted {
			refused = err
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused == nil {
		t.Fatal("200 calls at once passed a quota of 1/s with a burst of 3")
	}
	msg := status.Convert(refused).Message()
	if d := retryDelay(refused); d <= 0 || d > 2*time.Second {
		t.Errorf("RetryInfo delay %v, want (0, 1s]", d)
	}
	for _, want := range []string{"tenant acme", "rate 1/s", "krypton tenant set-quota"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not name %q", msg, want)
		}
	}
	if quotaRefusals(t, r.Nodes[node], "rate") < 1 {
		t.Error("krypton_quota_refusals_total{kind=rate} did not count the refusal")
	}

	// The other tenant on the same node is unaffected.
	globex := r.ServingWrapClient(node, "globex", "pay")
	for range 20 {
		if _, err := globex.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "globex", Service: "pay"}, Plaintext: randKey(t)}); err != nil {
			t.Fatalf("globex beside an exhausted acme: %v", err)
		}
	}

	// A packed batch counts its items: 10 items never fit a burst of 3.
	pts := make([][]byte, 10)
	for i := range pts {
		pts[i] = randKey(t)
	}
	_, err := acme.PackedWrap(ctxT(t), &kv1.PackedWrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintexts: pts})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "split it") {
		t.Fatalf("PackedWrap of 10 items over a burst of 3: %v", err)
	}
	// And a PackedUnwrap of blobs of a limited key likewise, as a whole call.
	w := mustWrap(t, r, node, "globex", "pay")
	if err := setQuota(t, r, leader, "globex-svc", "globex", "pay", &kv1.Quota{Rate: 1, Burst: 2}); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 20*time.Second, "the service quota on the node", func() bool {
		s, err := r.Nodes[node].State().Service("globex", "pay")
		return err == nil && s.Quota.Rate == 1
	})
	blobs := [][]byte{w.blob, w.blob, w.blob}
	_, err = globex.PackedUnwrap(ctxT(t), &kv1.PackedUnwrapRequest{Blobs: blobs, Contexts: [][]byte{w.ctx}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "service globex/pay") {
		t.Fatalf("PackedUnwrap of 3 items over a service burst of 2: %v", err)
	}
	// Removing the quota lifts it.
	if err := setQuota(t, r, leader, "globex-svc-off", "globex", "pay", nil); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 20*time.Second, "the service quota gone from the node", func() bool {
		resp, err := globex.PackedUnwrap(ctxT(t), &kv1.PackedUnwrapRequest{Blobs: blobs, Contexts: [][]byte{w.ctx}})
		return err == nil && len(resp.GetErrors()) == 0 && bytes.Equal(resp.GetPlaintexts()[0], w.plain)
	})
}

// A concurrency quota refuses the calls beyond it in flight (ResourceExhausted, kind concurrency)
// while a tenant without one is unaffected.
func TestQuotaConcurrency(t *testing.T) {
	r := regiontest.Start(t, 1)
	leader := r.WaitLeader()
	admin := r.AdminClient(leader)
	createTenant(t, admin, r.Anchor, "acme", "pay")
	w := mustWrap(t, r, leader, "acme", "pay")
	if err := setQuota(t, r, leader, "acme-conc", "acme", "pay", &kv1.Quota{Concurrency: 1}); err != nil {
		t.Fatal(err)
	}
	c := r.ServingWrapClient(leader, "acme", "pay")
	// Callers at once until two calls overlap on the node (on a busy machine it may take a few
	// rounds; no timing is asserted).
	var refused error
	clustertest.Eventually(t, 30*time.Second, "a concurrency refusal", func() bool {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					_, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: w.blob, Context: w.ctx})
					if status.Code(err) == codes.ResourceExhausted {
						mu.Lock()
						refused = err
						mu.Unlock()
					} else if err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		return refused != nil
	})
	if !strings.Contains(refused.Error(), "concurrency 1") || retryDelay(refused) <= 0 {
		t.Fatalf("refusal %v", refused)
	}
	if quotaRefusals(t, r.Nodes[leader], "concurrency") < 1 {
		t.Error("krypton_quota_refusals_total{kind=concurrency} did not count the refusal")
	}
	// Every slot came back: one call at a time passes.
	for range 5 {
		mustUnwrap(t, r, leader, "acme", "pay", w)
	}
}

// A quota set at governance reaches every node of the region through the feed and is enforced
// there; the region's own SetQuota is refused, naming governance's command; governance refuses a
// quota out of bounds with InvalidArgument.
func TestQuotaFromGovernance(t *testing.T) {
	g, r := startGoverned(t)
	gov := g.Client(g.WaitLeader())
	_, err := gov.SetQuota(g.Context(20*time.Second), &kv1.GovernanceSetQuotaRequest{RequestId: governancetest.RequestID(), Tenant: "acme", Quota: &kv1.Quota{Burst: 4}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "without a rate") {
		t.Fatalf("a burst without a rate at governance: %v", err)
	}
	_, err = gov.SetQuota(g.Context(20*time.Second), &kv1.GovernanceSetQuotaRequest{RequestId: governancetest.RequestID(), Tenant: "acme", Service: "payments", Quota: &kv1.Quota{Rate: 1, Burst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 30*time.Second, "the quota on every region node", func() bool {
		for _, n := range r.Nodes {
			if s, err := n.State().Service("acme", "payments"); err != nil || s.Quota.Rate != 1 || s.Quota.Burst != 2 {
				return false
			}
		}
		return true
	})
	err = setQuota(t, r, r.WaitLeader(), "local", "acme", "payments", &kv1.Quota{Rate: 1000})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "krypton tenant set-quota -governance") {
		t.Fatalf("the region's own SetQuota on a governed region: %v", err)
	}
	for _, i := range running(r) {
		c := r.ServingWrapClient(i, "acme", "payments")
		var refused error
		for range 50 {
			_, err := c.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: randKey(t)})
			if status.Code(err) == codes.ResourceExhausted {
				refused = err
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if refused == nil || retryDelay(refused) <= 0 || !strings.Contains(refused.Error(), "-governance") {
			t.Fatalf("node %s: 50 calls over a governance quota of 1/s: %v", r.Cfgs[i].NodeID, refused)
		}
	}
}

// A tenant flooding past its quota is refused with ResourceExhausted (and a RetryInfo detail),
// most of its calls before their request is read (krypton_quota_early_refusals_total), while
// another tenant's calls on the same node all succeed; once the bucket refills the flooder is
// admitted again.
func TestQuotaEarlyRefusal(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 1)
	leader := r.WaitLeader()
	admin := r.AdminClient(leader)
	createTenant(t, admin, r.Anchor, "acme", "pay")
	createTenant(t, admin, r.Anchor, "globex", "pay")
	mustWrap(t, r, leader, "acme", "pay")
	mustWrap(t, r, leader, "globex", "pay")
	if err := setQuota(t, r, leader, "acme-early", "acme", "", &kv1.Quota{Rate: 5, Burst: 5}); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 20*time.Second, "the quota applied", func() bool {
		tn, err := r.Nodes[leader].State().Tenant("acme")
		return err == nil && tn.Quota.Rate == 5
	})
	acme := r.ServingWrapClient(leader, "acme", "pay")
	globex := r.ServingWrapClient(leader, "globex", "pay")
	var (
		mu                  sync.Mutex
		exhausted, acmeOK   int
		noRetry, globexErrs []error
	)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, err := acme.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintext: randKey(t)})
				mu.Lock()
				switch {
				case err == nil:
					acmeOK++
				case status.Code(err) == codes.ResourceExhausted:
					exhausted++
					if retryDelay(err) < 0 {
						noRetry = append(noRetry, err)
					}
				default:
					globexErrs = append(globexErrs, err) // reported below: acme's other errors
				}
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			_, err := globex.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "globex", Service: "pay"}, Plaintext: randKey(t)})
			if err != nil {
				mu.Lock()
				globexErrs = append(globexErrs, err)
				mu.Unlock()
			}
		}
	})
	wg.Wait()
	if len(globexErrs) > 0 {
		t.Fatalf("%d unexpected errors (the neighbour's, or acme's not ResourceExhausted), first: %v", len(globexErrs), globexErrs[0])
	}
	if exhausted == 0 || acmeOK == 0 {
		t.Fatalf("acme: %d admitted, %d ResourceExhausted; want both", acmeOK, exhausted)
	}
	if len(noRetry) > 0 {
		t.Errorf("a refusal without RetryInfo: %v", noRetry[0])
	}
	mfs, err := r.Nodes[leader].Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var early float64
	for _, mf := range mfs {
		if mf.GetName() == "krypton_quota_early_refusals_total" {
			early = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if early == 0 {
		t.Errorf("no refusal before the request was read (krypton_quota_early_refusals_total 0 of %d)", exhausted)
	}
	// The bucket refills: acme is admitted again (the early refusal lets the first call through).
	clustertest.Eventually(t, 20*time.Second, "acme admitted again", func() bool {
		_, err := acme.Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintext: randKey(t)})
		return err == nil
	})
}
