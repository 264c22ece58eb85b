// Appliers for tenants: an owner's consent, checked and used once, and a tenant's resync.

package govfsm

import (
	"maps"
	"slices"
	"time"

	"github.com/kryptonkms/krypton/internal/owner"
)

// consume checks c's consent against the tenant's owner key as st, at now (the command's clock, so
// that every replica decides alike), and records it as used. It returns the owner key's
// fingerprint. A tenant without an owner key takes a command without a consent: such commands are
// in logs from before owner keys (the API refuses new ones, ErrNoOwnerKey).
func (t *tenant) consume(c *Command, st owner.Statement, now int64) (string, error) {
	if t.OwnerKey == "" {
		if c.Consent != "" {
			return "", ErrConsentDenied
		}
		return "", nil
	}
	key, err := owner.ParsePublicKey(t.OwnerKey)
	if err != nil {
		return "", ErrConsentDenied
	}
	cs, err := owner.Verify(c.Consent, key, st, time.Unix(0, now))
	if err != nil {
		return "", ErrConsentDenied
	}
	secs := time.Unix(0, now).Unix()
	t.Consents = slices.DeleteFunc(t.Consents, func(u usedConsent) bool { return u.Expires <= secs })
	if slices.ContainsFunc(t.Consents, func(u usedConsent) bool { return u.Digest == cs.Digest }) {
		return "", ErrConsentUsed
	}
	if len(t.Consents) >= maxLiveConsents {
		return "", ErrLimit
	}
	t.Consents = append(t.Consents, usedConsent{Digest: cs.Digest, Expires: cs.Expires})
	return key.Fingerprint(), nil
}

// resync emits a RESYNC_TENANT event: what a region needs to converge on the tenant as governance
// holds it now (governance/DESIGN.md, "Resync"). c.Regions, sorted, names a subset of the tenant's
// regions; empty means all of them. A revoked tenant, or one whose anchor is deleted, is refused: a
// resync never brings back what a revocation or the kill switch took away (and without an anchor no
// region could create the tenant).
func (s *state) resync(c *Command, t *tenant, now int64) *Result {
	if t.RevokeCursor != 0 {
		return &Result{Err: ErrRevoked}
	}
	if t.AnchorDeletedAt != 0 || t.AnchorURI == "" {
		return &Result{Err: ErrNoAnchor}
	}
	regions := slices.Clone(t.Regions)
	if len(c.Regions) > 0 {
		if !slices.IsSorted(c.Regions) || len(slices.Compact(slices.Clone(c.Regions))) != len(c.Regions) {
			return &Result{Err: ErrInvalidCommand}
		}
		for _, r := range c.Regions {
			if !slices.Contains(t.Regions, r) {
				return &Result{Err: ErrNotTenantRegion}
			}
		}
		regions = slices.Clone(c.Regions)
	}
	var services []string
	for _, name := range slices.Sorted(maps.Keys(t.Services)) {
		// Only services created at governance (one learnt from a region's inventory was created in
		// that region), not revoked, and with no revoked version: a region that lacks such a
		// service would create it afresh and, by rotating, hand out the version numbers governance
		// lists as revoked.
		if sv := t.Services[name]; sv.Cursor != 0 && sv.RevokeCursor == 0 && len(sv.Versions) == 0 {
			services = append(services, name)
		}
	}
	e := s.emit(c, KindResyncTenant, now)
	e.AnchorURI, e.Regions, e.Services, e.Locked, e.Home = t.AnchorURI, regions, services, t.Locked, t.Home
	e.RegionAnchors = cloneAnchors(t.RegionAnchors)
	if t.Policy != nil {
		e.Policy = t.Policy.clone()
	}
	// The quotas too, so that a region resynced from scratch (or restored from an old snapshot)
	// enforces what governance set.
	e.Quota = t.Quota.clone()
	for _, name := range slices.Sorted(maps.Keys(t.Services)) {
		if sv := t.Services[name]; sv.RevokeCursor == 0 && sv.Quota != nil && *sv.Quota != (Quota{}) {
			e.ServiceQuotas = append(e.ServiceQuotas, ServiceQuota{Service: name, Quota: *sv.Quota})
		}
	}
	return s.result(c, e)
}
