package region

import (
	"context"
	"slices"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/internal/quota"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// ListEndpoints tells a caller (a gateway) where the region's wrap service runs: every node gossip
// knows with an API address, whether it votes, and whether it serves. Only this node's word about
// itself is exact (its own serving lease); for the others it reports what gossip says, and a
// gateway asks each of them in turn.
func (s *wrapService) ListEndpoints(ctx context.Context, _ *kv1.ListEndpointsRequest) (*kv1.ListEndpointsResponse, error) {
	n := s.n
	if n.shut.Load() {
		return nil, ErrShutdown
	}
	members, err := n.cl.Members()
	if err != nil {
		return nil, err
	}
	voters, _ := n.voterIDs() // none known: every endpoint is reported as a non-voter
	resp := &kv1.ListEndpointsResponse{NodeId: n.cfg.NodeID, Region: n.cfg.Region}
	for _, m := range members {
		addr := m.Meta[metaRPC]
		if addr == "" {
			continue
		}
		st := kv1.EndpointStatus_ENDPOINT_STATUS_NOT_SERVING
		switch {
		case m.ID == n.cfg.NodeID:
			if n.Serving() == nil {
				st = kv1.EndpointStatus_ENDPOINT_STATUS_SERVING
			}
		case m.Status == cluster.StatusAlive && !m.Leaving && !m.Removed:
			st = kv1.EndpointStatus_ENDPOINT_STATUS_ALIVE
		}
		resp.Endpoints = append(resp.Endpoints, &kv1.Endpoint{NodeId: m.ID, Address: addr, Status: st, Voter: slices.Contains(voters, m.ID)})
	}
	// The caller's own tenant's key-use policy, for a gateway to check its callers by.
	if id, ok := transport.IdentityFromContext(ctx); ok && id.Kind == pki.KindService {
		if p, err := n.state.Policy(id.Tenant); err == nil {
			resp.Policy = policyToProto(id.Tenant, p)
		}
		// And its tenant's and service's quotas, which a gateway enforces on what it serves itself.
		if t, err := n.state.Tenant(id.Tenant); err == nil {
			resp.TenantQuota = quota.ToProto(limitsOf(t.Quota))
		}
		if s, err := n.state.Service(id.Tenant, id.Service); err == nil {
			resp.ServiceQuota = quota.ToProto(limitsOf(s.Quota))
		}
	}
	return resp, nil
}

// policyToProto is policyFromProto's inverse.
func policyToProto(tenant string, p policy.Policy) *kv1.Policy {
	out := &kv1.Policy{Tenant: tenant, Revision: p.Revision}
	for _, r := range p.Rules {
		pr := &kv1.PolicyRule{Caller: r.Caller, Service: r.Service}
		for _, op := range r.Operations {
			pr.Operations = append(pr.Operations, kv1.Operation(op))
		}
		out.Rules = append(out.Rules, pr)
	}
	return out
}
