// Shared tenants (docs/governance.md, "Multi-region tenants"): the region set, and the sealed key
// hierarchy the home region publishes and governance forwards without being able to open it.

package governance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TenantKeysProto returns a sealed hierarchy as the API sends it.
func TenantKeysProto(k *govfsm.TenantKeys) *kv1.TenantKeys {
	out := &kv1.TenantKeys{}
	for _, b := range k.L2 {
		out.L2 = append(out.L2, &kv1.SealedTenantKey{Region: b.Region, Version: b.Version, Sealed: b.Sealed})
	}
	for _, b := range k.L3 {
		out.L3 = append(out.L3, &kv1.SealedServiceKey{Service: b.Service, Version: b.Version, SealedBy: b.SealedBy, Sealed: b.Sealed})
	}
	return out
}

// eventForRegion is e as the feed sends it to region: of a TENANT_KEYS event's sealed L2 blobs only
// region's own (each is bound to its region by the anchor; no region receives another's).
//
// A tenant with per-region anchors: the event's anchor_uri is the region's own pointer (the
// tenant's anchor if it has none), and no region learns another's pointer this way (the home
// region asks TenantAnchors when it seals for the others).
func eventForRegion(e *govfsm.Event, region string) *kv1.RevocationEvent {
	pe := EventProto(e)
	if u, ok := e.RegionAnchors[region]; ok {
		pe.AnchorUri = u
	}
	if pe.GetKeys() != nil {
		pe.Keys.L2 = slices.DeleteFunc(pe.Keys.L2, func(b *kv1.SealedTenantKey) bool { return b.GetRegion() != region })
	}
	return pe
}

// SetTenantRegions replaces a shared tenant's region set and, with wait, returns once every old and
// new region has reported the SET_REGIONS event (the removed ones have wiped the tenant).
func (s *api) SetTenantRegions(ctx context.Context, req *kv1.SetTenantRegionsRequest) (*kv1.SetTenantRegionsResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	regions, err := normRegions(req.GetRegions(), s.n.cfg.Regions)
	if err != nil {
		return nil, err
	}
	if t, err := s.n.fsm.Tenant(req.GetTenant()); err == nil && t.Home != "" && !slices.Contains(regions, t.Home) {
		return nil, invalid(fmt.Sprintf("the region set leaves out the tenant's home region %s, which makes its keys: keep %s in -regions", t.Home, t.Home))
	}
	home := req.GetHomeRegion()
	if home != "" {
		if err := checkName("home_region", home); err != nil {
			return nil, err
		}
		t, err := s.n.fsm.Tenant(req.GetTenant())
		switch {
		case err != nil:
			return nil, err
		case t.Home != "" && t.Home != home:
			return nil, invalid(fmt.Sprintf("the tenant's home region is %s and does not move: leave out -home", t.Home))
		case t.Home == "" && !slices.Equal(regions, t.Regions):
			return nil, invalid(fmt.Sprintf("making a tenant shared keeps its regions: give -regions %s (change them afterwards)", strings.Join(t.Regions, ",")))
		case !slices.Contains(regions, home):
			return nil, invalid("home_region " + home + " is not one of the tenant's regions")
		}
	}
	// Adding a region or choosing a home needs the owner's consent; removing regions does not. A
	// tenant this node has not applied yet (a follower just behind its creation) is left to the
	// state machine, which checks the same.
	t, terr := s.n.fsm.Tenant(req.GetTenant())
	if terr == nil && (home != "" || slices.ContainsFunc(regions, func(r string) bool { return !slices.Contains(t.Regions, r) })) {
		homeFlag := ""
		if home != "" {
			homeFlag = " -home " + home
		}
		st := owner.Statement{Tenant: req.GetTenant(), Op: owner.OpSetRegions, Regions: strings.Join(regions, ","), Region: home, RequestID: req.GetRequestId()}
		how := fmt.Sprintf("krypton owner consent -key <owner.key> -op set-regions -regions %s%s -request-id <id> -out consent.jws %s", strings.Join(regions, ","), homeFlag, req.GetTenant())
		if err := s.checkConsent(ctx, req.GetConsent(), st, how, false); err != nil {
			return nil, err
		}
	} else if terr == nil && req.GetConsent() != "" {
		return nil, invalid("this change adds no region and sets no home: it takes no consent")
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetRegions, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Regions: regions, Home: home,
		Consent: req.GetConsent(), OwnerRule: true})
	if err != nil {
		return nil, err
	}
	out := &kv1.SetTenantRegionsResponse{Tenant: TenantProto(r.Tenant), Event: operatorEvent(r.Event)}
	if req.GetWait() && r.Event != nil {
		all := slices.Sorted(slices.Values(append(slices.Clone(r.Event.Regions), r.Event.Removed...)))
		if out.Regions, err = s.n.waitRegions(ctx, r.Event.Cursor, slices.Compact(all)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PublishTenantKeys takes the sealed hierarchy from a node of the tenant's home region.
func (s *api) PublishTenantKeys(ctx context.Context, req *kv1.PublishTenantKeysRequest) (*kv1.PublishTenantKeysResponse, error) {
	if err := checkName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := s.regionVoter(ctx, req.GetRegion()); err != nil {
		return nil, err
	}
	if f := req.GetFloor(); f != nil {
		if !s.n.fsm.FloorWanted(req.GetTenant(), req.GetRegion()) {
			return &kv1.PublishTenantKeysResponse{}, nil // reported already, or never needed: no write
		}
		for name := range f.GetServices() {
			if err := checkName("floor service", name); err != nil {
				return nil, err
			}
		}
		if _, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpPublishKeys, RequestID: publishID(req), Tenant: req.GetTenant(), Region: req.GetRegion(),
			Floor: &govfsm.Floor{L2: f.GetL2(), Services: f.GetServices()}}); err != nil {
			return nil, err
		}
		return &kv1.PublishTenantKeysResponse{}, nil
	}
	if err := s.homeOf(req.GetTenant(), req.GetRegion()); err != nil {
		return nil, err
	}
	k := req.GetKeys()
	keys := &govfsm.TenantKeys{}
	for _, b := range k.GetL2() {
		if checkName("l2 region", b.GetRegion()) != nil || b.GetVersion() == 0 || len(b.GetSealed()) == 0 {
			return nil, invalid("keys: a sealed L2 needs a region, a version and a blob")
		}
		keys.L2 = append(keys.L2, govfsm.SealedL2{Region: b.GetRegion(), Version: b.GetVersion(), Sealed: b.GetSealed(), Anchor: b.GetAnchorUri()})
	}
	for _, b := range k.GetL3() {
		if checkName("l3 service", b.GetService()) != nil || b.GetVersion() == 0 || b.GetSealedBy() == 0 || len(b.GetSealed()) == 0 {
			return nil, invalid("keys: a sealed L3 needs a service, a version, its L2 version and a blob")
		}
		keys.L3 = append(keys.L3, govfsm.SealedL3{Service: b.GetService(), Version: b.GetVersion(), SealedBy: b.GetSealedBy(), Sealed: b.GetSealed()})
	}
	// The request id is the content's: a publish repeated after a lost answer is the same request.
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpPublishKeys, RequestID: publishID(req), Tenant: req.GetTenant(), Region: req.GetRegion(), Keys: keys})
	if err != nil {
		return nil, err
	}
	out := &kv1.PublishTenantKeysResponse{}
	if r.Event != nil {
		out.Cursor = r.Event.Cursor
	}
	return out, nil
}

// publishID names a publish by its content (deterministic encoding): the same hierarchy published
// twice is one request, answered once.
func publishID(req *kv1.PublishTenantKeysRequest) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	sum := sha256.Sum256(b)
	return "publish-keys-" + hex.EncodeToString(sum[:16])
}

// TenantAnchors answers the home region's leader, which seals L2 under each region's anchor:
// the anchor URI of every region of the tenant. Only a node of the tenant's home region may ask.
func (s *api) TenantAnchors(ctx context.Context, req *kv1.TenantAnchorsRequest) (*kv1.TenantAnchorsResponse, error) {
	if err := checkName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := s.regionVoter(ctx, req.GetRegion()); err != nil {
		return nil, err
	}
	if err := s.homeOf(req.GetTenant(), req.GetRegion()); err != nil {
		return nil, err
	}
	_, anchors, floor, pending, err := s.n.fsm.TenantAnchors(req.GetTenant())
	if err != nil {
		return nil, err
	}
	out := &kv1.TenantAnchorsResponse{Anchors: anchors, FloorPending: pending}
	if floor != nil {
		out.Floor = &kv1.TenantFloor{L2: floor.L2, Services: floor.Services}
	}
	return out, nil
}

// regionVoter refuses a caller that is not a node of region or, once governance knows region's
// Raft configuration, not one of its voters (as the feed and reports do: "Who may report for a
// region"): a node removed from the home region neither learns a tenant's anchors nor plants
// sealed keys that every other region would import. Checked after a barrier, against every
// configuration governance has acknowledged.
func (s *api) regionVoter(ctx context.Context, region string) error {
	if err := regionNode(ctx, region); err != nil {
		return err
	}
	if err := s.n.barrier(ctx); err != nil {
		return err
	}
	id, _ := transport.IdentityFromContext(ctx)
	if !s.n.fsm.MayFollow(region, id.NodeID) {
		return govfsm.ErrNotRegionVoter
	}
	return nil
}

// homeOf refuses, before the log, a region that is not tenant's home: ErrNotHome, for an unknown
// or per-region tenant too, so that a node of a region outside the tenant's residency learns
// nothing of it, not even whether it exists.
func (s *api) homeOf(tenant, region string) error {
	if t, err := s.n.fsm.Tenant(tenant); err != nil || t.Home == "" || t.Home != region {
		return govfsm.ErrNotHome
	}
	return nil
}

// checkRegionAnchors checks per-region anchors: each region one of regions, each URI usable.
func checkRegionAnchors(m map[string]string, regions []string, allowDev bool) error {
	for r, u := range m {
		if err := checkName("region_anchors region", r); err != nil {
			return err
		}
		if !slices.Contains(regions, r) {
			return invalid("region_anchors names region " + r + ", which is not one of the tenant's regions: name it in -regions too")
		}
		if err := checkAnchor(u, allowDev); err != nil {
			return err
		}
	}
	return nil
}
