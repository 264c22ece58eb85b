// The API's Revoke RPC and its dry run, the blast radius.

package governance

import (
	"context"
	"strconv"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func blastProto(b *govfsm.BlastRadius) *kv1.BlastRadius {
	if b == nil {
		return nil
	}
	out := &kv1.BlastRadius{Tenants: b.Tenants, Regions: b.Regions}
	for _, k := range b.Services {
		out.Services = append(out.Services, &kv1.KeyRef{Tenant: k.Tenant, Service: k.Service})
	}
	for _, k := range b.KeyVersions {
		out.KeyVersions = append(out.KeyVersions, &kv1.KeyRef{Tenant: k.Tenant, Service: k.Service, Version: k.Version})
	}
	return out
}

func (s *api) Revoke(ctx context.Context, req *kv1.RevokeRequest) (*kv1.RevokeResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	t := req.GetTarget()
	if err := checkScope(t); err != nil {
		return nil, err
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	detail := func(d map[string]string) map[string]string {
		if d == nil {
			d = map[string]string{}
		}
		d["scope"] = scopeString(t)
		return d
	}
	if req.GetDryRun() {
		if err := s.n.barrier(ctx); err != nil {
			return nil, err
		}
		b, err := s.n.fsm.Blast(t.GetTenant(), t.GetService(), t.GetVersion())
		if err != nil {
			return nil, err
		}
		s.n.record(ctx, audit.Event{Kind: AuditRevokeDryRun, Tenant: t.GetTenant(), Service: t.GetService(), Version: t.GetVersion(),
			RequestID: req.GetRequestId(), Reason: req.GetReason(), Detail: detail(nil)})
		return &kv1.RevokeResponse{BlastRadius: blastProto(b)}, nil
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := requireReason(req.GetReason()); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpRevoke, RequestID: req.GetRequestId(), Tenant: t.GetTenant(), Service: t.GetService(), Version: t.GetVersion(), Reason: req.GetReason()})
	if err != nil {
		return nil, err
	}
	out := &kv1.RevokeResponse{Event: operatorEvent(r.Event)}
	// The blast radius from this node's state; it may lag the leader's by the entry just committed,
	// which does not change what it covers.
	if b, err := s.n.fsm.Blast(t.GetTenant(), t.GetService(), t.GetVersion()); err == nil {
		out.BlastRadius = blastProto(b)
	}
	if req.GetWait() {
		if out.Regions, err = s.n.waitRegions(ctx, r.Event.Cursor, r.Tenant.Regions); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func scopeString(t *kv1.KeyScope) string {
	s := t.GetTenant()
	if t.GetService() != "" {
		s += "/" + t.GetService()
	}
	if t.GetVersion() != 0 {
		s += "/" + strconv.FormatUint(uint64(t.GetVersion()), 10)
	}
	return s
}
