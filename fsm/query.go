package fsm

import (
	"slices"
	"strings"

	"github.com/kryptonkms/krypton/policy"
)

// The queries below take mu for reading and return copies: nothing they
// return aliases the state.

// Usable reports whether a key version may be used for op, cheaply enough
// for the wrap path. For OpWrap, version 0 means the service's current
// version; Usable returns the version to use. It returns a bare sentinel
// saying why not, checked in this order: ErrTenantNotFound, ErrRevoked (the
// tenant), ErrAnchorDeleted, ErrLocked, ErrServiceNotFound, ErrRevoked (the
// service), ErrVersionNotFound, ErrRevoked (the version), ErrDecryptOnly.
func (s *State) Usable(tenant, service string, version uint32, op Op) (uint32, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.root.tenants[tenant]
	switch {
	case t == nil:
		return 0, ErrTenantNotFound
	case t.t.Status == StatusRevoked:
		return 0, ErrRevoked
	case t.t.AnchorDeleted:
		return 0, ErrAnchorDeleted
	case t.t.Status == StatusLocked:
		return 0, ErrLocked
	}
	sv := t.services[service]
	switch {
	case sv == nil:
		return 0, ErrServiceNotFound
	case sv.s.Status == StatusRevoked:
		return 0, ErrRevoked
	}
	if version == 0 && op == OpWrap {
		version = sv.s.Current
	}
	if version == 0 || int(version) > len(sv.versions) {
		return 0, ErrVersionNotFound
	}
	switch sv.versions[version-1].Status {
	case StatusActive:
		return version, nil
	case StatusDecryptOnly:
		if op == OpUnwrap {
			return version, nil
		}
		return 0, ErrDecryptOnly
	}
	return 0, ErrRevoked
}

func copyTenant(t Tenant) Tenant {
	t.L2 = slices.Clone(t.L2)
	for i := range t.L2 {
		t.L2[i].Sealed = slices.Clone(t.L2[i].Sealed)
	}
	return t
}

func copyKeyVersion(kv KeyVersion) KeyVersion {
	kv.Sealed = slices.Clone(kv.Sealed)
	return kv
}

// Tenant returns a tenant, with its L2 versions.
func (s *State) Tenant(name string) (Tenant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.root.tenants[name]
	if t == nil {
		return Tenant{}, refuse(ErrTenantNotFound, name, "", 0)
	}
	return copyTenant(t.t), nil
}

func (s *State) service(tenant, service string) (*serviceNode, error) {
	t := s.root.tenants[tenant]
	if t == nil {
		return nil, refuse(ErrTenantNotFound, tenant, "", 0)
	}
	sv := t.services[service]
	if sv == nil {
		return nil, refuse(ErrServiceNotFound, tenant, service, 0)
	}
	return sv, nil
}

// Service returns a service.
func (s *State) Service(tenant, service string) (Service, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sv, err := s.service(tenant, service)
	if err != nil {
		return Service{}, err
	}
	return sv.s, nil
}

// KeyVersion returns one L3 version with its sealed blob; version 0 means
// the current one. Its Status is its own; use Usable to decide whether it
// may be used.
func (s *State) KeyVersion(tenant, service string, version uint32) (KeyVersion, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sv, err := s.service(tenant, service)
	if err != nil {
		return KeyVersion{}, err
	}
	if version == 0 {
		version = sv.s.Current
	}
	if int(version) > len(sv.versions) {
		return KeyVersion{}, refuse(ErrVersionNotFound, tenant, service, version)
	}
	return copyKeyVersion(sv.versions[version-1]), nil
}

// CurrentVersion returns the current L3 version of a service.
func (s *State) CurrentVersion(tenant, service string) (uint32, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sv, err := s.service(tenant, service)
	if err != nil {
		return 0, err
	}
	return sv.s.Current, nil
}

// ListTenants returns every tenant, revoked ones included, sorted by name.
func (s *State) ListTenants() []Tenant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Tenant, 0, len(s.root.tenants))
	for _, t := range s.root.tenants {
		out = append(out, copyTenant(t.t))
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ListServices returns the services of a tenant, sorted by name.
func (s *State) ListServices(tenant string) ([]Service, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.root.tenants[tenant]
	if t == nil {
		return nil, refuse(ErrTenantNotFound, tenant, "", 0)
	}
	out := make([]Service, 0, len(t.services))
	for _, sv := range t.services {
		out = append(out, sv.s)
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ListKeyVersions returns the L3 versions of a service, oldest first.
func (s *State) ListKeyVersions(tenant, service string) ([]KeyVersion, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sv, err := s.service(tenant, service)
	if err != nil {
		return nil, err
	}
	out := make([]KeyVersion, len(sv.versions))
	for i, kv := range sv.versions {
		out[i] = copyKeyVersion(kv)
	}
	return out, nil
}

// RevocationLog returns the revocation log entries with Seq > since, in
// order. RevocationLog(0) returns the whole log.
func (s *State) RevocationLog(since uint64) []Revocation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	log := s.root.revlog
	// Seq ascends, with gaps where CompactRevocations dropped entries.
	i, _ := slices.BinarySearchFunc(log, since+1, func(r Revocation, seq uint64) int {
		switch {
		case r.Seq < seq:
			return -1
		case r.Seq > seq:
			return 1
		}
		return 0
	})
	if i >= len(log) {
		return nil
	}
	return slices.Clone(log[i:])
}

// RevocationLogLen returns how many entries the revocation log holds.
func (s *State) RevocationLogLen() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.root.revlog)
}

// RevocationCompactThrough returns the Through of a CompactRevocations that keeps the newest keep
// history entries (those not in force), or 0 if there are no more than keep.
func (s *State) RevocationCompactThrough(keep int) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	log := s.root.revlog
	force := map[uint64]bool{}
	for _, rv := range InForce(log) {
		force[rv.Seq] = true
	}
	n := 0
	for i := len(log) - 1; i >= 0; i-- {
		if force[log[i].Seq] {
			continue
		}
		if n++; n > keep {
			return log[i].Seq
		}
	}
	return 0
}

// Policy returns a tenant's access policy (Revision 0 and no rules if none
// was ever set).
func (s *State) Policy(tenant string) (policy.Policy, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.root.tenants[tenant]
	if t == nil {
		return policy.Policy{}, refuse(ErrTenantNotFound, tenant, "", 0)
	}
	return t.policy.Clone(), nil
}

// GovernanceCursor returns the cursor of the last governance event applied.
func (s *State) GovernanceCursor() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.root.cursor
}

// Settings returns the replicated region settings.
func (s *State) Settings() Settings {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.root.settings
}

// DescribeService returns a service and its L3 versions as a client should
// see them (the admin API's Key): a service of a revoked tenant is revoked
// too, a revoked service has Current 0, and each version of a revoked
// service or tenant is REVOKED whatever status it kept, with RevokedAt the
// earliest revocation that covers it. The stored state is left as it is
// (revoking a tenant does not rewrite its services), so snapshots taken
// before this view existed describe the same way.
func (s *State) DescribeService(tenant, service string) (Service, []KeyVersion, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sv, err := s.service(tenant, service)
	if err != nil {
		return Service{}, nil, err
	}
	svc := sv.s
	t := s.root.tenants[tenant].t
	if t.Status == StatusRevoked && (svc.Status != StatusRevoked || t.RevokedAt < svc.RevokedAt) {
		svc.Status, svc.RevokedAt = StatusRevoked, t.RevokedAt
	}
	versions := make([]KeyVersion, len(sv.versions))
	for i, kv := range sv.versions {
		kv = copyKeyVersion(kv)
		if svc.Status == StatusRevoked && (kv.Status != StatusRevoked || svc.RevokedAt < kv.RevokedAt) {
			kv.Status, kv.RevokedAt = StatusRevoked, svc.RevokedAt
		}
		versions[i] = kv
	}
	if svc.Status == StatusRevoked {
		svc.Current = 0
	}
	return svc, versions, nil
}
