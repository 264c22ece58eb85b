package governance

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/governance/govfsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The state machine's values as the API sends them (package govfsm links no API code).

// EventProto returns the event as the API sends it.
func EventProto(e *govfsm.Event) *kv1.RevocationEvent {
	if e == nil {
		return nil
	}
	out := &kv1.RevocationEvent{
		Cursor:    e.Cursor,
		EventId:   e.ID,
		Kind:      kv1.EventKind(e.Kind),
		Target:    &kv1.KeyScope{Tenant: e.Tenant, Service: e.Service, Version: e.Version},
		Time:      ts(e.Time),
		Reason:    e.Reason,
		AnchorUri: e.AnchorURI,
		Regions:   append([]string(nil), e.Regions...),
		Services:  append([]string(nil), e.Services...),
		Locked:    e.Locked,

		OwnerKeyFingerprint: e.OwnerKey,
		HomeRegion:          e.Home,
		RemovedRegions:      append([]string(nil), e.Removed...),
	}
	if e.Keys != nil {
		out.Keys = TenantKeysProto(e.Keys)
	}
	for _, k := range e.Revoked {
		out.Revoked = append(out.Revoked, &kv1.KeyRef{Tenant: k.Tenant, Service: k.Service, Version: k.Version})
	}
	if e.Policy != nil {
		out.Policy = policyProto(e.Policy, e.Tenant)
	}
	out.Quota = quotaProto(e.Quota)
	for _, sq := range e.ServiceQuotas {
		out.ServiceQuotas = append(out.ServiceQuotas, &kv1.ServiceQuota{Service: sq.Service, Quota: quotaProto(&sq.Quota)})
	}
	return out
}

// quotaProto is a quota as the API sends it (nil: none).
func quotaProto(q *govfsm.Quota) *kv1.Quota {
	if q == nil || *q == (govfsm.Quota{}) {
		return nil
	}
	return &kv1.Quota{Rate: q.Rate, Burst: q.Burst, Concurrency: q.Concurrency}
}

// policyProto returns the policy of tenant as the API sends it.
func policyProto(p *govfsm.Policy, tenant string) *kv1.Policy {
	out := &kv1.Policy{Tenant: tenant, Revision: p.Revision}
	if p.UpdatedAt != 0 {
		out.UpdatedAt = ts(p.UpdatedAt)
	}
	for _, r := range p.Rules {
		pr := &kv1.PolicyRule{Caller: r.Caller, Service: r.Service}
		for _, op := range r.Operations {
			pr.Operations = append(pr.Operations, kv1.Operation(op))
		}
		out.Rules = append(out.Rules, pr)
	}
	return out
}

// tenantState is the tenant's state as the API reports it.
func tenantState(t *govfsm.Tenant) kv1.TenantState {
	switch {
	case t.Revoked:
		return kv1.TenantState_TENANT_STATE_REVOKED
	case t.Locked || t.AnchorDeletedAt != 0:
		return kv1.TenantState_TENANT_STATE_LOCKED
	}
	return kv1.TenantState_TENANT_STATE_ACTIVE
}

// TenantProto returns the tenant as the API sends it to operators: the anchor URI as anchor.Redact
// shows it (a pkcs11 pin-value as "xxxxx", also in a URI stored before pin-value was refused). The
// feed's events carry the URI as set, for the regions.
func TenantProto(t *govfsm.Tenant) *kv1.GovernanceTenant {
	out := &kv1.GovernanceTenant{
		Name:      t.Name,
		AnchorUri: anchor.Redact(t.AnchorURI),
		Regions:   append([]string(nil), t.Regions...),
		State:     tenantState(t),
		CreatedAt: ts(t.CreatedAt),
		Cursor:    t.Cursor,

		OwnerKeyFingerprint: t.OwnerFingerprint(),
		Quota:               quotaProto(t.Quota),
		HomeRegion:          t.Home,
		FloorPending:        append([]string(nil), t.FloorPending...),
	}
	if t.AnchorDeletedAt != 0 {
		out.AnchorDeletedAt = ts(t.AnchorDeletedAt)
	}
	for r, u := range t.RegionAnchors {
		if out.RegionAnchors == nil {
			out.RegionAnchors = map[string]string{}
		}
		out.RegionAnchors[r] = anchor.Redact(u) // empty while the kill switch is on
	}
	return out
}

// serviceProto returns the service as the API sends it.
func serviceProto(s *govfsm.Service) *kv1.GovernanceServiceInfo {
	return &kv1.GovernanceServiceInfo{Tenant: s.Tenant, Name: s.Name, CreatedAt: ts(s.CreatedAt), Revoked: s.Revoked, Cursor: s.Cursor, Quota: quotaProto(s.Quota)}
}

// reportProto returns the report as the API sends it.
func reportProto(r *govfsm.RegionReport) *kv1.RegionCursor {
	out := &kv1.RegionCursor{Region: r.Region, AppliedCursor: r.Cursor, ConfigurationIndex: r.ConfigIndex, Voters: r.Voters}
	if r.ReportedAt != 0 {
		out.ReportedAt = ts(r.ReportedAt)
	}
	return out
}

func ts(ns int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, ns).UTC()) }
