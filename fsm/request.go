package fsm

import (
	"crypto/sha256"
)

// requestDigest returns what a request id names: SHA-256 of the command's type and every
// parameter its caller chose, in the command's log encoding, without what the leader prepared
// for it (sealed blobs, the version a rotation makes, the L2 version that sealed it) and without
// the request id and time, which are not in the command. A retry that a leader re-prepared
// carries fresh blobs, a later version and a new time and is still the same request; anything
// else is another request, and reusing its id is ErrRequestIDReused (common.proto, "Idempotency").
// Encoding a decoded command is deterministic, so every node computes the same digest.
func requestDigest(c Command) ([32]byte, error) {
	switch v := c.(type) {
	case CreateTenant:
		v.SealedL2 = nil
		c = v
	case RotateTenantKey:
		c = RotateTenantKey{Tenant: v.Tenant}
	case CreateService:
		c = CreateService{Tenant: v.Tenant, Service: v.Service}
	case RotateServiceKey:
		c = RotateServiceKey{Tenant: v.Tenant, Service: v.Service}
	case SetAnchor:
		v.Resealed = nil
		c = v
	}
	b, err := encodeCommand(c)
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	h.Write([]byte(c.Type()))
	h.Write([]byte{0})
	h.Write(b)
	return [32]byte(h.Sum(nil)), nil
}

// Validate checks everything about an entry that does not depend on the state: the request id,
// names, the shape and size of blobs, anchors, reasons, policies and settings. Apply makes the
// same checks (they stay its last line); proposers call Validate before anything reaches the
// Raft log, so that a malformed command is refused where it arrives and never costs every node
// a log entry (a refused multi-megabyte reason would otherwise be replicated and stored).
//
// A governance event is checked only as an envelope (cursor, event id, a refusal's code): the
// feed must record even an event whose command this region refuses, so its command is Apply's to
// judge.
func Validate(e Entry) error {
	if len(e.RequestID) > MaxRequestID {
		return invalid(ErrInvalidCommand, "request-id")
	}
	if e.Command == nil {
		return invalid(ErrInvalidCommand, "command")
	}
	if err := checkOrigin(e.Origin); err != nil {
		return err
	}
	return validate(deref(e.Command))
}

func validate(cmd Command) error {
	switch c := cmd.(type) {
	case CreateTenant:
		return firstErr(checkTenantName(c.Tenant), checkAnchor(c.Anchor), checkBlob(c.SealedL2, "sealed-l2"), checkOwnerKey(c.OwnerKey))
	case RotateTenantKey:
		return firstErr(checkTenantName(c.Tenant), checkBlob(c.SealedL2, "sealed-l2"))
	case CreateService:
		return firstErr(checkNames(c.Tenant, c.Service), checkBlob(c.SealedL3, "sealed-l3"))
	case RotateServiceKey:
		return firstErr(checkNames(c.Tenant, c.Service), checkBlob(c.SealedL3, "sealed-l3"))
	case RevokeTenant:
		return firstErr(checkTenantName(c.Tenant), checkReason(c.Reason))
	case RevokeService:
		return firstErr(checkNames(c.Tenant, c.Service), checkReason(c.Reason))
	case RevokeKeyVersion:
		return firstErr(checkNames(c.Tenant, c.Service), checkReason(c.Reason))
	case LockTenant:
		return firstErr(checkTenantName(c.Tenant), checkReason(c.Reason))
	case UnlockTenant:
		return checkTenantName(c.Tenant)
	case SetAnchor:
		if err := firstErr(checkTenantName(c.Tenant), checkAnchor(c.Anchor), checkConsent(c.Consent)); err != nil {
			return err
		}
		for _, b := range c.Resealed {
			if err := checkBlob(b, "resealed"); err != nil {
				return err
			}
		}
		return nil
	case DeleteAnchor:
		return firstErr(checkTenantName(c.Tenant), checkReason(c.Reason))
	case SetPolicy:
		return firstErr(checkTenantName(c.Tenant), checkPolicy(c.Policy))
	case SetSettings:
		return c.Settings.Validate()
	case CompactRevocations:
		if c.Through == 0 {
			return invalid(ErrInvalidCommand, "through")
		}
		return nil
	case SetQuota:
		return checkQuota(c)
	case SetOwnerKey:
		if c.OwnerKey == "" {
			return invalid(ErrInvalidCommand, "owner-key")
		}
		return firstErr(checkTenantName(c.Tenant), checkOwnerKey(c.OwnerKey), checkConsent(c.Consent))
	case SetTenantRegions:
		return firstErr(checkTenantName(c.Tenant), checkRegions(c.Regions, c.Home))
	case RemoveTenant:
		return firstErr(checkTenantName(c.Tenant), checkReason(c.Reason))
	case ResyncTenant:
		if err := checkTenantName(c.Tenant); err != nil {
			return err
		}
		if len(c.Services) > maxResyncServices {
			return invalid(ErrInvalidCommand, "services")
		}
		return checkReason(c.Lock)
	case ApplyGovernanceEvent:
		switch {
		case c.Cursor == 0:
			return invalid(ErrInvalidCommand, "cursor")
		case len(c.EventID) > maxEventID:
			return invalid(ErrInvalidCommand, "event-id")
		case c.Event == nil:
			return invalid(ErrInvalidCommand, "event")
		case c.Refused != nil && codeOf(c.Refused) == "":
			return invalid(ErrInvalidCommand, "refused")
		}
		if _, nested := deref(c.Event).(ApplyGovernanceEvent); nested {
			return invalid(ErrInvalidCommand, "event")
		}
		return nil
	}
	return invalid(ErrInvalidCommand, "type")
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
