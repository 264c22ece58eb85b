// Per-region tenants made shared (docs/governance.md, "Making a per-region tenant shared"). Every
// region of such a tenant numbered its own key versions from 1, so a key ID (tenant, service,
// version) names a different key in each region. Each region keeps its own versions, so that its
// old blobs keep opening; the shared versions are numbered above every region's own:
//
//   - every region but the home, once it has recorded the tenant shared (it makes no version of
//     it from then on), reports its own newest versions to governance (reportFloors);
//   - once all have, the home region rotates L2 and each service past the highest (raiseToFloor)
//     and publishes only the versions above (aboveFloor);
//   - each other region imports them, first making throwaway versions of its own for the numbers
//     between its newest and the first shared one (prepareImport's fill), since an import takes
//     contiguous versions.

package region

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// errFloorPending: a region of a tenant made shared has not reported its own versions yet; the
// home region publishes nothing of the tenant before it has (retried after the next feed message).
var errFloorPending = errors.New("region: waiting for every region of the tenant made shared to report its own key versions")

// reportFloors reports, once per feed session, this region's own newest versions of each shared
// tenant whose home is elsewhere. Governance keeps them only for a tenant made shared that still
// waits for this region (for any other it answers without a write). It returns whether one failed.
func (f *feed) reportFloors(ctx context.Context, client kv1.GovernanceServiceClient) bool {
	n := f.n
	failed := false
	for _, t := range n.state.ListTenants() {
		if !t.Shared() || t.Home == n.cfg.Region || f.floored[t.Name] {
			continue
		}
		floor := &kv1.TenantFloor{L2: t.CurrentL2, Services: map[string]uint32{}}
		svcs, _ := n.state.ListServices(t.Name)
		for _, s := range svcs {
			floor.Services[s.Name] = s.Current
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := client.PublishTenantKeys(pctx, &kv1.PublishTenantKeysRequest{Region: n.cfg.Region, Tenant: t.Name, Floor: floor})
		cancel()
		if err != nil {
			n.log.Warn("reporting a shared tenant's own key versions to governance failed; retrying after the next feed message", "tenant", t.Name, "err", err)
			failed = true
			continue
		}
		f.floored[t.Name] = true
	}
	return failed
}

// raiseToFloor makes the home region's versions of a tenant made shared exceed floor: L2 is
// rotated past floor.L2, then every service whose current version is at or below its floor, or is
// sealed under an L2 at or below floor.L2, is rotated until neither holds. Each step has a request
// id of its own (the tenant, the key and the version it makes), so a retry after a failure, by
// this leader or the next, makes no version twice. It returns the tenant as it is then.
func (f *feed) raiseToFloor(ctx context.Context, t fsm.Tenant, floor *kv1.TenantFloor) (fsm.Tenant, error) {
	n := f.n
	for t.CurrentL2 <= floor.GetL2() {
		v := t.CurrentL2 + 1
		p, err := n.anchors.get(ctx, t.Anchor)
		if err != nil {
			return t, err
		}
		l2, err := wrap.NewTenantKey(wrap.KeyID{Tenant: t.Name, Version: v})
		if err != nil {
			return t, err
		}
		sealed, err := anchor.SealTenantKey(ctx, p, l2, n.cfg.Region)
		l2.Destroy() // unsealed again on first use, through the anchor
		n.countAnchor("seal", err)
		if err != nil {
			return t, err
		}
		if _, err := n.apply(ctx, fmt.Sprintf("share-%s-l2-%d", t.Name, v), fsm.RotateTenantKey{Tenant: t.Name, Version: v, SealedL2: sealed}); err != nil {
			return t, err
		}
		if t, err = n.state.Tenant(t.Name); err != nil {
			return t, err
		}
	}
	svcs, err := n.state.ListServices(t.Name)
	if err != nil {
		return t, err
	}
	for _, s := range svcs {
		if s.Status == fsm.StatusRevoked {
			continue
		}
		for {
			kv, err := n.state.KeyVersion(t.Name, s.Name, s.Current)
			if err != nil {
				return t, err
			}
			if s.Current > floor.GetServices()[s.Name] && kv.SealedBy > floor.GetL2() {
				break
			}
			if s, err = n.RotateKey(ctx, fmt.Sprintf("share-%s-%s-%d", t.Name, s.Name, s.Current+1), t.Name, s.Name); err != nil {
				return t, err
			}
		}
	}
	return n.state.Tenant(t.Name)
}

// aboveFloor reports whether a version the home region holds is a shared one: made after the
// tenant was made shared, above every region's own (always, for a tenant shared from its start).
func aboveFloor(floor *kv1.TenantFloor, service string, version, sealedBy uint32) bool {
	if floor == nil {
		return true
	}
	if service == "" {
		return version > floor.GetL2()
	}
	return version > floor.GetServices()[service] && sealedBy > floor.GetL2()
}

// filler makes the throwaway versions of this region's own that fill the numbers below the first
// shared version of a tenant made shared (prepareImport). L2 versions are sealed through this
// region's anchor (uri); L3 versions under top, this region's newest own L2 (version topVersion).
type filler struct {
	f          *feed
	ev         *kv1.RevocationEvent
	tenant     string
	uri        string
	top        *wrap.TenantKey // owned here when made here (destroy); nil: the keyring's
	topVersion uint32
	made       bool // top was made here by l2
}

// l2 makes L2 version v of this region's own and seals it through the anchor; it becomes top.
func (fl *filler) l2(ctx context.Context, v uint32) (sealed []byte, refused, retry error) {
	n := fl.f.n
	actx, cancel := context.WithTimeout(ctx, eventDeadline)
	defer cancel()
	p, err := n.probedAnchor(actx, fl.uri)
	if err != nil {
		refused, retry := fl.f.anchorTrouble(fl.ev, fl.tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: fl.tenant})
		return nil, refused, retry
	}
	k, err := wrap.NewTenantKey(wrap.KeyID{Tenant: fl.tenant, Version: v})
	if err != nil {
		return nil, nil, err
	}
	sealed, err = anchor.SealTenantKey(actx, p, k, n.cfg.Region)
	n.countAnchor("seal", err)
	if err != nil {
		k.Destroy()
		refused, retry := fl.f.anchorTrouble(fl.ev, fl.tenant, err, &fsm.Error{Err: fsm.ErrAnchorUnavailable, Tenant: fl.tenant})
		return nil, refused, retry
	}
	if fl.made && fl.top != nil {
		fl.top.Destroy()
	}
	fl.top, fl.topVersion, fl.made = k, v, true
	return sealed, nil, nil
}

// l3 makes version v of service of this region's own, sealed under top.
func (fl *filler) l3(ctx context.Context, service string, v uint32) ([]byte, error) {
	if fl.top == nil {
		actx, cancel := context.WithTimeout(ctx, eventDeadline)
		defer cancel()
		k, err := fl.f.n.tenantKey(actx, fl.tenant, fl.topVersion)
		if err != nil {
			return nil, err
		}
		fl.top = k // the keyring's: not destroyed here
	}
	l3, err := wrap.NewServiceKey(wrap.KeyID{Tenant: fl.tenant, Service: service, Version: v})
	if err != nil {
		return nil, err
	}
	defer l3.Destroy() // opened again from its sealed blob on first use
	return fl.top.SealServiceKey(l3)
}

// destroy wipes the L2 made here.
func (fl *filler) destroy() {
	if fl.made && fl.top != nil {
		fl.top.Destroy()
	}
}
