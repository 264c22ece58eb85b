// The API's tenant and service RPCs: create, read and list, policy, lock and unlock, resync.

package governance

import (
	"context"
	"fmt"
	"slices"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func (s *api) CreateTenant(ctx context.Context, req *kv1.GovernanceCreateTenantRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := checkAnchor(req.GetAnchorUri(), s.n.cfg.AllowDevAnchor); err != nil {
		return nil, err
	}
	regions, err := normRegions(req.GetRegions(), s.n.cfg.Regions)
	if err != nil {
		return nil, err
	}
	if k := req.GetOwnerPublicKey(); k != "" {
		if err := checkOwnerKey(k); err != nil {
			return nil, err
		}
	}
	home := req.GetHomeRegion()
	if home != "" {
		if err := checkName("home_region", home); err != nil {
			return nil, err
		}
		if !slices.Contains(regions, home) {
			return nil, invalid("home_region " + home + " is not one of the tenant's regions: name it in -regions too")
		}
	}
	if err := checkRegionAnchors(req.GetRegionAnchors(), regions, s.n.cfg.AllowDevAnchor); err != nil {
		return nil, err
	}
	var ra map[string]string
	if len(req.GetRegionAnchors()) > 0 {
		ra = req.GetRegionAnchors()
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpCreateTenant, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), AnchorURI: req.GetAnchorUri(), Regions: regions, OwnerKey: req.GetOwnerPublicKey(), Home: home, RegionAnchors: ra})
	if err != nil {
		return nil, err
	}
	return TenantProto(r.Tenant), nil
}

func (s *api) GetTenant(ctx context.Context, req *kv1.GetTenantRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	t, err := s.n.fsm.Tenant(req.GetTenant())
	if err != nil {
		return nil, err
	}
	return TenantProto(t), nil
}

func (s *api) ListTenants(ctx context.Context, req *kv1.GovernanceListTenantsRequest) (*kv1.GovernanceListTenantsResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	size, after, err := transport.Page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	ts := s.n.fsm.Tenants(after, size+1)
	out := &kv1.GovernanceListTenantsResponse{}
	if len(ts) > size {
		ts = ts[:size]
		out.NextPageToken = transport.NextPageToken(ts[size-1].Name)
	}
	for _, t := range ts {
		out.Tenants = append(out.Tenants, TenantProto(t))
	}
	return out, nil
}

func (s *api) CreateService(ctx context.Context, req *kv1.GovernanceCreateServiceRequest) (*kv1.GovernanceServiceInfo, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := checkName("service", req.GetService()); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpCreateService, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Service: req.GetService()})
	if err != nil {
		return nil, err
	}
	if r.Service == nil {
		return nil, govfsm.ErrServiceNotFound
	}
	return serviceProto(r.Service), nil
}

func (s *api) ListServices(ctx context.Context, req *kv1.GovernanceListServicesRequest) (*kv1.GovernanceListServicesResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	size, after, err := transport.Page(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	svcs, err := s.n.fsm.Services(req.GetTenant(), after, size+1)
	if err != nil {
		return nil, err
	}
	out := &kv1.GovernanceListServicesResponse{}
	if len(svcs) > size {
		svcs = svcs[:size]
		out.NextPageToken = transport.NextPageToken(svcs[size-1].Name)
	}
	for _, sv := range svcs {
		out.Services = append(out.Services, serviceProto(sv))
	}
	return out, nil
}

func (s *api) SetPolicy(ctx context.Context, req *kv1.SetPolicyRequest) (*kv1.Policy, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if req.GetPolicy() == nil {
		return nil, invalid("policy is required")
	}
	tenant := req.GetPolicy().GetTenant()
	if err := checkName("policy.tenant", tenant); err != nil {
		return nil, err
	}
	rules, err := rulesFromProto(req.GetPolicy().GetRules())
	if err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetPolicy, RequestID: req.GetRequestId(), Tenant: tenant, Rules: rules, ExpectedRevision: req.GetExpectedRevision()})
	if err != nil {
		return nil, err
	}
	return policyProto(r.Policy, tenant), nil
}

// SetQuota sets a tenant's or a service's quota in every region of the tenant (a SET_QUOTA event).
func (s *api) SetQuota(ctx context.Context, req *kv1.GovernanceSetQuotaRequest) (*kv1.GovernanceSetQuotaResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if req.GetService() != "" {
		if err := checkName("service", req.GetService()); err != nil {
			return nil, err
		}
	}
	var q *govfsm.Quota
	if p := req.GetQuota(); p != nil && (p.GetRate() != 0 || p.GetBurst() != 0 || p.GetConcurrency() != 0) {
		q = &govfsm.Quota{Rate: p.GetRate(), Burst: p.GetBurst(), Concurrency: p.GetConcurrency()}
	}
	if err := checkQuota(q); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetQuota, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Service: req.GetService(), Quota: q})
	if err != nil {
		return nil, err
	}
	return &kv1.GovernanceSetQuotaResponse{Tenant: req.GetTenant(), Service: req.GetService(), Quota: quotaProto(r.Event.Quota), Cursor: r.Event.Cursor}, nil
}

func quotaText(q *govfsm.Quota) string {
	if q == nil {
		return "none"
	}
	return fmt.Sprintf("rate=%d burst=%d concurrency=%d", q.Rate, q.Burst, q.Concurrency)
}

func (s *api) GetPolicy(ctx context.Context, req *kv1.GetPolicyRequest) (*kv1.Policy, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	p, err := s.n.fsm.Policy(req.GetTenant())
	if err != nil {
		return nil, err
	}
	return policyProto(p, req.GetTenant()), nil
}

func (s *api) LockTenant(ctx context.Context, req *kv1.GovernanceLockTenantRequest) (*kv1.GovernanceTenant, error) {
	return s.lock(ctx, govfsm.OpLockTenant, req.GetRequestId(), req.GetTenant(), req.GetReason())
}

func (s *api) UnlockTenant(ctx context.Context, req *kv1.GovernanceUnlockTenantRequest) (*kv1.GovernanceTenant, error) {
	return s.lock(ctx, govfsm.OpUnlockTenant, req.GetRequestId(), req.GetTenant(), "")
}

func (s *api) lock(ctx context.Context, op govfsm.Op, rid, tenant, reason string) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(rid); err != nil {
		return nil, err
	}
	if err := checkName("tenant", tenant); err != nil {
		return nil, err
	}
	check := checkReason
	if op == govfsm.OpLockTenant {
		check = requireReason
	}
	if err := check(reason); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: op, RequestID: rid, Tenant: tenant, Reason: reason})
	if err != nil {
		return nil, err
	}
	return TenantProto(r.Tenant), nil
}

// ResyncTenant emits a RESYNC_TENANT event for the named regions (all the tenant's if none), and
// with wait returns once they have reported it.
func (s *api) ResyncTenant(ctx context.Context, req *kv1.ResyncTenantRequest) (*kv1.ResyncTenantResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	var regions []string
	if len(req.GetRegions()) > 0 {
		var err error
		// Whether they are the tenant's is the state machine's to say.
		if regions, err = normRegions(req.GetRegions(), nil); err != nil {
			return nil, err
		}
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpResyncTenant, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Regions: regions})
	if err != nil {
		return nil, err
	}
	out := &kv1.ResyncTenantResponse{Event: operatorEvent(r.Event)}
	if req.GetWait() {
		if out.Regions, err = s.n.waitRegions(ctx, r.Event.Cursor, r.Event.Regions); err != nil {
			return nil, err
		}
	}
	return out, nil
}
