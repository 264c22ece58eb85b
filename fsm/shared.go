// Shared tenants: one key hierarchy across the regions of a tenant's residency (docs/governance.md,
// "Multi-region tenants"). The home region makes every L2 and L3 version as for any tenant; the
// other regions import them sealed (ResyncTenant.Import), never make their own, and a region
// taken out of the residency removes the tenant whole (RemoveTenant).

package fsm

import (
	"slices"
)

// maxImport bounds the versions one KeyImport adds.
const maxImport = 100000

// checkRegions checks a shared tenant's region set: 1 to 64 valid names, sorted, no repeats, and
// home (if given) one of them.
func checkRegions(regions []string, home string) error {
	if len(regions) == 0 || len(regions) > 64 || !slices.IsSorted(regions) ||
		len(slices.Compact(slices.Clone(regions))) != len(regions) {
		return invalid(ErrInvalidCommand, "regions")
	}
	for _, r := range regions {
		if !validName(r) {
			return invalid(ErrInvalidName, "regions")
		}
	}
	if home != "" && !slices.Contains(regions, home) {
		return invalid(ErrInvalidCommand, "home")
	}
	return nil
}

// checkImport checks c.Import against the tenant t (nil when c.Create makes it): the L2 versions
// continue the tenant's, each service's L3 versions continue the service's (a new service starts
// at 1), each sealed by an L2 version the tenant will have. Nothing is changed.
func (a *applier) checkImport(c ResyncTenant, t *tenantNode) error {
	im := c.Import
	if len(im.L2)+len(im.L3) > maxImport {
		return invalid(ErrInvalidCommand, "import")
	}
	var l2 uint32 = 1 // with Create
	if t != nil {
		if !t.t.Shared() {
			// A tenant of this region alone has its own keys: versions from elsewhere would
			// collide with them.
			return &Error{Err: ErrInvalidCommand, Tenant: c.Tenant, Field: "import"}
		}
		l2 = t.t.CurrentL2
	} else if c.Create == nil || c.Create.Home == "" {
		return invalid(ErrInvalidCommand, "import")
	}
	for _, k := range im.L2 {
		if k.Version != l2+1 {
			return &Error{Err: ErrBadVersion, Tenant: c.Tenant, Version: k.Version, Field: "import-l2"}
		}
		if err := checkBlob(k.Sealed, "import-l2"); err != nil {
			return err
		}
		l2 = k.Version
	}
	current := map[string]uint32{}
	if t != nil {
		for name, sv := range t.services {
			current[name] = sv.s.Current
			if sv.s.Status == StatusRevoked {
				current[name] = 0 // nothing is imported into a revoked service
			}
		}
	}
	for _, k := range im.L3 {
		if err := checkNames(c.Tenant, k.Service); err != nil {
			return err
		}
		if err := checkBlob(k.Sealed, "import-l3"); err != nil {
			return err
		}
		cur, exists := current[k.Service]
		if exists && cur == 0 || k.Version != cur+1 || k.SealedBy == 0 || k.SealedBy > l2 {
			return &Error{Err: ErrBadVersion, Tenant: c.Tenant, Service: k.Service, Version: k.Version, Field: "import-l3"}
		}
		current[k.Service] = k.Version
	}
	return nil
}

// importKeys applies a checked KeyImport: the newest L2 becomes current (the others
// DECRYPT_ONLY), and each service's newest L3 current and ACTIVE (unless revoked).
func (a *applier) importKeys(tenant string, im KeyImport) {
	t := a.s.wTenant(tenant)
	for _, k := range im.L2 {
		if t.t.CurrentL2 > 0 && t.t.L2[t.t.CurrentL2-1].Status == StatusActive {
			t.t.L2[t.t.CurrentL2-1].Status = StatusDecryptOnly
		}
		t.t.L2 = append(t.t.L2, L2Version{Version: k.Version, Sealed: k.Sealed, Status: StatusActive, CreatedAt: a.at})
		t.t.CurrentL2 = k.Version
	}
	for _, k := range im.L3 {
		if k.Version == 1 {
			t.services[k.Service] = &serviceNode{gen: a.s.gen, s: Service{Tenant: tenant, Name: k.Service, Status: StatusActive, CreatedAt: a.at}}
		}
		_, sv := a.s.wService(tenant, k.Service)
		if sv.s.Current > 0 {
			if prev := &sv.versions[sv.s.Current-1]; prev.Status == StatusActive {
				prev.Status, prev.RotatedAt = StatusDecryptOnly, a.at
			}
		}
		kv := KeyVersion{Tenant: tenant, Service: k.Service, Version: k.Version, Sealed: k.Sealed, SealedBy: k.SealedBy, Status: StatusActive, CreatedAt: a.at}
		if k.Revoked {
			kv.Status, kv.RevokedAt = StatusRevoked, a.at
		}
		sv.versions = append(sv.versions, kv)
		sv.s.Current = k.Version
	}
	if len(im.L2)+len(im.L3) > 0 {
		a.changed(KeysImported, tenant, "", t.t.CurrentL2, "")
	}
}

func (a *applier) setTenantRegions(c SetTenantRegions) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil || len(c.Regions) == 0:
		// Not here yet (its keys arrive from its home region), or nothing to record: the event
		// is recorded and changes nothing.
		return Result{Tenant: c.Tenant}, nil
	case c.Home != "" && !t.t.Shared():
		// A tenant of this region made shared: its own versions stay; from now on its home makes
		// every version and this region (unless it is the home) imports them.
		if err := checkRegions(c.Regions, c.Home); err != nil {
			return Result{}, err
		}
		t = a.s.wTenant(c.Tenant)
		t.t.Home, t.t.Regions = c.Home, slices.Clone(c.Regions)
		return Result{Tenant: c.Tenant}, nil
	case !t.t.Shared(), c.Home != "" && c.Home != t.t.Home:
		return Result{}, &Error{Err: ErrInvalidCommand, Tenant: c.Tenant, Field: "regions"}
	}
	if err := checkRegions(c.Regions, t.t.Home); err != nil {
		return Result{}, err
	}
	t = a.s.wTenant(c.Tenant)
	t.t.Regions = slices.Clone(c.Regions)
	return Result{Tenant: c.Tenant}, nil
}

func (a *applier) removeTenant(c RemoveTenant) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	if err := checkReason(c.Reason); err != nil {
		return Result{}, err
	}
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil:
		return Result{Tenant: c.Tenant}, nil // holds nothing of it already
	case !t.t.Shared():
		// Only a shared tenant leaves a region this way: a tenant of this region alone is
		// revoked, never forgotten.
		return Result{}, &Error{Err: ErrInvalidCommand, Tenant: c.Tenant, Field: "remove"}
	}
	delete(a.s.wRoot().tenants, c.Tenant)
	a.changed(TenantRemoved, c.Tenant, "", 0, c.Reason)
	return Result{Tenant: c.Tenant}, nil
}

// writeShared writes a shared tenant's record (since snapshot version 6), right after the tenant
// record; a tenant of one region has none, so a state without shared tenants writes the records
// (and has the Hash) it had before.
// hasShared reports whether the state holds a shared tenant, whose record needs snapshot
// version 6.
func hasShared(r *root) bool {
	for _, t := range r.tenants {
		if t.t.Shared() {
			return true
		}
	}
	return false
}

func writeShared(e *recWriter, t *Tenant) {
	if !t.Shared() {
		return
	}
	e.begin()
	e.str(t.Home)
	e.uvarint(uint64(len(t.Regions)))
	for _, r := range t.Regions {
		e.str(r)
	}
	e.end(recShared)
}

// readShared reads a shared tenant's record into t; false if it is malformed.
func readShared(d *recReader, t *Tenant) bool {
	home := d.str()
	n := d.uvarint()
	if d.bad || n > 64 {
		return false
	}
	regions := make([]string, 0, n)
	for range n {
		regions = append(regions, d.str())
	}
	if !d.ok() || home == "" || checkRegions(regions, home) != nil {
		return false
	}
	t.Home, t.Regions = home, regions
	return true
}
