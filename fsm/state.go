package fsm

import (
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
	// OnApplied, if set, is called once per applied entry (refused or not), synchronously, in
	// log order, after OnChange returned for its changes and before AppliedIndex advances to its
	// index: once AppliedIndex() >= i, OnApplied has returned for every entry at or below i. It
	// is not called for a snapshot's restore. The region and governance write their audit
	// record of each replicated change here, on every node. Same rules as OnChange: it must
	// not block for long, may call the State's queries, must not call Apply or Restore.
	OnApplied func(Applied)
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
	onChange  func(Change)
	onApplied func(Applied)
	region    string

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
	s := &State{onChange: opts.OnChange, onApplied: opts.OnApplied, gen: 1, region: opts.Region}
	s.root = newRoot(s.gen)
	return s
}

// root is the whole replicated state. Every node reachable from a root is
// either owned by the current generation (and may be changed in place under
// mu) or older and immutable.
type root struct {
	gen      uint64
	tenants  map[string]*tenantNode
	revlog   []Revocation // Seq ascending; appended to, and replaced whole by CompactRevocations: elements are never changed
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
	var oldAnchor string
	if s.onApplied != nil {
		oldAnchor = s.anchorBefore(e.Command)
	}
	res, err := a.entry(e)
	s.mu.Unlock()
	if s.onChange != nil {
		for _, c := range a.changes {
			s.onChange(c)
		}
	}
	if s.onApplied != nil {
		s.onApplied(Applied{Index: index, Entry: e, Result: res, Err: err, OldAnchor: oldAnchor})
	}
	s.applied.Store(index)
	return res, err
}

// anchorBefore returns the anchor of the tenant a SetAnchor (its own or a governance event's)
// re-points, for OnApplied. The caller holds mu.
func (s *State) anchorBefore(c Command) string {
	c = deref(c)
	if g, ok := c.(ApplyGovernanceEvent); ok && g.Event != nil {
		c = deref(g.Event)
	}
	if sa, ok := c.(SetAnchor); ok {
		if t, ok := s.root.tenants[sa.Tenant]; ok {
			return t.t.Anchor
		}
	}
	return ""
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
	if err := checkOrigin(e.Origin); err != nil {
		return Result{}, err
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

// command dispatches a command to its applier. The appliers live by subject: applytenants.go
// (tenants, their anchor, lock, policy and resync), applyservices.go (services and their key
// versions), applyrevocations.go (revocations and anchor deletion) and applygovernance.go
// (governance events).
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
	case CompactRevocations:
		return a.compactRevocations(c)
	case SetPolicy:
		return a.setPolicy(c)
	case ResyncTenant:
		return a.resyncTenant(c)
	case SetTenantRegions:
		return a.setTenantRegions(c)
	case RemoveTenant:
		return a.removeTenant(c)
	case SetOwnerKey:
		return a.setOwnerKey(c, src)
	case SetQuota:
		return a.setQuota(c)
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
