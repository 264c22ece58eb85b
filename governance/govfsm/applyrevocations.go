// The applier for revocations of a tenant, a service or a key version.

package govfsm

import (
	"github.com/kryptonkms/krypton/wrap"
)

func (s *state) revoke(c *Command, t *tenant, now int64) *Result {
	if t.RevokeCursor != 0 {
		// A revoked tenant covers its services and versions.
		return s.result(c, s.event(t.RevokeCursor))
	}
	if c.Service == "" {
		if c.Version != 0 {
			return &Result{Err: ErrInvalidCommand}
		}
		e := s.emit(c, KindRevokeTenant, now)
		t.RevokeCursor = e.Cursor
		return s.result(c, e)
	}
	if wrap.ValidateName(c.Service) != nil {
		return &Result{Err: ErrInvalidCommand}
	}
	sv := t.Services[c.Service]
	if sv == nil {
		if !s.reported(t.Name, c.Service) {
			return &Result{Err: ErrServiceNotFound}
		}
		// A service governance learnt of from a region's inventory only.
		if len(t.Services) >= MaxServices {
			return &Result{Err: ErrLimit}
		}
		if t.Services == nil {
			t.Services = map[string]*service{}
		}
		sv = &service{CreatedAt: now}
		t.Services[c.Service] = sv
	}
	if sv.RevokeCursor != 0 {
		return s.result(c, s.event(sv.RevokeCursor))
	}
	if c.Version == 0 {
		e := s.emit(c, KindRevokeService, now)
		sv.RevokeCursor = e.Cursor
		return s.result(c, e)
	}
	if cur := sv.Versions[c.Version]; cur != 0 {
		return s.result(c, s.event(cur))
	}
	e := s.emit(c, KindRevokeVersion, now)
	if sv.Versions == nil {
		sv.Versions = map[uint32]uint64{}
	}
	sv.Versions[c.Version] = e.Cursor
	return s.result(c, e)
}

// reported reports whether some region's inventory names tenant/service.
func (s *state) reported(tenant, svc string) bool {
	for _, r := range s.Regions {
		for _, k := range r.Inventory {
			if k.Tenant == tenant && k.Service == svc {
				return true
			}
		}
	}
	return false
}
