package region

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/quota"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Quotas on the wrap path (docs/operations.md, "Quotas"). A tenant's quota and a service's are set
// by SetQuota (governance's feed, or this region's admin API when it is ungoverned), replicated by
// the state machine, and enforced by every node on its own for the calls it serves: each node
// keeps a token bucket and an in-flight count per tenant and per service with a quota, kept in
// step with the state by onChange (QuotaSet, Restored). A call is admitted against its tenant's
// and its service's buckets after the caller's right to the key is checked (so that no one burns
// another tenant's quota) and before the state is read at the leader, the Raft log touched or any
// key opened; a refused call is ResourceExhausted with a RetryInfo detail.

type quotaKey struct{ tenant, service string }

// quotaTable holds the buckets of every tenant and service with a quota on this node.
type quotaTable struct {
	mu sync.RWMutex
	m  map[quotaKey]*quota.Bucket
	// any is whether m has an entry: without one a call skips the table altogether.
	any atomic.Bool
	// refused are the callers (service identities) whose last call a quota refused, with the
	// bucket that refused it: until that bucket admits again, their calls are refused as soon as
	// their headers arrive (earlyAdmit), before the request is read, decoded or handled.
	refusedMu sync.Mutex
	refused   map[pki.Identity]earlyRefusal
	// logEvery bounds the log lines about refusals (a flood refused must not flood the log).
	logEvery *rate.Limiter
}

func newQuotaTable() *quotaTable {
	return &quotaTable{m: map[quotaKey]*quota.Bucket{}, refused: map[pki.Identity]earlyRefusal{}, logEvery: rate.NewLimiter(rate.Every(10*time.Second), 1)}
}

func limitsOf(q fsm.Quota) quota.Limits {
	return quota.Limits{Rate: q.Rate, Burst: q.Burst, Concurrency: q.Concurrency}
}

func quotaOf(l quota.Limits) fsm.Quota {
	return fsm.Quota{Rate: l.Rate, Burst: l.Burst, Concurrency: l.Concurrency}
}

func (t *quotaTable) get(tenant, service string) *quota.Bucket {
	t.mu.RLock()
	b := t.m[quotaKey{tenant, service}]
	t.mu.RUnlock()
	return b
}

// set installs one quota; a zero one removes the bucket (calls in flight release the old one).
func (t *quotaTable) set(tenant, service string, q fsm.Quota) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := quotaKey{tenant, service}
	switch b := t.m[k]; {
	case q.IsZero():
		delete(t.m, k)
	case b == nil:
		t.m[k] = quota.NewBucket(limitsOf(q))
	default:
		b.Set(limitsOf(q))
	}
	t.any.Store(len(t.m) > 0)
}

// rebuild installs every quota of s afresh (after a snapshot restore), keeping the buckets (and
// their in-flight counts) of quotas that remain.
func (t *quotaTable) rebuild(s *fsm.State) {
	want := map[quotaKey]fsm.Quota{}
	for _, e := range s.Quotas() {
		want[quotaKey{e.Tenant, e.Service}] = e.Quota
	}
	t.mu.Lock()
	for k := range t.m {
		if _, ok := want[k]; !ok {
			delete(t.m, k)
		}
	}
	t.mu.Unlock()
	for k, q := range want {
		t.set(k.tenant, k.service, q)
	}
	t.mu.Lock()
	t.any.Store(len(t.m) > 0)
	t.mu.Unlock()
}

// quotaCall is one wrap-path call's admission: the items it counts as (1, or a batch's items) and
// the keys it was admitted for, whose slots in flight it gives back when it ends.
type quotaCall struct {
	n        *Node
	items    int
	admitted []quotaKey
	releases []func()
}

type quotaCallKey struct{}

// quotaStart marks ctx with a call of items requests; the caller defers end. Without any quota on
// this node it costs nothing.
func (n *Node) quotaStart(ctx context.Context, items int) (context.Context, *quotaCall) {
	if !n.quotas.any.Load() {
		return ctx, nil
	}
	c := &quotaCall{n: n, items: max(items, 1)}
	return context.WithValue(ctx, quotaCallKey{}, c), c
}

// has reports whether the call was admitted for k (a service, or a tenant: service empty).
func (c *quotaCall) has(k quotaKey) bool {
	for _, a := range c.admitted {
		if a == k {
			return true
		}
	}
	return false
}

func (c *quotaCall) end() {
	if c == nil {
		return
	}
	for _, r := range c.releases {
		r()
	}
}

// errQuota is a refusal by a quota: the whole call (batch or packed too) fails with its status.
type errQuota struct{ st *status.Status }

func (e *errQuota) Error() string              { return e.st.Message() }
func (e *errQuota) GRPCStatus() *status.Status { return e.st }

func isQuotaRefusal(err error) bool {
	var q *errQuota
	return errors.As(err, &q)
}

// admitQuota admits the call of ctx for tenant's service, once per call and tenant and once per
// call and service (a call that looks its key up again, or a batch's later items, are not charged
// again; a batch naming two services of a tenant is charged its items once to the tenant and once
// to each service).
func (n *Node) admitQuota(ctx context.Context, tenant, service string) error {
	c, _ := ctx.Value(quotaCallKey{}).(*quotaCall)
	if c == nil {
		return nil
	}
	k := quotaKey{tenant, service}
	if c.has(k) {
		return nil
	}
	var tb, sb *quota.Bucket
	tk := quotaKey{tenant: tenant}
	if !c.has(tk) {
		tb = n.quotas.get(tenant, "")
	}
	sb = n.quotas.get(tenant, service)
	release, r := quota.Admit(time.Now(), c.items, tb, sb)
	if r == nil {
		if !c.has(tk) {
			c.admitted = append(c.admitted, tk)
		}
		c.admitted = append(c.admitted, k)
		c.releases = append(c.releases, release)
		return nil
	}
	scope, whose, raise := "tenant", "tenant "+tenant+"'s", n.raiseQuota(tenant, "")
	if r.Index == 1 {
		scope, whose, raise = "service", "service "+tenant+"/"+service+"'s", n.raiseQuota(tenant, service)
	}
	n.metrics.quotaRefusals.WithLabelValues(r.Kind, scope).Inc()
	if n.quotas.logEvery.Allow() {
		n.log.Info("quota refused calls (one line per 10s at most; krypton_quota_refusals_total counts them all)", "tenant", tenant, "service", service, "scope", scope, "kind", r.Kind)
	}
	msg := quotaMessage(r, whose, raise)
	if r.Kind != quota.KindBatch {
		// Only a caller's own tenant's (or own service's) bucket: the early refusal cannot see
		// which key a call names, and a service calls its own keys.
		if id, ok := transport.IdentityFromContext(ctx); ok && id.Kind == pki.KindService && id.Tenant == tenant && (r.Index == 0 || id.Service == service) {
			bk := k
			if r.Index == 0 {
				bk = tk
			}
			n.quotas.noteRefused(id, earlyRefusal{bucket: bk, scope: scope, whose: whose, raise: raise})
		}
	}
	return &errQuota{st: quota.Status(r, msg)}
}

func quotaMessage(r *quota.Refusal, whose, raise string) string {
	return "region: " + quota.Describe(r, whose) + " (this node's share: each node enforces it on the calls it serves); to raise it: " + raise
}

// earlyRefusal is the quota that refused a caller's last call: the bucket's key, and what the
// refusal's message says.
type earlyRefusal struct {
	bucket              quotaKey
	scope, whose, raise string
}

// maxEarlyPause bounds the pause of an early refusal (earlyAdmit): the wait for one token, at
// most this; a pause delays the connection's pings and window updates too.
const maxEarlyPause = 50 * time.Millisecond

// maxEarlyRefused bounds the callers remembered for early refusal (one per service certificate
// refused lately; past it a refused caller is simply refused by the handler, as before).
const maxEarlyRefused = 4096

func (t *quotaTable) noteRefused(id pki.Identity, e earlyRefusal) {
	t.refusedMu.Lock()
	defer t.refusedMu.Unlock()
	if _, ok := t.refused[id]; !ok && len(t.refused) >= maxEarlyRefused {
		// Full: forget the callers whose bucket admits again (callers that stopped calling).
		now := time.Now()
		for k, old := range t.refused {
			if b := t.get(old.bucket.tenant, old.bucket.service); b == nil {
				delete(t.refused, k)
			} else if _, _, ex := b.Exhausted(now); !ex {
				delete(t.refused, k)
			}
		}
	}
	if _, ok := t.refused[id]; ok || len(t.refused) < maxEarlyRefused {
		t.refused[id] = e
	}
}

// earlyAdmit is the region's transport.ServerConfig.EarlyAdmit: a unary WrapService call from a
// caller whose last call a quota refused is refused at once, with the same answer, while that quota's
// bucket is still exhausted; that costs the node no read of the request, no protobuf decode, no
// handler, no key lookup. The first call after the bucket admits again goes through to the
// handler (which admits it, charging the key's tenant and service as always) and the caller is
// forgotten. Hand-written: gRPC's InTapHandle is the only hook before the request is read, and
// the bucket check must not take a token (the handler takes it).
func (n *Node) earlyAdmit(method string, caller pki.Identity) error {
	if caller.Kind != pki.KindService || !n.quotas.any.Load() || !earlyMethods[method] {
		return nil
	}
	t := n.quotas
	t.refusedMu.Lock()
	e, ok := t.refused[caller]
	t.refusedMu.Unlock()
	if !ok {
		return nil
	}
	b := t.get(e.bucket.tenant, e.bucket.service)
	var (
		kind  string
		after time.Duration
		still bool
	)
	if b != nil {
		kind, after, still = b.Exhausted(time.Now())
	}
	if !still {
		t.refusedMu.Lock()
		if t.refused[caller] == e {
			delete(t.refused, caller)
		}
		t.refusedMu.Unlock()
		return nil
	}
	n.metrics.quotaRefusals.WithLabelValues(kind, e.scope).Inc()
	n.metrics.quotaEarly.Inc()
	// Pace the caller's connection: this runs on the connection's reader goroutine, and a pause
	// here stops the node reading that connection (TCP and HTTP/2 flow control push back on the
	// caller), so a client that ignores RetryInfo and resends at once cannot turn cheap refusals
	// into a flood of their own. The connection is the caller's alone (one certificate, one
	// service); other callers' connections are read meanwhile. (gRPC calls the tap holding that
	// connection's own lock, so the caller's admitted calls on it finish at most this late too.)
	time.Sleep(min(after, maxEarlyPause))
	r := &quota.Refusal{Kind: kind, Limits: b.Limits(), RetryAfter: after, Items: 1}
	return quota.Status(r, quotaMessage(r, e.whose, e.raise)).Err()
}

// earlyMethods are the calls refused early: the unary ones, which count as one request each, so
// that the early answer is the one the handler would give (a batch may be larger than the burst,
// which has its own answer, and is left to the handler).
var earlyMethods = map[string]bool{
	kv1.WrapService_Wrap_FullMethodName:            true,
	kv1.WrapService_Unwrap_FullMethodName:          true,
	kv1.WrapService_GenerateDataKey_FullMethodName: true,
	kv1.WrapService_Rewrap_FullMethodName:          true,
}

// raiseQuota is the command that raises a quota: at governance if this region follows it.
func (n *Node) raiseQuota(tenant, service string) string {
	args := []string{tenant}
	if service != "" {
		args = append(args, service)
	}
	if len(n.cfg.Governance) > 0 {
		return "`" + quotaCommand(args).line(n.cfg.Governance[0]) + "` (at governance)"
	}
	line := "krypton tenant set-quota -rate <n> -burst <n> -concurrency <n> " + shellWord(tenant)
	if service != "" {
		line += " " + shellWord(service)
	}
	return "`" + line + "` (AdminService.SetQuota)"
}

// quotaCommand is `krypton tenant set-quota` at governance for tenant (and service) args.
func quotaCommand(args []string) govCommand {
	return govCommand{words: []string{"tenant", "set-quota"}, flags: [][2]string{{"rate", "<n>"}, {"burst", "<n>"}, {"concurrency", "<n>"}}, args: args}
}

// SetQuota sets a tenant's (service empty) or a service's quota in this region: validated here,
// before the log, with errors that name the fix.
func (n *Node) SetQuota(ctx context.Context, requestID, tenant, service string, q fsm.Quota) (fsm.Quota, error) {
	if err := transport.CheckName("tenant", tenant); err != nil {
		return fsm.Quota{}, err
	}
	if service != "" {
		if err := transport.CheckName("service", service); err != nil {
			return fsm.Quota{}, err
		}
	}
	if err := q.Validate(); err != nil {
		return fsm.Quota{}, transport.Invalid("region: " + err.Error())
	}
	// Every node records the change as it applies it (auditapply.go).
	if _, err := n.apply(ctx, requestID, fsm.SetQuota{Tenant: tenant, Service: service, Quota: q}); err != nil {
		return fsm.Quota{}, err
	}
	if service == "" {
		t, err := n.state.Tenant(tenant)
		return t.Quota, err
	}
	s, err := n.state.Service(tenant, service)
	return s.Quota, err
}

func (s *adminService) SetQuota(ctx context.Context, req *kv1.SetQuotaRequest) (*kv1.SetQuotaResponse, error) {
	args := []string{nameOr(req.GetTenant(), "<tenant>")}
	if req.GetService() != "" {
		args = append(args, nameOr(req.GetService(), "<service>"))
	}
	// The command at governance with the request's own values, to run as printed.
	cmd := govCommand{words: []string{"tenant", "set-quota"}, args: args}
	rq := req.GetQuota()
	for _, f := range []struct {
		name string
		v    uint32
	}{{"rate", rq.GetRate()}, {"burst", rq.GetBurst()}, {"concurrency", rq.GetConcurrency()}} {
		if f.v != 0 {
			cmd.flags = append(cmd.flags, [2]string{f.name, strconv.FormatUint(uint64(f.v), 10)})
		}
	}
	if err := s.n.governedWrite("set the quota", cmd); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	q, err := s.n.SetQuota(ctx, req.GetRequestId(), req.GetTenant(), req.GetService(), quotaOf(quota.FromProto(req.GetQuota())))
	if err != nil {
		return nil, err
	}
	return &kv1.SetQuotaResponse{Tenant: req.GetTenant(), Service: req.GetService(), Quota: quota.ToProto(limitsOf(q))}, nil
}
