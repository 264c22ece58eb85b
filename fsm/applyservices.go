package fsm

func (a *applier) createService(c CreateService) (Result, error) {
	if err := checkNames(c.Tenant, c.Service); err != nil {
		return Result{}, err
	}
	t, err := a.tenantFor(c.Tenant, true)
	if err != nil {
		return Result{}, err
	}
	if err := checkBlob(c.SealedL3, "sealed-l3"); err != nil {
		return Result{}, err
	}
	if t.services[c.Service] != nil {
		return Result{}, refuse(ErrServiceExists, c.Tenant, c.Service, 0)
	}
	if c.SealedBy != t.t.CurrentL2 {
		return Result{}, &Error{Err: ErrBadVersion, Tenant: c.Tenant, Service: c.Service, Version: c.SealedBy, Field: "sealed-by"}
	}
	t = a.s.wTenant(c.Tenant)
	t.services[c.Service] = &serviceNode{
		gen: a.s.gen,
		s:   Service{Tenant: c.Tenant, Name: c.Service, Status: StatusActive, Current: 1, CreatedAt: a.at},
		versions: []KeyVersion{{
			Tenant: c.Tenant, Service: c.Service, Version: 1, Sealed: c.SealedL3,
			SealedBy: c.SealedBy, Status: StatusActive, CreatedAt: a.at,
		}},
	}
	a.changed(ServiceCreated, c.Tenant, c.Service, 1, "")
	return Result{Tenant: c.Tenant, Service: c.Service, Version: 1}, nil
}

// serviceFor returns the live service of a live tenant.
func (a *applier) serviceFor(tenant, service string, needUnlocked bool) (*tenantNode, *serviceNode, error) {
	if err := checkNames(tenant, service); err != nil {
		return nil, nil, err
	}
	t, err := a.tenantFor(tenant, needUnlocked)
	if err != nil {
		return nil, nil, err
	}
	sv := t.services[service]
	switch {
	case sv == nil:
		return nil, nil, refuse(ErrServiceNotFound, tenant, service, 0)
	case sv.s.Status == StatusRevoked:
		return nil, nil, refuse(ErrRevoked, tenant, service, 0)
	}
	return t, sv, nil
}

func (a *applier) rotateServiceKey(c RotateServiceKey) (Result, error) {
	t, sv, err := a.serviceFor(c.Tenant, c.Service, true)
	if err != nil {
		return Result{}, err
	}
	if err := checkBlob(c.SealedL3, "sealed-l3"); err != nil {
		return Result{}, err
	}
	if c.Version != sv.s.Current+1 {
		return Result{}, refuse(ErrBadVersion, c.Tenant, c.Service, c.Version)
	}
	if c.SealedBy != t.t.CurrentL2 {
		return Result{}, &Error{Err: ErrBadVersion, Tenant: c.Tenant, Service: c.Service, Version: c.SealedBy, Field: "sealed-by"}
	}
	_, sv = a.s.wService(c.Tenant, c.Service)
	if prev := &sv.versions[sv.s.Current-1]; prev.Status == StatusActive {
		prev.Status = StatusDecryptOnly
		prev.RotatedAt = a.at
	}
	sv.versions = append(sv.versions, KeyVersion{
		Tenant: c.Tenant, Service: c.Service, Version: c.Version, Sealed: c.SealedL3,
		SealedBy: c.SealedBy, Status: StatusActive, CreatedAt: a.at,
	})
	sv.s.Current = c.Version
	a.changed(ServiceKeyRotated, c.Tenant, c.Service, c.Version, "")
	return Result{Tenant: c.Tenant, Service: c.Service, Version: c.Version}, nil
}
