package fsm

import (
	"encoding/hex"
	"time"

	"github.com/kryptonkms/krypton/internal/owner"
)

// Tenant owner keys (docs/security.md, "Tenant owner consent"). A tenant may have an owner key:
// a public key whose private half the customer holds and the operator does not. A region's own
// rekey (a SetAnchor proposed by the region, not by governance's feed) of a tenant with an owner
// key needs the owner's consent, verified here against the key this state holds, at the entry's
// time, for exactly this tenant, anchor, region and request id, and used once. The region's
// handlers verify the same consent before proposing; this is the last line, where the key may
// have changed meanwhile and where a command proposed past the handlers is refused.
//
// Verifying a signature is deterministic (Ed25519 and ECDSA verification read no randomness,
// go-jose parses without I/O, and the time is the entry's), so every replica decides alike.
// Package internal/owner also makes keys with crypto/rand, which Apply never calls.

// SetOwnerKey registers a tenant's owner public key (PKIX PEM), or replaces it. The first key of
// a tenant without one is registered on the operator's word (and audited by the region): tenants
// made before owner keys must not be left unable ever to be rekeyed. Replacing a key needs a
// consent by the current key over {tenant, op "set-owner", the new key's fingerprint, region,
// request id}. It is a region's own command: governance's feed carries no owner keys.
type SetOwnerKey struct {
	Tenant   string `json:"tenant"`
	OwnerKey string `json:"owner-key"`
	Consent  string `json:"consent,omitempty"`
}

func (SetOwnerKey) Type() string { return "set-owner-key" }
func (SetOwnerKey) command()     {}

// maxLiveConsents bounds the unexpired consents one tenant keeps (each lives at most
// owner.MaxTTL), as governance does.
const maxLiveConsents = 256

// ownerState is a tenant's owner key and the consents applied with it that may not have expired.
// It is replaced whole, never changed in place, so a snapshot being written may share it.
type ownerState struct {
	pem         string // PKIX PEM; "" for a tenant without an owner key
	fingerprint string // owner.PublicKey.Fingerprint of key
	consents    []usedConsent
}

// usedConsent is a consent applied: its digest (owner.Consent.Digest, hex SHA-256) and expiry
// (Unix seconds). Until it expires, the same consent is refused (ErrConsentUsed), even under a
// request id the dedupe table has forgotten.
type usedConsent struct {
	digest  string
	expires int64
}

// newOwnerState parses an owner key for a tenant ("" for none).
func newOwnerState(pem string) (ownerState, error) {
	if pem == "" {
		return ownerState{}, nil
	}
	k, err := owner.ParsePublicKey(pem)
	if err != nil {
		return ownerState{}, invalid(ErrInvalidCommand, "owner-key")
	}
	return ownerState{pem: pem, fingerprint: k.Fingerprint()}, nil
}

// checkOwnerKey refuses an owner key that does not parse ("" is no key, and passes).
func checkOwnerKey(pem string) error {
	_, err := newOwnerState(pem)
	return err
}

// checkConsent refuses a consent too long to be one; whether it verifies depends on the state.
func checkConsent(c string) error {
	if len(c) > owner.MaxConsent {
		return invalid(ErrInvalidCommand, "consent")
	}
	return nil
}

// OwnerKey returns a tenant's owner public key (PKIX PEM) and its fingerprint, both empty if the
// tenant has none.
func (s *State) OwnerKey(tenant string) (pem, fingerprint string, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.root.tenants[tenant]
	if t == nil {
		return "", "", refuse(ErrTenantNotFound, tenant, "", 0)
	}
	return t.owner.pem, t.owner.fingerprint, nil
}

// UsedConsents returns the consents applied with tenant's owner key that the state still records
// (digest to expiry, Unix seconds; some may have expired since), nil for an unknown tenant. A
// region's restore check uses it to refuse a snapshot that would forget one still valid.
func (s *State) UsedConsents(tenant string) map[string]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.root.tenants[tenant]
	if t == nil {
		return nil
	}
	out := make(map[string]int64, len(t.owner.consents))
	for _, u := range t.owner.consents {
		out[u.digest] = u.expires
	}
	return out
}

// consume verifies consent against t's owner key as st, at the entry's time, and returns t's
// owner state with the consent recorded as used; the caller stores it once nothing else can
// refuse the command. Expired consents are dropped from the record here.
func (a *applier) consume(t *tenantNode, consent string, st owner.Statement) (ownerState, error) {
	name := t.t.Name
	key, err := owner.ParsePublicKey(t.owner.pem)
	if err != nil {
		return ownerState{}, refuse(ErrConsentDenied, name, "", 0)
	}
	now := time.Unix(0, a.at)
	cs, err := owner.Verify(consent, key, st, now)
	if err != nil {
		return ownerState{}, refuse(ErrConsentDenied, name, "", 0)
	}
	secs := now.Unix()
	live := make([]usedConsent, 0, len(t.owner.consents)+1)
	for _, u := range t.owner.consents {
		if u.expires <= secs {
			continue
		}
		if u.digest == cs.Digest {
			return ownerState{}, refuse(ErrConsentUsed, name, "", 0)
		}
		live = append(live, u)
	}
	if len(live) >= maxLiveConsents {
		return ownerState{}, &Error{Err: ErrConsentDenied, Tenant: name, Field: "consents"}
	}
	o := t.owner
	o.consents = append(live, usedConsent{digest: cs.Digest, expires: cs.Expires})
	return o, nil
}

// rekeyConsent checks the owner's consent to a SetAnchor and returns the owner state to store
// with it (nil: nothing to store). A SetAnchor from governance's feed takes no consent here:
// governance verified the owner's consent before it made the event. A region's own SetAnchor
// (a rekey) of a tenant with an owner key needs one over {tenant, op "rekey", anchor, this
// region, request id}; one of a tenant without an owner key takes none: such commands are in
// logs from before owner keys, and the region's handler refuses new ones (ErrNoOwnerKey).
func (a *applier) rekeyConsent(t *tenantNode, c SetAnchor, src source) (*ownerState, error) {
	if src.cursor != 0 {
		if c.Consent != "" {
			return nil, invalid(ErrInvalidCommand, "consent")
		}
		return nil, nil
	}
	if t.owner.pem == "" {
		if c.Consent != "" {
			return nil, refuse(ErrConsentDenied, c.Tenant, "", 0)
		}
		return nil, nil
	}
	o, err := a.consume(t, c.Consent, owner.Statement{Tenant: c.Tenant, Op: owner.OpRekey, Anchor: c.Anchor, Region: a.s.region, RequestID: src.requestID})
	if err != nil {
		return nil, err
	}
	return &o, nil
}

func (a *applier) setOwnerKey(c SetOwnerKey, src source) (Result, error) {
	if src.cursor != 0 {
		return Result{}, invalid(ErrInvalidCommand, "event") // governance's feed carries no owner keys
	}
	if err := checkTenantName(c.Tenant); err != nil {
		return Result{}, err
	}
	if c.OwnerKey == "" {
		return Result{}, invalid(ErrInvalidCommand, "owner-key")
	}
	next, err := newOwnerState(c.OwnerKey)
	if err != nil {
		return Result{}, err
	}
	if err := checkConsent(c.Consent); err != nil {
		return Result{}, err
	}
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil:
		return Result{}, refuse(ErrTenantNotFound, c.Tenant, "", 0)
	case t.t.Status == StatusRevoked:
		return Result{}, refuse(ErrRevoked, c.Tenant, "", 0)
	}
	if t.owner.pem != "" {
		// Replacing a key needs the current key's consent. The consents applied so far stay
		// recorded, so none of them can be used again even if the old key comes back.
		cur, err := a.consume(t, c.Consent, owner.Statement{Tenant: c.Tenant, Op: owner.OpSetOwner, OwnerKey: next.fingerprint, Region: a.s.region, RequestID: src.requestID})
		if err != nil {
			return Result{}, err
		}
		next.consents = cur.consents
	} else if c.Consent != "" {
		return Result{}, invalid(ErrInvalidCommand, "consent") // the first key takes none
	}
	a.s.wTenant(c.Tenant).owner = next
	a.changed(OwnerKeySet, c.Tenant, "", 0, "")
	return Result{Tenant: c.Tenant}, nil
}

// writeOwner writes a tenant's owner record (since snapshot version 4), right after the tenant
// record, if the tenant has an owner key.
func writeOwner(e *recWriter, o *ownerState) {
	if o.pem == "" {
		return
	}
	e.begin()
	e.str(o.pem)
	e.uvarint(uint64(len(o.consents)))
	for _, u := range o.consents {
		e.str(u.digest)
		e.varint(u.expires)
	}
	e.end(recOwner)
}

// readOwner reads an owner record; ok is false if it is malformed.
func readOwner(d *recReader) (ownerState, bool) {
	o, err := newOwnerState(d.str())
	count := d.uvarint()
	if err != nil || o.pem == "" || d.bad || count > maxLiveConsents {
		return ownerState{}, false
	}
	for range count {
		u := usedConsent{digest: d.str(), expires: d.varint()}
		if b, err := hex.DecodeString(u.digest); err != nil || len(b) != 32 || hex.EncodeToString(b) != u.digest {
			return ownerState{}, false
		}
		o.consents = append(o.consents, u)
	}
	return o, d.ok()
}
