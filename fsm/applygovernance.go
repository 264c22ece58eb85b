package fsm

func (a *applier) governance(c ApplyGovernanceEvent) (Result, error) {
	if c.Cursor == 0 {
		return Result{}, invalid(ErrInvalidCommand, "cursor")
	}
	if len(c.EventID) > maxEventID {
		return Result{}, invalid(ErrInvalidCommand, "event-id")
	}
	if c.Event == nil {
		return Result{}, invalid(ErrInvalidCommand, "event")
	}
	ev := deref(c.Event)
	if _, nested := ev.(ApplyGovernanceEvent); nested {
		return Result{}, invalid(ErrInvalidCommand, "event")
	}
	if c.Cursor <= a.s.root.cursor {
		return Result{Cursor: a.s.root.cursor, Skipped: true}, nil
	}
	if c.After != a.s.root.cursor {
		return Result{}, &Error{Err: ErrCursorMismatch, Field: "after"}
	}
	if c.Refused != nil && codeOf(c.Refused) == "" {
		return Result{}, invalid(ErrInvalidCommand, "refused")
	}
	src := source{cursor: c.Cursor, eventID: c.EventID}
	var (
		res Result
		err = c.Refused
	)
	if err == nil {
		res, err = a.command(ev, src)
	}
	a.s.wRoot().cursor = c.Cursor
	kind := eventKind(ev)
	if err != nil || !kind.IsRevocation() {
		// Successful revocations log themselves; everything else the feed
		// applied is logged here, so that the log holds one entry per event.
		rv := eventTarget(ev)
		rv.Kind = kind
		if err != nil {
			rv.Error = codeOf(err)
		}
		seq := a.logged(rv, src)
		if err != nil {
			res = Result{EventErr: err, Seq: seq}
		}
	}
	res.Cursor = c.Cursor
	return res, nil
}

// eventTarget returns what a governance event's command concerns, for the
// revocation log. Names are left out unless valid: a refused command may
// carry anything.
func eventTarget(c Command) Revocation {
	var rv Revocation
	switch c := c.(type) {
	case RevokeTenant:
		rv.Tenant, rv.Reason = c.Tenant, c.Reason
	case RevokeService:
		rv.Tenant, rv.Service, rv.Reason = c.Tenant, c.Service, c.Reason
	case RevokeKeyVersion:
		rv.Tenant, rv.Service, rv.Version, rv.Reason = c.Tenant, c.Service, c.Version, c.Reason
	case DeleteAnchor:
		rv.Tenant, rv.Reason = c.Tenant, c.Reason
	case LockTenant:
		rv.Tenant, rv.Reason = c.Tenant, c.Reason
	case UnlockTenant:
		rv.Tenant = c.Tenant
	case SetAnchor:
		rv.Tenant = c.Tenant
	case SetPolicy:
		rv.Tenant = c.Tenant
	case SetQuota:
		rv.Tenant, rv.Service = c.Tenant, c.Service
	case ResyncTenant:
		rv.Tenant = c.Tenant
	case SetTenantRegions:
		rv.Tenant = c.Tenant
	case RemoveTenant:
		rv.Tenant, rv.Reason = c.Tenant, c.Reason
	case CreateTenant:
		rv.Tenant = c.Tenant
	case CreateService:
		rv.Tenant, rv.Service = c.Tenant, c.Service
	case RotateTenantKey:
		rv.Tenant = c.Tenant
	case RotateServiceKey:
		rv.Tenant, rv.Service = c.Tenant, c.Service
	}
	if !validName(rv.Tenant) {
		rv.Tenant = ""
	}
	if !validName(rv.Service) {
		rv.Service = ""
	}
	if len(rv.Reason) > maxReasonLen {
		rv.Reason = ""
	}
	return rv
}
