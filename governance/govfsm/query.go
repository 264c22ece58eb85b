// Reads of the state: each takes the read lock and returns copies.

package govfsm

import (
	"maps"
	"slices"
)

func (t *tenant) view() *Tenant {
	return &Tenant{
		Name: t.Name, AnchorURI: t.AnchorURI, Regions: slices.Clone(t.Regions), Locked: t.Locked,
		Revoked: t.RevokeCursor != 0, AnchorDeletedAt: t.AnchorDeletedAt, CreatedAt: t.CreatedAt, Cursor: t.Cursor,
		OwnerKey: t.OwnerKey, Quota: t.Quota.clone(), Home: t.Home, RegionAnchors: cloneAnchors(t.RegionAnchors),
		FloorPending: slices.Clone(t.FloorPending),
	}
}

func (q *Quota) clone() *Quota {
	if q == nil {
		return nil
	}
	c := *q
	return &c
}

func (sv *service) view(t *tenant, name string) *Service {
	return &Service{Tenant: t.Name, Name: name, CreatedAt: sv.CreatedAt, Cursor: sv.Cursor, Revoked: sv.RevokeCursor != 0 || t.RevokeCursor != 0, Quota: sv.Quota.clone()}
}

// --- Reads. Each takes the read lock and returns copies. ---

// Head returns the cursor of the newest event (0 for an empty log).
func (f *FSM) Head() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Head
}

// Tenant returns a copy of one tenant, or ErrTenantNotFound.
func (f *FSM) Tenant(name string) (*Tenant, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[name]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	return t.view(), nil
}

// Tenants returns up to limit tenants with names after after, by name.
func (f *FSM) Tenants(after string, limit int) []*Tenant {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := slices.Sorted(maps.Keys(f.st.Tenants))
	var out []*Tenant
	for _, n := range names {
		if n > after && len(out) < limit {
			out = append(out, f.st.Tenants[n].view())
		}
	}
	return out
}

// Services returns up to limit services of tenant with names after after.
func (f *FSM) Services(tenant, after string, limit int) ([]*Service, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	var out []*Service
	for _, n := range slices.Sorted(maps.Keys(t.Services)) {
		if n > after && len(out) < limit {
			out = append(out, t.Services[n].view(t, n))
		}
	}
	return out, nil
}

// Policy returns a tenant's policy (revision 0 if never set).
func (f *FSM) Policy(tenant string) (*Policy, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	if t.Policy == nil {
		return &Policy{}, nil
	}
	return t.Policy.clone(), nil
}

// Event returns the event at cursor, or nil.
func (f *FSM) Event(cursor uint64) *Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.event(cursor)
}

// EventsFor returns up to max events after cursor that concern region's tenants (all events if
// region is empty), and the head the answer is complete up to: every event for region with a cursor
// up to head is in the result, unless it was cut at max, when head is the last event's cursor.
// Events are shared, immutable values.
func (f *FSM) EventsFor(region string, after uint64, max int) (events []*Event, head uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	// Below the floor only the events that still define the state remain (compact.go): a region
	// that was behind it gets those, in cursor order, and ends in the state the whole log gives.
	for _, e := range f.st.Events[f.st.after(after):] {
		if region != "" && !f.st.forRegion(e, region) {
			continue
		}
		events = append(events, e)
		if len(events) >= max {
			return events, e.Cursor
		}
	}
	return events, f.st.Head
}

func (s *state) inRegion(tenant, region string) bool {
	t := s.Tenants[tenant]
	return t != nil && slices.Contains(t.Regions, region)
}

// forRegion reports whether e is sent to region: every event of a tenant of the region, but a
// RESYNC_TENANT only to the regions it names.
func (s *state) forRegion(e *Event, region string) bool {
	switch e.Kind {
	case KindSetRegions:
		// The old and the new regions: a removed one must learn it, to wipe the tenant.
		return slices.Contains(e.Regions, region) || slices.Contains(e.Removed, region)
	case KindTenantKeys:
		return slices.Contains(e.Regions, region) && s.inRegion(e.Tenant, region)
	}
	if e.Kind == KindResyncTenant {
		return slices.Contains(e.Regions, region) && s.inRegion(e.Tenant, region)
	}
	return s.inRegion(e.Tenant, region)
}

// Report returns what region last reported.
func (f *FSM) Report(region string) RegionReport {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Regions[region].report(region)
}

func (r *region) report(name string) RegionReport {
	out := RegionReport{Region: name}
	if r != nil {
		out.Cursor, out.ReportedAt = r.Cursor, r.ReportedAt
		out.ConfigIndex, out.Voters = r.ConfigIndex, slices.Clone(r.Voters)
	}
	return out
}

// CheckReport says what report c would do to this node's state: ErrNotRegionVoter if its node may
// not report for the region, else whether it changes anything but the report time, and the region's
// report now. The API uses it to refuse, or answer without a write, before the log.
func (f *FSM) CheckReport(c *Command) (changes bool, last RegionReport, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.st.Regions[c.Region]
	if !r.admits(c) {
		return false, RegionReport{}, ErrNotRegionVoter
	}
	return r.changes(c), r.report(c.Region), nil
}

// MayFollow reports whether node may follow region's feed: any node of the region until governance
// has learned the region's configuration, then its voters only.
func (f *FSM) MayFollow(region, node string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Regions[region].admits(&Command{Node: node})
}

// RegionLag is one region's lag behind the log.
type RegionLag struct {
	RegionReport
	Pending       uint64 // events of the region's tenants after its cursor
	OldestPending int64  // Unix ns of the oldest of them; 0 if none
}

// Lags returns every known region (named by a tenant or by a report), sorted by name, with its lag.
func (f *FSM) Lags() []RegionLag {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := map[string]bool{}
	for _, t := range f.st.Tenants {
		for _, r := range t.Regions {
			names[r] = true
		}
	}
	for r := range f.st.Regions {
		names[r] = true
	}
	var out []RegionLag
	for _, name := range slices.Sorted(maps.Keys(names)) {
		l := RegionLag{RegionReport: f.st.Regions[name].report(name)}
		for _, e := range f.st.Events[f.st.after(l.Cursor):] {
			if f.st.forRegion(e, name) {
				if l.Pending == 0 {
					l.OldestPending = e.Time
				}
				l.Pending++
			}
		}
		out = append(out, l)
	}
	return out
}

// EventCounts returns how many events of each kind the log has had (compaction lowers none).
func (f *FSM) EventCounts() map[Kind]uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.st.Counts)
}

// BlastRadius is what revoking a scope would cover, from governance's state and the regions' last
// inventories.
type BlastRadius struct {
	Tenants     []string
	Services    []KeyRef // Version 0
	KeyVersions []KeyRef
	Regions     []string
}

// Blast computes the blast radius of revoking tenant (and service, and version). It returns
// ErrTenantNotFound or ErrServiceNotFound as Revoke would.
func (f *FSM) Blast(tenant, svc string, version uint32) (*BlastRadius, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	b := &BlastRadius{Tenants: []string{tenant}, Regions: slices.Clone(t.Regions)}
	services := map[string]bool{}
	versions := map[KeyRef]bool{}
	for n := range t.Services {
		services[n] = true
	}
	for _, r := range f.st.Regions {
		for _, k := range r.Inventory {
			if k.Tenant == tenant {
				services[k.Service] = true
				versions[k] = true
			}
		}
	}
	if svc != "" {
		if !services[svc] {
			return nil, ErrServiceNotFound
		}
		services = map[string]bool{svc: true}
	}
	for _, n := range slices.Sorted(maps.Keys(services)) {
		b.Services = append(b.Services, KeyRef{Tenant: tenant, Service: n})
	}
	for k := range versions {
		if (svc == "" || k.Service == svc) && (version == 0 || k.Version == version) {
			b.KeyVersions = append(b.KeyVersions, k)
		}
	}
	if version != 0 && !versions[KeyRef{tenant, svc, version}] {
		// Not reported by any region (yet): it is still what would be revoked.
		b.KeyVersions = append(b.KeyVersions, KeyRef{tenant, svc, version})
	}
	slices.SortFunc(b.KeyVersions, compareKeyRef)
	return b, nil
}

// TenantCount returns how many tenants governance holds.
func (f *FSM) TenantCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.st.Tenants)
}
