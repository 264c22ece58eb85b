package fsm

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/wrap"
)

// Options configure a State or FSM.
type Options struct {
	// OnChange, if set, is called once per applied change, synchronously,
	// in log order, from the goroutine that calls Apply or Restore, after
	// the change is visible to queries and before AppliedIndex advances past
	// it. So once AppliedIndex() >= i, OnChange has returned for every
	// change at or below i: the region wipes its keyring here, and a read
	// barrier at a revocation's index implies the wipe happened.
	//
	// It must not block: Raft applies nothing else until it returns. It may
	// call the State's queries, and must not call Apply or Restore.
	OnChange func(Change)
	// Region is the region's name, which an owner's consent to a rekey names (owner.go). It is
	// the same on every node of a region, for good: the sealed L2 versions are bound to it too.
	Region string
}

// State is the region's deterministic state machine: Apply a log of entries
// to it, in order, and every node ends with the same state and Hash. It does
// no I/O and reads no clock or randomness. It is safe for concurrent use:
// Apply and Restore are serialised by the caller (Raft applies one entry at
// a time); queries may run concurrently with them and with each other.
//
// Locking: mu guards root and gen. Apply and Restore hold mu for writing
// while they change the state (never while calling OnChange); queries and
// Usable hold it for reading. applied is atomic and only advanced after
// OnChange returns. A snapshot holds no lock: see cow.
type State struct {
	onChange func(Change)
	region   string

	mu   sync.RWMutex
	root *root
	// gen is the current write generation. Nodes stamped with an older
	// generation may be shared with a snapshot being persisted, and are
	// copied before they are changed (copy-on-write).
	gen uint64

	applied atomic.Uint64
}

// NewState returns an empty State with DefaultSettings.
func NewState(opts Options) *State {
	s := &State{onChange: opts.OnChange, gen: 1, region: opts.Region}
	s.root = newRoot(s.gen)
	return s
}

// root is the whole replicated state. Every node reachable from a root is
// either owned by the current generation (and may be changed in place under
// mu) or older and immutable.
type root struct {
	gen      uint64
	tenants  map[string]*tenantNode
	revlog   []Revocation // append-only: elements are never changed
	cursor   uint64
	settings Settings
	dedupe   dedupe
}

type tenantNode struct {
	gen      uint64
	t        Tenant // t.L2 elements are changed in place only if gen is current
	services map[string]*serviceNode
	// policy is replaced whole by SetPolicy, never changed in place, so
	// sharing its rules with a snapshot is safe.
	policy policy.Policy
	owner  ownerState // replaced whole, likewise (owner.go)
}

type serviceNode struct {
	gen      uint64
	s        Service
	versions []KeyVersion // versions[i].Version == i+1
}

// dedupe remembers the results of the last Settings.DedupeWindow request
// ids, evicting by log order so that every node evicts the same ids.
type dedupe struct {
	ids   map[string]dedupeEntry
	order []string // oldest first; order[0] is evicted first
}

type dedupeEntry struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Result Result `json:"result"`
	// Digest names the request the id was used for (requestDigest). It is zero for an entry
	// restored from a snapshot older than version 3, which cannot show that a retry is the same
	// request: any use of such an id is refused, not answered.
	Digest [32]byte `json:"digest"`
}

func newRoot(gen uint64) *root {
	return &root{
		gen:      gen,
		tenants:  map[string]*tenantNode{},
		settings: DefaultSettings(),
		dedupe:   dedupe{ids: map[string]dedupeEntry{}},
	}
}

// Copy-on-write. After a snapshot captures the root, gen is bumped, so
// everything the snapshot can reach is older than gen. The w* helpers below
// return a node of the current generation, copying the older one first
// (shallowly: its children are copied when they are themselves written).
// Appending to a slice shared with a snapshot is safe because the snapshot
// never reads past the length it captured; changing an element is not, so
// slices with changed elements are copied.

func (s *State) wRoot() *root {
	r := s.root
	if r.gen == s.gen {
		return r
	}
	n := *r
	n.gen = s.gen
	n.tenants = maps.Clone(r.tenants)
	n.dedupe = dedupe{ids: maps.Clone(r.dedupe.ids), order: r.dedupe.order}
	s.root = &n
	return &n
}

func (s *State) wTenant(name string) *tenantNode {
	r := s.wRoot()
	t := r.tenants[name]
	if t.gen == s.gen {
		return t
	}
	n := *t
	n.gen = s.gen
	n.t.L2 = slices.Clone(t.t.L2)
	n.services = maps.Clone(t.services)
	r.tenants[name] = &n
	return &n
}

func (s *State) wService(tenant, name string) (*tenantNode, *serviceNode) {
	t := s.wTenant(tenant)
	sv := t.services[name]
	if sv.gen == s.gen {
		return t, sv
	}
	n := *sv
	n.gen = s.gen
	n.versions = slices.Clone(sv.versions)
	t.services[name] = &n
	return t, &n
}

// AppliedIndex returns the log index of the last entry applied (or restored
// from a snapshot). It advances only after OnChange returned for the entry.
func (s *State) AppliedIndex() uint64 { return s.applied.Load() }

// source is where a change came from, for the revocation log.
type source struct {
	requestID string
	cursor    uint64
	eventID   string
}

// Apply applies one entry at log index index. It returns the command's
// Result, or a refusal (an *Error wrapping one of the sentinels), in which
// case the state did not change at all (AppliedIndex still advances: the
// entry was applied, as a no-op). Entries must be applied in log order.
func (s *State) Apply(index uint64, e Entry) (Result, error) {
	s.mu.Lock()
	a := applier{s: s, index: index, at: e.At}
	res, err := a.entry(e)
	s.mu.Unlock()
	if s.onChange != nil {
		for _, c := range a.changes {
			s.onChange(c)
		}
	}
	s.applied.Store(index)
	return res, err
}

// applier applies one entry; it holds the changes for OnChange.
type applier struct {
	s       *State
	index   uint64
	at      int64
	changes []Change
}

func (a *applier) changed(kind ChangeKind, tenant, service string, version uint32, reason string) {
	if a.s.onChange != nil {
		a.changes = append(a.changes, Change{Index: a.index, Kind: kind, Tenant: tenant, Service: service, Version: version, Reason: reason})
	}
}

func (a *applier) entry(e Entry) (Result, error) {
	if e.Command == nil {
		return Result{}, invalid(ErrInvalidCommand, "command")
	}
	cmd := deref(e.Command)
	if len(e.RequestID) > MaxRequestID {
		return Result{}, invalid(ErrInvalidCommand, "request-id")
	}
	var digest [32]byte
	if e.RequestID != "" {
		var err error
		if digest, err = requestDigest(cmd); err != nil {
			return Result{}, invalid(ErrInvalidCommand, "command")
		}
		if d, ok := a.s.root.dedupe.ids[e.RequestID]; ok {
			// A request id names one exact request: the same id with another type or other
			// parameters is refused, never answered with the first request's result (which
			// would acknowledge a revocation that was not made).
			if d.Type != cmd.Type() || d.Digest != digest {
				return Result{}, invalid(ErrRequestIDReused, "request-id")
			}
			res := d.Result
			res.Duplicate = true
			return res, nil
		}
	}
	res, err := a.command(cmd, source{requestID: e.RequestID})
	if err != nil {
		return Result{}, err
	}
	res.Index = a.index
	if e.RequestID != "" {
		r := a.s.wRoot()
		r.dedupe.add(dedupeEntry{ID: e.RequestID, Type: cmd.Type(), Result: res, Digest: digest}, r.settings.DedupeWindow)
	}
	return res, nil
}

func (d *dedupe) add(e dedupeEntry, window int) {
	d.ids[e.ID] = e
	d.order = append(d.order, e.ID)
	d.trim(window)
}

func (d *dedupe) trim(window int) {
	for len(d.order) > window {
		delete(d.ids, d.order[0])
		d.order = d.order[1:]
	}
}

func (a *applier) command(cmd Command, src source) (Result, error) {
	switch c := cmd.(type) {
	case CreateTenant:
		return a.createTenant(c)
	case RotateTenantKey:
		return a.rotateTenantKey(c)
	case CreateService:
		return a.createService(c)
	case RotateServiceKey:
		return a.rotateServiceKey(c)
	case RevokeTenant:
		return a.revokeTenant(c, src)
	case RevokeService:
		return a.revokeService(c, src)
	case RevokeKeyVersion:
		return a.revokeKeyVersion(c, src)
	case LockTenant:
		return a.lockTenant(c)
	case UnlockTenant:
		return a.unlockTenant(c)
	case SetAnchor:
		return a.setAnchor(c, src)
	case DeleteAnchor:
		return a.deleteAnchor(c, src)
	case ApplyGovernanceEvent:
		if src.cursor != 0 {
			return Result{}, invalid(ErrInvalidCommand, "event")
		}
		return a.governance(c)
	case SetSettings:
		return a.setSettings(c)
	case SetPolicy:
		return a.setPolicy(c)
	case ResyncTenant:
		return a.resyncTenant(c)
	case SetOwnerKey:
		return a.setOwnerKey(c, src)
	}
	return Result{}, invalid(ErrInvalidCommand, "type")
}

// Limits on command fields, so that an oversized input is refused whole.
const (
	maxAnchorLen = 2048
	maxBlobLen   = 4096
	maxReasonLen = 1024
	maxEventID   = 256
)

// validName reports whether name is a valid tenant or service name, by
// Krypton's one definition of a name.
func validName(name string) bool {
	return wrap.ValidateName(name) == nil
}

func checkTenantName(name string) error {
	if !validName(name) {
		return invalid(ErrInvalidName, "tenant")
	}
	return nil
}

func checkNames(tenant, service string) error {
	if err := checkTenantName(tenant); err != nil {
		return err
	}
	if !validName(service) {
		return invalid(ErrInvalidName, "service")
	}
	return nil
}

func checkBlob(b []byte, field string) error {
	if len(b) == 0 || len(b) > maxBlobLen {
		return invalid(ErrInvalidCommand, field)
	}
	return nil
}

func checkAnchor(uri string) error {
	// fsm does not know the anchor schemes (package anchor does); it only
	// refuses what cannot be a URI at all.
	if len(uri) < 3 || len(uri) > maxAnchorLen {
		return invalid(ErrInvalidCommand, "anchor")
	}
	for i := 0; i < len(uri); i++ {
		if uri[i] < 0x21 || uri[i] > 0x7e {
			return invalid(ErrInvalidCommand, "anchor")
		}
	}
	return nil
}

func checkReason(r string) error {
	if len(r) > maxReasonLen {
		return invalid(ErrInvalidCommand, "reason")
	}
	return nil
}

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

func (a *applier) revoked(kind RevocationKind, tenant, service string, version uint32, reason string, src source) uint64 {
	return a.logged(Revocation{Kind: kind, Tenant: tenant, Service: service, Version: version, Reason: reason}, src)
}

// logged appends rv to the revocation log, stamped with its sequence
// number, index, time and source.
func (a *applier) logged(rv Revocation, src source) uint64 {
	r := a.s.wRoot()
	rv.Seq = uint64(len(r.revlog)) + 1
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
	// Everything checked: from here on no part is refused.
	res := Result{Tenant: c.Tenant}
	if c.Create != nil {
		if _, err := a.createTenant(*c.Create); err != nil {
			return Result{}, err
		}
		res.Version = 1
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
	case ResyncTenant:
		rv.Tenant = c.Tenant
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

func (a *applier) setSettings(c SetSettings) (Result, error) {
	if err := c.Settings.Validate(); err != nil {
		return Result{}, err
	}
	r := a.s.wRoot()
	r.settings = c.Settings
	r.dedupe.trim(c.Settings.DedupeWindow)
	a.changed(SettingsChanged, "", "", 0, "")
	return Result{}, nil
}
