package fsm

import (
	"errors"
	"slices"

	"github.com/kryptonkms/krypton/policy"
)

// tenantFor returns the tenant for a command that needs it live: not
// revoked, anchor not deleted and, if needUnlocked, not locked.
func (a *applier) tenantFor(name string, needUnlocked bool) (*tenantNode, error) {
	if err := checkTenantName(name); err != nil {
		return nil, err
	}
	t := a.s.root.tenants[name]
	switch {
	case t == nil:
		return nil, refuse(ErrTenantNotFound, name, "", 0)
	case t.t.Status == StatusRevoked:
		return nil, refuse(ErrRevoked, name, "", 0)
	case t.t.AnchorDeleted:
		return nil, refuse(ErrAnchorDeleted, name, "", 0)
	case needUnlocked && t.t.Status == StatusLocked:
		return nil, refuse(ErrLocked, name, "", 0)
	}
	return t, nil
}

func (a *applier) createTenant(c CreateTenant) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	if err := checkAnchor(c.Anchor); err != nil {
		return Result{}, err
	}
	if err := checkBlob(c.SealedL2, "sealed-l2"); err != nil {
		return Result{}, err
	}
	o, err := newOwnerState(c.OwnerKey)
	if err != nil {
		return Result{}, err
	}
	if a.s.root.tenants[c.Tenant] != nil {
		return Result{}, refuse(ErrTenantExists, c.Tenant, "", 0)
	}
	if c.Home != "" || len(c.Regions) > 0 {
		if err := checkRegions(c.Regions, c.Home); err != nil {
			return Result{}, err
		}
	}
	r := a.s.wRoot()
	r.tenants[c.Tenant] = &tenantNode{
		gen: a.s.gen,
		t: Tenant{
			Name:      c.Tenant,
			Anchor:    c.Anchor,
			Status:    StatusActive,
			CurrentL2: 1,
			CreatedAt: a.at,
			L2:        []L2Version{{Version: 1, Sealed: c.SealedL2, Status: StatusActive, CreatedAt: a.at}},
			Home:      c.Home,
			Regions:   slices.Clone(c.Regions),
		},
		services: map[string]*serviceNode{},
		owner:    o,
	}
	a.changed(TenantCreated, c.Tenant, "", 1, "")
	if o.pem != "" {
		a.changed(OwnerKeySet, c.Tenant, "", 0, "")
	}
	return Result{Tenant: c.Tenant, Version: 1}, nil
}

func (a *applier) rotateTenantKey(c RotateTenantKey) (Result, error) {
	t, err := a.tenantFor(c.Tenant, true)
	if err != nil {
		return Result{}, err
	}
	if err := checkBlob(c.SealedL2, "sealed-l2"); err != nil {
		return Result{}, err
	}
	if c.Version != t.t.CurrentL2+1 {
		return Result{}, refuse(ErrBadVersion, c.Tenant, "", c.Version)
	}
	t = a.s.wTenant(c.Tenant)
	t.t.L2[t.t.CurrentL2-1].Status = StatusDecryptOnly
	t.t.L2 = append(t.t.L2, L2Version{Version: c.Version, Sealed: c.SealedL2, Status: StatusActive, CreatedAt: a.at})
	t.t.CurrentL2 = c.Version
	a.changed(TenantKeyRotated, c.Tenant, "", c.Version, "")
	return Result{Tenant: c.Tenant, Version: c.Version}, nil
}

func (a *applier) lockTenant(c LockTenant) (Result, error) {
	if _, err := a.tenantFor(c.Tenant, false); err != nil {
		return Result{}, err
	}
	if err := checkReason(c.Reason); err != nil {
		return Result{}, err
	}
	t := a.s.wTenant(c.Tenant)
	if t.t.Status != StatusLocked {
		t.t.LockedAt = a.at
	}
	t.t.Status = StatusLocked
	t.t.LockReason = c.Reason
	a.changed(TenantLocked, c.Tenant, "", 0, c.Reason)
	return Result{Tenant: c.Tenant}, nil
}

func (a *applier) unlockTenant(c UnlockTenant) (Result, error) {
	t, err := a.tenantFor(c.Tenant, false)
	if err != nil {
		return Result{}, err
	}
	if t.t.Status != StatusLocked {
		return Result{Tenant: c.Tenant}, nil
	}
	t = a.s.wTenant(c.Tenant)
	t.t.Status = StatusActive
	t.t.LockReason = ""
	t.t.LockedAt = 0
	a.changed(TenantUnlocked, c.Tenant, "", 0, "")
	return Result{Tenant: c.Tenant}, nil
}

func (a *applier) setAnchor(c SetAnchor, src source) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	// Unlike the other tenant writes, SetAnchor applies to a tenant whose
	// anchor was deleted: it is what lifts the kill switch.
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil:
		return Result{}, refuse(ErrTenantNotFound, c.Tenant, "", 0)
	case t.t.Status == StatusRevoked:
		return Result{}, refuse(ErrRevoked, c.Tenant, "", 0)
	}
	if err := checkAnchor(c.Anchor); err != nil {
		return Result{}, err
	}
	if t.t.AnchorDeleted && len(c.Resealed) != 0 {
		// Nothing could have unsealed the L2 versions to reseal them.
		return Result{}, &Error{Err: ErrInvalidCommand, Tenant: c.Tenant, Field: "resealed"}
	}
	if len(c.Resealed) != 0 {
		if len(c.Resealed) != len(t.t.L2) {
			return Result{}, &Error{Err: ErrBadVersion, Tenant: c.Tenant, Version: uint32(len(c.Resealed)), Field: "resealed"}
		}
		for _, b := range c.Resealed {
			if err := checkBlob(b, "resealed"); err != nil {
				return Result{}, err
			}
		}
	}
	o, err := a.rekeyConsent(t, c, src) // last: it is the one check that records something
	if err != nil {
		return Result{}, err
	}
	t = a.s.wTenant(c.Tenant)
	if o != nil {
		t.owner = *o
	}
	t.t.Anchor = c.Anchor
	t.t.AnchorDeleted = false
	for i, b := range c.Resealed {
		t.t.L2[i].Sealed = b
	}
	a.changed(AnchorSet, c.Tenant, "", 0, "")
	return Result{Tenant: c.Tenant}, nil
}

func (a *applier) setPolicy(c SetPolicy) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	if err := checkPolicy(c.Policy); err != nil {
		return Result{}, err
	}
	// Policy may change while a tenant is locked out or its anchor is
	// deleted: it says who may use the keys once they are usable again.
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil:
		return Result{}, refuse(ErrTenantNotFound, c.Tenant, "", 0)
	case t.t.Status == StatusRevoked:
		return Result{}, refuse(ErrRevoked, c.Tenant, "", 0)
	case c.Policy.Revision <= t.policy.Revision:
		return Result{}, &Error{Err: ErrBadVersion, Tenant: c.Tenant, Field: "revision"}
	}
	t = a.s.wTenant(c.Tenant)
	t.policy = c.Policy.Clone()
	a.changed(PolicySet, c.Tenant, "", 0, "")
	return Result{Tenant: c.Tenant}, nil
}

// maxResyncServices bounds the services one ResyncTenant creates
// (governance's own bound on a tenant's services).
const maxResyncServices = 10000

// resyncTenant applies a ResyncTenant. Every part is checked against the
// state before anything changes, so that a refusal changes nothing; then
// the parts apply in order (tenant, services, policy, lock) through the
// same code as their own commands.
func (a *applier) resyncTenant(c ResyncTenant) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	if len(c.Services) > maxResyncServices {
		return Result{}, invalid(ErrInvalidCommand, "services")
	}
	t := a.s.root.tenants[c.Tenant]
	var (
		current   uint32 // the L2 version services must be sealed by
		policyRev uint64
	)
	if c.Create != nil {
		if c.Create.Tenant != c.Tenant {
			return Result{}, invalid(ErrInvalidCommand, "create")
		}
		if err := checkAnchor(c.Create.Anchor); err != nil {
			return Result{}, err
		}
		if err := checkBlob(c.Create.SealedL2, "sealed-l2"); err != nil {
			return Result{}, err
		}
		if t != nil {
			return Result{}, refuse(ErrTenantExists, c.Tenant, "", 0)
		}
		current = 1
	} else {
		switch {
		case t == nil:
			return Result{}, refuse(ErrTenantNotFound, c.Tenant, "", 0)
		case t.t.Status == StatusRevoked:
			return Result{}, refuse(ErrRevoked, c.Tenant, "", 0)
		case t.t.AnchorDeleted && (len(c.Services) > 0 || c.Lock != ""):
			return Result{}, refuse(ErrAnchorDeleted, c.Tenant, "", 0)
		case t.t.Status == StatusLocked && len(c.Services) > 0:
			return Result{}, refuse(ErrLocked, c.Tenant, "", 0)
		}
		current, policyRev = t.t.CurrentL2, t.policy.Revision
	}
	seen := make(map[string]bool, len(c.Services))
	for _, sv := range c.Services {
		if sv.Tenant != c.Tenant {
			return Result{}, invalid(ErrInvalidCommand, "services")
		}
		if err := checkNames(sv.Tenant, sv.Service); err != nil {
			return Result{}, err
		}
		if err := checkBlob(sv.SealedL3, "sealed-l3"); err != nil {
			return Result{}, err
		}
		if seen[sv.Service] {
			return Result{}, invalid(ErrInvalidCommand, "services")
		}
		seen[sv.Service] = true
		if t != nil && t.services[sv.Service] != nil {
			return Result{}, refuse(ErrServiceExists, c.Tenant, sv.Service, 0)
		}
		if sv.SealedBy != current {
			return Result{}, &Error{Err: ErrBadVersion, Tenant: c.Tenant, Service: sv.Service, Version: sv.SealedBy, Field: "sealed-by"}
		}
	}
	if c.Policy != nil {
		if err := checkPolicy(*c.Policy); err != nil {
			return Result{}, err
		}
		if c.Policy.Revision <= policyRev {
			return Result{}, &Error{Err: ErrBadVersion, Tenant: c.Tenant, Field: "revision"}
		}
	}
	if c.Lock != "" {
		if err := checkReason(c.Lock); err != nil {
			return Result{}, err
		}
	}
	if len(c.Quotas) > maxResyncServices+1 {
		return Result{}, invalid(ErrInvalidCommand, "quotas")
	}
	quotaSeen := make(map[string]bool, len(c.Quotas))
	for _, q := range c.Quotas {
		if q.Tenant != c.Tenant || quotaSeen[q.Service] {
			return Result{}, invalid(ErrInvalidCommand, "quotas")
		}
		quotaSeen[q.Service] = true
		if err := checkQuota(q); err != nil {
			return Result{}, err
		}
		if q.Service == "" || seen[q.Service] {
			continue
		}
		var sv *serviceNode
		if t != nil {
			sv = t.services[q.Service]
		}
		switch {
		case sv == nil:
			return Result{}, refuse(ErrServiceNotFound, c.Tenant, q.Service, 0)
		case sv.s.Status == StatusRevoked:
			return Result{}, refuse(ErrRevoked, c.Tenant, q.Service, 0)
		}
	}
	if c.Import != nil {
		if err := a.checkImport(c, t); err != nil {
			return Result{}, err
		}
	}
	// Everything checked: from here on no part is refused.
	res := Result{Tenant: c.Tenant}
	if c.Create != nil {
		if _, err := a.createTenant(*c.Create); err != nil {
			return Result{}, err
		}
		res.Version = 1
	}
	if c.Import != nil {
		a.importKeys(c.Tenant, *c.Import)
	}
	for _, sv := range c.Services {
		if _, err := a.createService(sv); err != nil {
			return Result{}, err
		}
	}
	if c.Policy != nil {
		if _, err := a.setPolicy(SetPolicy{Tenant: c.Tenant, Policy: *c.Policy}); err != nil {
			return Result{}, err
		}
	}
	for _, q := range c.Quotas {
		if _, err := a.setQuota(q); err != nil {
			return Result{}, err
		}
	}
	if c.Lock != "" {
		if _, err := a.lockTenant(LockTenant{Tenant: c.Tenant, Reason: c.Lock}); err != nil {
			return Result{}, err
		}
	}
	return res, nil
}

// checkPolicy checks a policy by the language's one Validate (package policy), and that it has
// a revision; a refusal names the part as "policy-<field>".
func checkPolicy(p policy.Policy) error {
	if p.Revision == 0 {
		return invalid(ErrInvalidCommand, "policy-revision")
	}
	if err := p.Validate(validName); err != nil {
		var pe *policy.Error
		if errors.As(err, &pe) && pe.Field == "service" {
			return invalid(ErrInvalidName, "policy-service")
		}
		field := "rules"
		if pe != nil {
			field = pe.Field
		}
		return invalid(ErrInvalidCommand, "policy-"+field)
	}
	return nil
}
