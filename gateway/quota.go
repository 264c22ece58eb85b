package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kryptonkms/krypton/internal/quota"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Quotas at the edge (docs/gateway.md, "Quotas"). The region enforces a tenant's and a service's
// quotas on every call that reaches it, but a gateway serves cached unwraps without a call, and
// answers a flood with batches: so the gateway enforces its tenant's quota, and its own service's,
// on every data-key request it serves, before the cache or the batcher. It learns both from every
// ListEndpoints answer (the caller's tenant's and certificate service's quotas, as the answering node
// applied them); a quota change flushes the tenant's gateways' caches (a key event), which makes
// them ask again at once. A node that lags may answer an older quota for a moment: the last answer
// wins, and the region's own check stays behind it.

// gatewayQuotas are the buckets of the gateway's tenant and of its own service; zero limits (the
// start, or no quota) admit everything.
type gatewayQuotas struct {
	tenant, service *quota.Bucket
	refusals        *prometheus.CounterVec // kind, scope
}

func newGatewayQuotas() *gatewayQuotas {
	return &gatewayQuotas{tenant: quota.NewBucket(quota.Limits{}), service: quota.NewBucket(quota.Limits{}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krypton_gateway_quota_refusals_total",
			Help: "Data-key requests this gateway refused with ResourceExhausted because its tenant's or its service's quota was exhausted, by kind (rate, concurrency) and scope (tenant, service).",
		}, []string{"kind", "scope"})}
}

// learnQuotas installs the quotas of a ListEndpoints answer.
func (g *Gateway) learnQuotas(resp *kv1.ListEndpointsResponse) {
	t, s := quota.FromProto(resp.GetTenantQuota()), quota.FromProto(resp.GetServiceQuota())
	if t != g.quotas.tenant.Limits() || s != g.quotas.service.Limits() {
		g.log.Info("tenant and service quotas", "tenant_quota", t.String(), "service_quota", s.String())
	}
	g.quotas.tenant.Set(t)
	g.quotas.service.Set(s)
}

// admit admits one request for key against the tenant's quota and, for the gateway's own service's
// key, the service's; release gives its slot in flight back when the request ends.
func (g *Gateway) admit(key wrap.KeyID) (release func(), err error) {
	sb := g.quotas.service
	if key.Service != g.id.Service {
		sb = nil // the quota the region told is the gateway's own service's
	}
	release, r := quota.Admit(time.Now(), 1, g.quotas.tenant, sb)
	if r == nil {
		return release, nil
	}
	scope, whose, args := "tenant", "tenant "+g.id.Tenant+"'s", g.id.Tenant
	if r.Index == 1 {
		scope, whose, args = "service", "service "+g.id.Tenant+"/"+g.id.Service+"'s", g.id.Tenant+" "+g.id.Service
	}
	g.quotas.refusals.WithLabelValues(r.Kind, scope).Inc()
	msg := "gateway: " + quota.Describe(r, whose) + " (this gateway's share: each gateway and region node enforces it on the requests it serves); " +
		"to raise it, an operator runs `krypton tenant set-quota -rate <n> -burst <n> -concurrency <n> " + args + "` (with -governance <addr> on a governed region)"
	return nil, quota.Status(r, msg).Err()
}
