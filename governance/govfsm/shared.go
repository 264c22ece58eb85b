// Shared tenants: one key hierarchy in every region of the tenant's set (docs/governance.md,
// "Multi-region tenants"). Governance keeps the set, and stores and forwards the sealed
// hierarchy the tenant's home region publishes; it can open none of it.

package govfsm

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/wrap"
)

// Bounds of a published hierarchy: a sealed L2 (an anchor's ciphertext) and a sealed L3 (a wrap
// format kind 1 blob, at most wrap.MaxBlobSize).
const (
	maxSealedL2   = 8 << 10
	maxSealedL3   = 1 << 10
	maxKeyEntries = 100000
)

// ValidRegionSet reports whether regions is a usable region set: 1 to MaxTenantRegions valid
// names, sorted, without repeats.
func ValidRegionSet(regions []string) bool {
	if len(regions) == 0 || len(regions) > MaxTenantRegions || !slices.IsSorted(regions) ||
		len(slices.Compact(slices.Clone(regions))) != len(regions) {
		return false
	}
	for _, r := range regions {
		if wrap.ValidateName(r) != nil {
			return false
		}
	}
	return true
}

// setRegions applies OpSetRegions: the new set must keep the home region. The sealed L2 blobs of
// the regions removed are dropped: governance no longer forwards anything of the tenant there.
func (s *state) setRegions(c *Command, t *tenant, now int64) *Result {
	switch {
	case t.RevokeCursor != 0:
		return &Result{Err: ErrRevoked}
	case t.Home == "" && c.Home != "":
		return s.makeShared(c, t, now)
	case c.Home != "" && c.Home != t.Home:
		return &Result{Err: ErrInvalidCommand} // the home region does not move
	case t.Home == "":
		return &Result{Err: ErrNotShared}
	case !ValidRegionSet(c.Regions) || !slices.Contains(c.Regions, t.Home):
		return &Result{Err: ErrInvalidCommand}
	}
	fp, err := t.consentToRegions(c, now)
	if err != nil {
		return &Result{Err: err}
	}
	var removed []string
	for _, r := range t.Regions {
		if !slices.Contains(c.Regions, r) {
			removed = append(removed, r)
		}
	}
	if t.Keys != nil && len(removed) > 0 {
		k := *t.Keys
		k.L2 = slices.DeleteFunc(slices.Clone(k.L2), func(b SealedL2) bool { return slices.Contains(removed, b.Region) })
		t.Keys = &k
	}
	for _, r := range removed {
		delete(t.RegionAnchors, r)
	}
	t.Regions = slices.Clone(c.Regions)
	e := s.emit(c, KindSetRegions, now)
	e.Regions, e.Removed, e.Home = slices.Clone(c.Regions), removed, t.Home
	r := s.result(c, e)
	r.Previous = fp
	return r
}

// consentToRegions checks and uses the tenant owner's consent to a set-regions that widens the
// tenant's residency (a region added) or makes it shared (c.Home): either changes where the
// tenant's keys live and who makes them, which the operator alone may not decide
// (docs/security.md, "Tenant owner consent"). Removing regions only takes access away and needs
// none. A tenant without an owner key takes the change on the operator's word (consume), and an
// entry from before the rule (no OwnerRule) replays as it applied. It returns the fingerprint of
// the key that consented, if one did.
func (t *tenant) consentToRegions(c *Command, now int64) (string, error) {
	widens := c.Home != "" || slices.ContainsFunc(c.Regions, func(r string) bool { return !slices.Contains(t.Regions, r) })
	if !c.OwnerRule || !widens {
		if c.Consent != "" {
			return "", ErrInvalidCommand
		}
		return "", nil
	}
	return t.consume(c, owner.Statement{Tenant: c.Tenant, Op: owner.OpSetRegions, Regions: strings.Join(c.Regions, ","), Region: c.Home, RequestID: c.RequestID}, now)
}

// publishKeys applies OpPublishKeys: it merges what the home region published into what
// governance holds (a version already held is kept as it is) and, if anything is new, emits a
// TENANT_KEYS event with the whole hierarchy to the tenant's other regions, each of which takes
// what it lacks.
func (s *state) publishKeys(c *Command, t *tenant, now int64) *Result {
	switch {
	case t.RevokeCursor != 0:
		return &Result{Err: ErrRevoked}
	case t.Home == "":
		return &Result{Err: ErrNotShared}
	case c.Floor != nil:
		return s.recordFloor(c, t)
	case c.Region != t.Home:
		return &Result{Err: ErrNotHome}
	case c.Keys == nil || len(c.Keys.L2)+len(c.Keys.L3) > maxKeyEntries:
		return &Result{Err: ErrInvalidCommand}
	}
	for _, b := range c.Keys.L2 {
		if !slices.Contains(t.Regions, b.Region) || b.Version == 0 || len(b.Sealed) == 0 || len(b.Sealed) > maxSealedL2 {
			return &Result{Err: ErrInvalidCommand}
		}
	}
	for _, b := range c.Keys.L2 {
		// A home region of an older release names no anchor: it has only the tenant's.
		if b.Anchor != "" && b.Anchor != t.anchorFor(b.Region) {
			return &Result{Err: ErrStaleAnchor}
		}
	}
	for _, b := range c.Keys.L3 {
		if wrap.ValidateName(b.Service) != nil || b.Version == 0 || b.SealedBy == 0 || len(b.Sealed) == 0 || len(b.Sealed) > maxSealedL3 {
			return &Result{Err: ErrInvalidCommand}
		}
	}
	var have TenantKeys
	if t.Keys != nil {
		have = *t.Keys
	}
	type l2k struct {
		r string
		v uint32
	}
	type l3k struct {
		s string
		v uint32
	}
	l2s := map[l2k]SealedL2{}
	for _, b := range have.L2 {
		l2s[l2k{b.Region, b.Version}] = b
	}
	l3s := map[l3k]SealedL3{}
	for _, b := range have.L3 {
		l3s[l3k{b.Service, b.Version}] = b
	}
	n := len(l2s) + len(l3s)
	for _, b := range c.Keys.L2 {
		if _, ok := l2s[l2k{b.Region, b.Version}]; !ok {
			b.Anchor = "" // checked above; the pointer is no part of what governance holds
			l2s[l2k{b.Region, b.Version}] = b
		}
	}
	for _, b := range c.Keys.L3 {
		if _, ok := l3s[l3k{b.Service, b.Version}]; !ok {
			l3s[l3k{b.Service, b.Version}] = b
		}
	}
	if len(l2s)+len(l3s) == n {
		return s.result(c, nil) // nothing new: no event
	}
	next := &TenantKeys{
		L2: slices.SortedFunc(maps.Values(l2s), func(a, b SealedL2) int {
			return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Version, b.Version))
		}),
		L3: slices.SortedFunc(maps.Values(l3s), func(a, b SealedL3) int {
			return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Version, b.Version))
		}),
	}
	t.Keys = next
	e := s.emit(c, KindTenantKeys, now)
	e.Home, e.Keys = t.Home, next
	e.Regions = slices.DeleteFunc(slices.Clone(t.Regions), func(r string) bool { return r == t.Home })
	e.AnchorURI, e.Locked, e.RegionAnchors = t.AnchorURI, t.Locked, cloneAnchors(t.RegionAnchors)
	if t.Policy != nil {
		e.Policy = t.Policy.clone()
	}
	for _, name := range slices.Sorted(maps.Keys(t.Services)) {
		sv := t.Services[name]
		if sv.RevokeCursor != 0 {
			e.Revoked = append(e.Revoked, KeyRef{Tenant: t.Name, Service: name}) // version 0: the whole service
			continue
		}
		for _, v := range slices.Sorted(maps.Keys(sv.Versions)) {
			e.Revoked = append(e.Revoked, KeyRef{Tenant: t.Name, Service: name, Version: v})
		}
	}
	return s.result(c, e)
}

// TenantKeysFor returns the sealed hierarchy governance holds for a shared tenant (nil if none).
func (f *FSM) TenantKeysFor(tenant string) *TenantKeys {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if t := f.st.Tenants[tenant]; t != nil && t.Keys != nil {
		k := *t.Keys
		return &k
	}
	return nil
}

// cloneAnchors copies a per-region anchor map (nil for none).
func cloneAnchors(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// setAnchor applies a consented OpSetAnchor: the tenant's anchor, or with c.Region that region's
// own pointer. Either lifts the kill switch (the regions whose pointer is still empty stay locked
// out: they receive none). Governance drops the sealed L2 blobs it holds for every region whose
// anchor changed: each region reseals its own L2 versions under its new anchor, and the home
// region publishes them again sealed under it.
func (s *state) setAnchor(c *Command, t *tenant, fp string, now int64) *Result {
	before := map[string]string{}
	for _, r := range t.Regions {
		before[r] = t.anchorFor(r)
	}
	prev := t.AnchorURI
	if c.Region != "" {
		prev = t.anchorFor(c.Region)
		if t.RegionAnchors == nil {
			t.RegionAnchors = map[string]string{}
		}
		t.RegionAnchors[c.Region] = c.AnchorURI
	} else {
		t.AnchorURI = c.AnchorURI
	}
	t.AnchorDeletedAt, t.DeleteCursor = 0, 0
	if t.Keys != nil {
		k := *t.Keys
		k.L2 = slices.DeleteFunc(slices.Clone(k.L2), func(b SealedL2) bool { return before[b.Region] != t.anchorFor(b.Region) })
		t.Keys = &k
	}
	e := s.emit(c, KindSetAnchor, now)
	e.AnchorURI, e.OwnerKey, e.RegionAnchors = t.AnchorURI, fp, cloneAnchors(t.RegionAnchors)
	if c.Region != "" {
		e.Regions = []string{c.Region}
	}
	r := s.result(c, e)
	r.Previous = prev
	return r
}

// TenantAnchors returns the anchor URI of every region of a shared tenant, for its home region's
// sealing. ErrNotShared for a tenant without a home, ErrRevoked, ErrNoAnchor while deleted.
//
// For a tenant made shared it returns too the highest of the regions' own versions (floor) and
// the regions that have not reported theirs yet (pending).
func (f *FSM) TenantAnchors(tenant string) (home string, anchors map[string]string, floor *Floor, pending []string, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	switch {
	case t == nil:
		return "", nil, nil, nil, ErrTenantNotFound
	case t.Home == "":
		return "", nil, nil, nil, ErrNotShared
	case t.RevokeCursor != 0:
		return "", nil, nil, nil, ErrRevoked
	case t.AnchorDeletedAt != 0:
		return "", nil, nil, nil, ErrNoAnchor
	}
	anchors = map[string]string{}
	for _, r := range t.Regions {
		if u := t.anchorFor(r); u != "" {
			anchors[r] = u
		}
	}
	return t.Home, anchors, t.floor(), slices.Clone(t.FloorPending), nil
}

// makeShared applies the OpSetRegions that makes a per-region tenant shared (c.Home): the region
// set stays as it is; every region but the home is to report its own newest versions (Floor),
// above which the home numbers the shared ones, so that each region's own versions keep opening
// its old blobs and no shared version takes a number one of them has.
func (s *state) makeShared(c *Command, t *tenant, now int64) *Result {
	if !slices.Equal(c.Regions, t.Regions) || !slices.Contains(t.Regions, c.Home) {
		return &Result{Err: ErrInvalidCommand}
	}
	fp, err := t.consentToRegions(c, now)
	if err != nil {
		return &Result{Err: err}
	}
	t.Home = c.Home
	t.Floors = map[string]*Floor{}
	t.FloorPending = slices.DeleteFunc(slices.Clone(t.Regions), func(r string) bool { return r == c.Home })
	e := s.emit(c, KindSetRegions, now)
	e.Regions, e.Home = slices.Clone(t.Regions), t.Home
	r := s.result(c, e)
	r.Previous = fp
	return r
}

// recordFloor records a region's own newest versions of a tenant made shared, once: a region that
// reported already, or a tenant that was shared from its start, changes nothing.
func (s *state) recordFloor(c *Command, t *tenant) *Result {
	if len(c.Floor.Services) > MaxServices {
		return &Result{Err: ErrInvalidCommand}
	}
	for name := range c.Floor.Services {
		if wrap.ValidateName(name) != nil {
			return &Result{Err: ErrInvalidCommand}
		}
	}
	i := slices.Index(t.FloorPending, c.Region)
	if i < 0 {
		return s.result(c, nil)
	}
	f := &Floor{L2: c.Floor.L2, Services: maps.Clone(c.Floor.Services)}
	t.Floors[c.Region] = f
	t.FloorPending = slices.Delete(slices.Clone(t.FloorPending), i, i+1)
	return s.result(c, nil)
}

// floor returns the highest of the reported floors (nil for a tenant shared from its start).
func (t *tenant) floor() *Floor {
	if t.Floors == nil {
		return nil
	}
	out := &Floor{Services: map[string]uint32{}}
	for _, f := range t.Floors {
		out.L2 = max(out.L2, f.L2)
		for s, v := range f.Services {
			out.Services[s] = max(out.Services[s], v)
		}
	}
	return out
}

// FloorWanted reports whether governance still waits for region's own versions of tenant (a
// tenant made shared): a report from any other region, or a second one, would change nothing.
func (f *FSM) FloorWanted(tenant, region string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	return t != nil && slices.Contains(t.FloorPending, region)
}
