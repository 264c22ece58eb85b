package fsm

import "slices"

func (a *applier) revoked(kind RevocationKind, tenant, service string, version uint32, reason string, src source) uint64 {
	return a.logged(Revocation{Kind: kind, Tenant: tenant, Service: service, Version: version, Reason: reason}, src)
}

// logged appends rv to the revocation log, stamped with its sequence
// number, index, time and source.
func (a *applier) logged(rv Revocation, src source) uint64 {
	r := a.s.wRoot()
	rv.Seq = r.lastSeq() + 1
	rv.Index, rv.At = a.index, a.at
	rv.RequestID, rv.Cursor, rv.EventID = src.requestID, src.cursor, src.eventID
	r.revlog = append(r.revlog, rv)
	return rv.Seq
}

func (a *applier) revokeTenant(c RevokeTenant, src source) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	if err := checkReason(c.Reason); err != nil {
		return Result{}, err
	}
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil:
		return Result{}, refuse(ErrTenantNotFound, c.Tenant, "", 0)
	case t.t.Status == StatusRevoked:
		return Result{}, refuse(ErrRevoked, c.Tenant, "", 0)
	}
	// A tenant whose anchor is deleted can still be revoked: revocation is
	// the stronger, audited statement and must always be expressible.
	t = a.s.wTenant(c.Tenant)
	t.t.Status = StatusRevoked
	t.t.RevokedAt = a.at
	seq := a.revoked(RevokedTenant, c.Tenant, "", 0, c.Reason, src)
	a.changed(TenantRevoked, c.Tenant, "", 0, c.Reason)
	return Result{Tenant: c.Tenant, Seq: seq}, nil
}

// revocable returns the service to revoke (or revoke a version of). It is
// refused only for what is already revoked or unknown: a locked tenant or a
// deleted anchor never stands in the way of a revocation.
func (a *applier) revocable(tenant, service string) (*serviceNode, error) {
	if err := checkNames(tenant, service); err != nil {
		return nil, err
	}
	t := a.s.root.tenants[tenant]
	switch {
	case t == nil:
		return nil, refuse(ErrTenantNotFound, tenant, "", 0)
	case t.t.Status == StatusRevoked:
		return nil, refuse(ErrRevoked, tenant, "", 0)
	}
	sv := t.services[service]
	switch {
	case sv == nil:
		return nil, refuse(ErrServiceNotFound, tenant, service, 0)
	case sv.s.Status == StatusRevoked:
		return nil, refuse(ErrRevoked, tenant, service, 0)
	}
	return sv, nil
}

func (a *applier) revokeService(c RevokeService, src source) (Result, error) {
	if _, err := a.revocable(c.Tenant, c.Service); err != nil {
		return Result{}, err
	}
	if err := checkReason(c.Reason); err != nil {
		return Result{}, err
	}
	_, sv := a.s.wService(c.Tenant, c.Service)
	sv.s.Status = StatusRevoked
	sv.s.RevokedAt = a.at
	seq := a.revoked(RevokedService, c.Tenant, c.Service, 0, c.Reason, src)
	a.changed(ServiceRevoked, c.Tenant, c.Service, 0, c.Reason)
	return Result{Tenant: c.Tenant, Service: c.Service, Seq: seq}, nil
}

func (a *applier) revokeKeyVersion(c RevokeKeyVersion, src source) (Result, error) {
	sv, err := a.revocable(c.Tenant, c.Service)
	if err != nil {
		return Result{}, err
	}
	if err := checkReason(c.Reason); err != nil {
		return Result{}, err
	}
	if c.Version == 0 || int(c.Version) > len(sv.versions) {
		return Result{}, refuse(ErrVersionNotFound, c.Tenant, c.Service, c.Version)
	}
	if sv.versions[c.Version-1].Status == StatusRevoked {
		return Result{}, refuse(ErrRevoked, c.Tenant, c.Service, c.Version)
	}
	_, sv = a.s.wService(c.Tenant, c.Service)
	kv := &sv.versions[c.Version-1]
	kv.Status = StatusRevoked
	kv.RevokedAt = a.at
	seq := a.revoked(RevokedKeyVersion, c.Tenant, c.Service, c.Version, c.Reason, src)
	a.changed(KeyVersionRevoked, c.Tenant, c.Service, c.Version, c.Reason)
	return Result{Tenant: c.Tenant, Service: c.Service, Version: c.Version, Seq: seq}, nil
}

func (a *applier) deleteAnchor(c DeleteAnchor, src source) (Result, error) {
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	if err := checkReason(c.Reason); err != nil {
		return Result{}, err
	}
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil:
		return Result{}, refuse(ErrTenantNotFound, c.Tenant, "", 0)
	case t.t.AnchorDeleted:
		return Result{}, refuse(ErrAnchorDeleted, c.Tenant, "", 0)
	}
	t = a.s.wTenant(c.Tenant)
	t.t.AnchorDeleted = true
	t.t.Anchor = ""
	seq := a.revoked(RevokedAnchor, c.Tenant, "", 0, c.Reason, src)
	a.changed(AnchorDeleted, c.Tenant, "", 0, c.Reason)
	return Result{Tenant: c.Tenant, Seq: seq}, nil
}

// lastSeq is the newest revocation log entry's Seq (0 for an empty log). Compaction never drops
// the newest entry, so numbering goes on where it was.
func (r *root) lastSeq() uint64 {
	if len(r.revlog) == 0 {
		return 0
	}
	return r.revlog[len(r.revlog)-1].Seq
}

// compactRevocations drops the history entries with Seq up to c.Through: it keeps the revocations
// in force (InForce: what enforcing them forever, and checking a restore against them, needs) and
// the newest entry. The log is replaced by a new slice: a snapshot being persisted may share the
// old one.
func (a *applier) compactRevocations(c CompactRevocations) (Result, error) {
	if c.Through == 0 {
		return Result{}, invalid(ErrInvalidCommand, "through")
	}
	r := a.s.root
	if len(r.revlog) == 0 {
		return Result{}, nil
	}
	last := r.lastSeq()
	keep := map[uint64]bool{last: true}
	for _, rv := range InForce(r.revlog) {
		keep[rv.Seq] = true
	}
	out := make([]Revocation, 0, len(r.revlog))
	for _, rv := range r.revlog {
		if rv.Seq > c.Through || keep[rv.Seq] {
			out = append(out, rv)
		}
	}
	if len(out) < len(r.revlog) {
		a.s.wRoot().revlog = out
	}
	return Result{}, nil
}

// InForce returns the revocations of log that still stand: the log also records governance events
// that revoke nothing, refused ones, and anchor deletions that a later SetAnchor from governance
// lifted (the kill switch is reversible; revocation is not).
func InForce(log []Revocation) []Revocation {
	lifted := map[string]bool{} // tenants whose anchor a later event set, walking back
	var out []Revocation
	for i := len(log) - 1; i >= 0; i-- {
		r := log[i]
		if r.Kind == EventAnchorSet && r.Error == "" {
			lifted[r.Tenant] = true
		}
		if r.Error != "" || !r.Kind.IsRevocation() || (r.Kind == RevokedAnchor && lifted[r.Tenant]) {
			continue
		}
		out = append(out, r)
	}
	slices.Reverse(out)
	return out
}
