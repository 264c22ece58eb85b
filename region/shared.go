// Shared tenants (docs/governance.md, "Multi-region tenants"): a tenant with a home region has one
// key hierarchy in every region of its residency. The home region's leader makes every L2 and L3
// version as for any tenant and publishes them sealed to governance (publishShared): each L2
// version sealed under L1 once for each other region (bound to that region, as every sealed L2),
// each L3 as the wrap-format blob the state holds (it names tenant, service and version, never a
// region). The other regions import what they lack from the TENANT_KEYS events governance sends
// them (prepareImport), and never make a key version of such a tenant themselves.

package region

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// notHome returns an error naming the home region if tenant is shared and this is not its home.
func (n *Node) notHome(tenant string) error {
	t, err := n.state.Tenant(tenant)
	if err != nil || !t.Shared() || t.Home == n.cfg.Region {
		return nil
	}
	return transport.Coded(codes.FailedPrecondition, fmt.Sprintf("region: tenant %s is shared by regions %v and its key versions are made in its home region %s, then reach this region sealed through governance: run the rotation against a node of %s", tenant, t.Regions, t.Home, t.Home))
}

// awaitKeys is the command a region other than the home records for a shared tenant's
// CREATE_TENANT, CREATE_SERVICE or SET_REGIONS: nothing to make here (a tenant not here yet stays
// absent until its keys arrive in a TENANT_KEYS event), only the region set to keep.
func awaitKeys(tenant string, regions []string) fsm.Command {
	return fsm.SetTenantRegions{Tenant: tenant, Regions: regions}
}

// prepareCreateShared handles a shared tenant's CREATE_TENANT: the home region creates it (with
// its home and regions), the others wait for its keys.
func (f *feed) prepareCreateShared(ctx context.Context, ev *kv1.RevocationEvent, tenant string) (fsm.Command, error, error) {
	home := ev.GetHomeRegion()
	if home != f.n.cfg.Region {
		return awaitKeys(tenant, ev.GetRegions()), nil, nil
	}
	cmd, refused, err := f.prepareCreateTenant(ctx, ev, tenant, ev.GetAnchorUri())
	if c, ok := cmd.(fsm.CreateTenant); ok {
		c.Home, c.Regions = home, slices.Clone(ev.GetRegions())
		cmd = c
	}
	return cmd, refused, err
}

// prepareSetRegions handles SET_REGIONS: a region removed wipes the tenant; one kept or added
// records the set (the home region then publishes the L2 versions sealed for the added ones).
func (f *feed) prepareSetRegions(ev *kv1.RevocationEvent, tenant string) (fsm.Command, error, error) {
	if slices.Contains(ev.GetRemovedRegions(), f.n.cfg.Region) {
		return fsm.RemoveTenant{Tenant: tenant, Reason: "region removed from the tenant's residency at governance"}, nil, nil
	}
	if t, err := f.n.state.Tenant(tenant); err == nil && !t.Shared() && ev.GetHomeRegion() != "" {
		// A tenant of this region made shared: it keeps its own versions; its home makes the
		// next ones (migrate.go).
		return fsm.SetTenantRegions{Tenant: tenant, Regions: slices.Clone(ev.GetRegions()), Home: ev.GetHomeRegion()}, nil, nil
	}
	return awaitKeys(tenant, ev.GetRegions()), nil, nil
}

// prepareImport turns a TENANT_KEYS event into the ResyncTenant that adds what this region lacks:
// the tenant itself if it is missing (with governance's policy and lock), every L2 version sealed
// for this region beyond its own, and every L3 version beyond each service's.
//
// The shared versions of a tenant made shared start above this region's own (migrate.go): the
// numbers between are filled with throwaway versions of this region's own (fill), L2 sealed
// through this region's anchor, L3 under its newest own L2.
func (f *feed) prepareImport(ctx context.Context, ev *kv1.RevocationEvent, tenant string) (fsm.Command, error, error) {
	n := f.n
	cmd := fsm.ResyncTenant{Tenant: tenant}
	home := ev.GetHomeRegion()
	if !validName(tenant) || !validName(home) {
		return cmd, &fsm.Error{Err: fsm.ErrInvalidName, Field: "tenant"}, nil
	}
	if home == n.cfg.Region {
		return awaitKeys(tenant, nil), nil, nil // the home has them: nothing to import (never sent)
	}
	var l2 []*kv1.SealedTenantKey
	for _, k := range ev.GetKeys().GetL2() {
		if k.GetRegion() == n.cfg.Region {
			l2 = append(l2, k)
		}
	}
	slices.SortFunc(l2, func(a, b *kv1.SealedTenantKey) int { return int(a.GetVersion()) - int(b.GetVersion()) })
	revokedSvc, revokedVer := map[string]bool{}, map[string]bool{}
	for _, r := range ev.GetRevoked() {
		if r.GetVersion() == 0 {
			revokedSvc[r.GetService()] = true
		} else {
			revokedVer[fmt.Sprintf("%s/%d", r.GetService(), r.GetVersion())] = true
		}
	}
	im := &fsm.KeyImport{}
	fill := &filler{f: f, ev: ev, tenant: tenant, uri: ev.GetAnchorUri()}
	t, err := n.state.Tenant(tenant)
	var have uint32
	switch {
	case errors.Is(err, fsm.ErrTenantNotFound):
		if len(l2) == 0 {
			// The home has not sealed this region's L2 yet (it was just added): a later
			// TENANT_KEYS carries it.
			return awaitKeys(tenant, nil), nil, nil
		}
		regions := slices.Sorted(slices.Values(append(slices.Clone(ev.GetRegions()), home)))
		cmd.Create = &fsm.CreateTenant{Tenant: tenant, Anchor: ev.GetAnchorUri(), Home: home, Regions: slices.Compact(regions)}
		if l2[0].GetVersion() == 1 {
			cmd.Create.SealedL2 = l2[0].GetSealed()
		} else {
			// A tenant made shared: its shared versions start above the regions' own, and this
			// region has none: its L2 v1 is a throwaway of its own.
			actx, cancel := context.WithTimeout(ctx, eventDeadline)
			k, sealed, refused, retry := f.newSealedTenantKey(actx, ev, tenant, ev.GetAnchorUri())
			cancel()
			if k == nil {
				return cmd, refused, retry
			}
			fill.top = k
			defer k.Destroy()
			cmd.Create.SealedL2 = sealed
		}
		have = 1
		if p := ev.GetPolicy(); p.GetRevision() > 0 {
			pol := policyFromProto(p)
			cmd.Policy = &pol
		}
		if ev.GetLocked() {
			cmd.Lock = resyncLockReason
		}
	case err != nil:
		return cmd, err, nil
	case t.Status == fsm.StatusRevoked:
		return cmd, &fsm.Error{Err: fsm.ErrRevoked, Tenant: tenant}, nil
	default:
		have = t.CurrentL2
		fill.uri, fill.topVersion = t.Anchor, t.CurrentL2
	}
	if len(l2) > 0 && l2[0].GetVersion() > have+1 {
		fill.topVersion = have
		for have+1 < l2[0].GetVersion() {
			sealed, refused, retry := fill.l2(ctx, have+1)
			if sealed == nil {
				return cmd, refused, retry
			}
			im.L2 = append(im.L2, fsm.ImportedL2{Version: have + 1, Sealed: sealed})
			have++
		}
	}
	if cmd.Create != nil && fill.topVersion == 0 {
		fill.topVersion = 1
	}
	defer fill.destroy()
	for _, k := range l2 {
		if k.GetVersion() == have+1 {
			im.L2 = append(im.L2, fsm.ImportedL2{Version: k.GetVersion(), Sealed: k.GetSealed()})
			have++
		}
	}
	l3 := slices.Clone(ev.GetKeys().GetL3())
	slices.SortFunc(l3, func(a, b *kv1.SealedServiceKey) int {
		if a.GetService() != b.GetService() {
			if a.GetService() < b.GetService() {
				return -1
			}
			return 1
		}
		return int(a.GetVersion()) - int(b.GetVersion())
	})
	current := map[string]uint32{}
	for _, k := range l3 {
		s := k.GetService()
		if !validName(s) || revokedSvc[s] {
			continue
		}
		cur, seen := current[s]
		if !seen && cmd.Create == nil {
			sv, err := n.state.Service(tenant, s)
			switch {
			case err == nil && sv.Status == fsm.StatusRevoked:
				revokedSvc[s] = true
				continue
			case err == nil:
				cur = sv.Current
			}
		}
		if !seen && k.GetVersion() > cur+1 && k.GetSealedBy() <= have {
			// The first shared version of a tenant made shared: this region's own fill the
			// numbers below it.
			for cur+1 < k.GetVersion() {
				sealed, err := fill.l3(ctx, s, cur+1)
				if err != nil {
					refused, retry := f.anchorTrouble(ev, tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: tenant})
					return cmd, refused, retry
				}
				im.L3 = append(im.L3, fsm.ImportedL3{Service: s, Version: cur + 1, SealedBy: fill.topVersion, Sealed: sealed,
					Revoked: revokedVer[fmt.Sprintf("%s/%d", s, cur+1)]})
				cur++
			}
		}
		if k.GetVersion() != cur+1 || k.GetSealedBy() > have {
			current[s] = cur
			continue
		}
		im.L3 = append(im.L3, fsm.ImportedL3{Service: s, Version: k.GetVersion(), SealedBy: k.GetSealedBy(), Sealed: k.GetSealed(),
			Revoked: revokedVer[fmt.Sprintf("%s/%d", s, k.GetVersion())]})
		current[s] = k.GetVersion()
	}
	if len(im.L2)+len(im.L3) > 0 {
		cmd.Import = im
	}
	if cmd.Create == nil && cmd.Import == nil {
		return awaitKeys(tenant, nil), nil, nil
	}
	if cmd.Create != nil && cmd.Import == nil {
		cmd.Import = im // empty: the tenant is still created as shared
	}
	return cmd, nil, nil
}

// sharedFingerprint digests what a home tenant publishes: if it is unchanged, so is the publish.
func sharedFingerprint(t fsm.Tenant, svcs []fsm.Service) [32]byte {
	h := sha256.New()
	h.Write([]byte(t.Anchor + "\x00"))
	for _, r := range t.Regions {
		h.Write([]byte(r + "\x00"))
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], t.CurrentL2)
	h.Write(b[:])
	for _, s := range svcs {
		h.Write([]byte(s.Name + "\x00"))
		binary.BigEndian.PutUint32(b[:], s.Current)
		h.Write(b[:])
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// publishShared publishes, for each shared tenant whose home is this region and whose hierarchy
// changed since the last publish of this term, the tenant's sealed hierarchy to governance. It
// runs in the feed goroutine after each report; a failure is logged and retried after the next.
func (f *feed) publishShared(ctx context.Context, client kv1.GovernanceServiceClient) {
	n := f.n
	applied := n.state.AppliedIndex()
	if applied == f.publishedAt {
		return
	}
	retry := f.reportFloors(ctx, client)
	for _, t := range n.state.ListTenants() {
		if t.Home != n.cfg.Region || t.Status != fsm.StatusActive || t.AnchorDeleted || len(t.Regions) < 2 {
			continue
		}
		svcs, _ := n.state.ListServices(t.Name)
		fp := sharedFingerprint(t, svcs)
		if f.published[t.Name] == fp {
			continue
		}
		if err := f.publishTenant(ctx, client, t, svcs); errors.Is(err, errFloorPending) {
			n.log.Debug("a shared tenant waits for its regions' own key versions before its shared ones are made", "tenant", t.Name)
			retry = true
			continue
		} else if err != nil {
			n.log.Warn("publishing a shared tenant's sealed keys to governance failed; retrying after the next feed message", "tenant", t.Name, "err", err)
			retry = true
			continue
		}
		f.published[t.Name] = fp
	}
	if !retry {
		f.publishedAt = applied
	}
}

func (f *feed) publishTenant(ctx context.Context, client kv1.GovernanceServiceClient, t fsm.Tenant, svcs []fsm.Service) error {
	n := f.n
	actx, cancel := context.WithTimeout(ctx, eventDeadline)
	defer cancel()
	ta, err := f.tenantAnchors(actx, client, t)
	if err != nil {
		return err
	}
	if len(ta.GetFloorPending()) > 0 {
		return errFloorPending
	}
	anchors, floor := ta.GetAnchors(), ta.GetFloor()
	if floor != nil {
		// A tenant made shared: its shared versions are numbered above every region's own.
		if t, err = f.raiseToFloor(actx, t, floor); err != nil {
			return err
		}
		if svcs, err = n.state.ListServices(t.Name); err != nil {
			return err
		}
	}
	keys := &kv1.TenantKeys{}
	for v := uint32(1); v <= t.CurrentL2; v++ {
		if !aboveFloor(floor, "", v, 0) {
			continue
		}
		for _, r := range t.Regions {
			if r == n.cfg.Region {
				continue
			}
			uri := anchors[r]
			if uri == "" {
				continue // the region has no pointer (the kill switch was lifted elsewhere only)
			}
			ck := sealKey{tenant: t.Name, region: r, version: v, anchor: uri}
			sealed := f.sealed[ck]
			if sealed == nil {
				p, err := n.anchors.get(actx, uri)
				if err != nil {
					return err
				}
				k, err := n.tenantKey(actx, t.Name, v)
				if err != nil {
					return err
				}
				sealed, err = anchor.SealTenantKey(actx, p, k, r)
				n.countAnchor("seal", err)
				if err != nil {
					return err
				}
				f.sealed[ck] = sealed
			}
			keys.L2 = append(keys.L2, &kv1.SealedTenantKey{Region: r, Version: v, Sealed: sealed, AnchorUri: uri})
		}
	}
	for _, s := range svcs {
		versions, _ := n.state.ListKeyVersions(t.Name, s.Name)
		for _, kv := range versions {
			if !aboveFloor(floor, s.Name, kv.Version, kv.SealedBy) {
				continue
			}
			keys.L3 = append(keys.L3, &kv1.SealedServiceKey{Service: s.Name, Version: kv.Version, SealedBy: kv.SealedBy, Sealed: kv.Sealed})
		}
	}
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	defer pcancel()
	resp, err := client.PublishTenantKeys(pctx, &kv1.PublishTenantKeysRequest{Region: n.cfg.Region, Tenant: t.Name, Keys: keys})
	if err != nil {
		return err
	}
	n.log.Info("published a shared tenant's sealed keys to governance", "tenant", t.Name, "l2", len(keys.L2), "l3", len(keys.L3), "cursor", resp.GetCursor())
	return nil
}

// tenantAnchors returns the anchor URI of each region of the shared tenant t, from governance
// (TenantAnchors: a region may have a pointer of its own, cloud KMS keys being regional). A
// governance of an older release, which has no per-region anchors, answers Unimplemented: every
// region then uses this region's pointer.
func (f *feed) tenantAnchors(ctx context.Context, client kv1.GovernanceServiceClient, t fsm.Tenant) (*kv1.TenantAnchorsResponse, error) {
	resp, err := client.TenantAnchors(ctx, &kv1.TenantAnchorsRequest{Region: f.n.cfg.Region, Tenant: t.Name})
	if status.Code(err) == codes.Unimplemented {
		out := &kv1.TenantAnchorsResponse{Anchors: map[string]string{}}
		for _, r := range t.Regions {
			out.Anchors[r] = t.Anchor
		}
		return out, nil
	}
	return resp, err
}

// sealKey names an L2 version sealed for another region under one anchor URI.
type sealKey struct {
	tenant, region, anchor string
	version                uint32
}

// policyNone clears a removed tenant's compiled policy.
var policyNone = policy.Policy{}
