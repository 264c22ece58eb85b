package govfsm

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/wrap"
)

// requestTTL is how long request ids are remembered (common.proto promises at least 24 hours), by
// the commands' own clock so that every node prunes the same ids; maxRequests bounds them whatever
// their age.
const (
	requestTTL  = 48 * 3600 * 1e9 // ns
	maxRequests = 1 << 20
)

// FSM is the governance state machine (a raft.FSM). Its Apply is a pure function of the state and
// the command: no clock, no randomness, no I/O. The methods that read state are safe for concurrent
// use with Apply.
type FSM struct {
	mu      sync.RWMutex  // guards st and changed
	st      *state        // replaced whole by Restore
	changed chan struct{} // closed (and replaced) after every Apply and Restore
}

// state is everything governance replicates. Its JSON form is the snapshot.
type state struct {
	Tenants  map[string]*tenant `json:"tenants"`
	Events   []*Event           `json:"events"` // Events[i].Cursor == i+1
	Requests []*request         `json:"requests"`
	Regions  map[string]*region `json:"regions"`
	LastTime int64              `json:"last-time"`

	reqIndex map[string]*request // by id; rebuilt from Requests
}

type tenant struct {
	Name            string              `json:"name"`
	AnchorURI       string              `json:"anchor,omitempty"`
	Regions         []string            `json:"regions"`
	Locked          bool                `json:"locked,omitempty"`
	AnchorDeletedAt int64               `json:"anchor-deleted,omitempty"`
	CreatedAt       int64               `json:"created"`
	Cursor          uint64              `json:"cursor"`
	RevokeCursor    uint64              `json:"revoked,omitempty"`       // the REVOKE_TENANT event
	DeleteCursor    uint64              `json:"delete-cursor,omitempty"` // the DELETE_ANCHOR in force
	Services        map[string]*service `json:"services,omitempty"`
	Policy          *Policy             `json:"policy,omitempty"`
	// OwnerKey is the tenant owner's public key (PKIX PEM), whose consent moving the anchor needs;
	// Consents are the consents applied that have not expired yet, each usable once. Both absent in
	// snapshots from before owner keys, which restore as tenants without one.
	OwnerKey string        `json:"owner-key,omitempty"`
	Consents []usedConsent `json:"consents,omitempty"`
}

// usedConsent is a consent applied: its digest (owner.Consent.Digest) and expiry (Unix s).
type usedConsent struct {
	Digest  string `json:"digest"`
	Expires int64  `json:"exp"`
}

// maxLiveConsents bounds the unexpired consents one tenant keeps (each lives at most owner.MaxTTL).
const maxLiveConsents = 256

type service struct {
	CreatedAt    int64             `json:"created"`
	Cursor       uint64            `json:"cursor"`
	RevokeCursor uint64            `json:"revoked,omitempty"`
	Versions     map[uint32]uint64 `json:"versions,omitempty"` // revoked version -> its event
}

type request struct {
	ID          string `json:"id"`
	Fingerprint string `json:"fp"`
	Cursor      uint64 `json:"cursor"` // the event it made (0: none)
	Time        int64  `json:"time"`
}

type region struct {
	Cursor     uint64   `json:"cursor"`
	ReportedAt int64    `json:"reported"`
	Inventory  []KeyRef `json:"inventory,omitempty"`
	// The region's Raft configuration as governance last learned it from an accepted report (the
	// highest index): once it is known, only its voters may report (DESIGN.md, "Who may report").
	ConfigIndex uint64   `json:"cfg-index,omitempty"`
	Voters      []string `json:"voters,omitempty"`
}

// admits reports whether node may report for region r: any node until a configuration is known
// (trust on first use, but a node reporting a configuration must be among its voters), then its
// voters only. r may be nil (never reported).
func (r *region) admits(c *Command) bool {
	if r != nil && r.ConfigIndex > 0 {
		return slices.Contains(r.Voters, c.Node)
	}
	return c.ConfigIndex == 0 || slices.Contains(c.Voters, c.Node)
}

// changes reports whether applying report c to r would change anything but the report time.
func (r *region) changes(c *Command) bool {
	if r == nil {
		return true
	}
	// A configuration index is a position in the region's log: a newer one with the same voters
	// changes nothing worth a write.
	if c.Cursor > r.Cursor || (c.ConfigIndex > r.ConfigIndex && !slices.Equal(c.Voters, r.Voters)) {
		return true
	}
	return c.HasInventory && !slices.Equal(normInventory(c.Inventory), r.Inventory)
}

// normInventory returns inv sorted and without duplicates, as the state keeps it.
func normInventory(inv []KeyRef) []KeyRef {
	out := slices.Clone(inv)
	slices.SortFunc(out, compareKeyRef)
	return slices.Compact(out)
}

func newState() *state {
	return &state{Tenants: map[string]*tenant{}, Regions: map[string]*region{}, reqIndex: map[string]*request{}}
}

// NewFSM returns an empty state machine.
func NewFSM() *FSM {
	return &FSM{st: newState(), changed: make(chan struct{})}
}

// Apply implements raft.FSM. It returns a *Result. A command that does not decode is a bug or a
// corrupt log: it stops the node loudly rather than let replicas diverge.
func (f *FSM) Apply(l *raft.Log) any {
	c, err := DecodeCommand(l.Data)
	if err != nil {
		panic(fmt.Sprintf("governance: log entry %d does not decode: %v", l.Index, err))
	}
	return f.ApplyCommand(c)
}

// ApplyCommand applies one decoded command; Apply and log replays without Raft use it.
func (f *FSM) ApplyCommand(c *Command) *Result {
	f.mu.Lock()
	defer func() {
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}()
	return f.st.apply(c)
}

// Changed returns a channel that is closed at the next Apply or Restore. Watchers take it, read the
// state, and wait on it: no polling.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

func (s *state) apply(c *Command) *Result {
	if c.Time > s.LastTime {
		s.LastTime = c.Time
	}
	now := s.LastTime // never decreases along the log
	if c.Op == OpReport {
		return s.report(c, now)
	}
	if c.RequestID == "" || c.Fingerprint == "" || wrap.ValidateName(c.Tenant) != nil {
		return &Result{Err: ErrInvalidCommand}
	}
	s.pruneRequests(now)
	if r, ok := s.reqIndex[c.RequestID]; ok {
		if r.Fingerprint != c.Fingerprint {
			return &Result{Err: ErrRequestIDReused}
		}
		res := s.result(c, s.event(r.Cursor))
		res.Retry = true
		return res
	}
	res := s.write(c, now)
	if res.Err == nil {
		var cur uint64
		if res.Event != nil {
			cur = res.Event.Cursor
		}
		r := &request{ID: c.RequestID, Fingerprint: c.Fingerprint, Cursor: cur, Time: now}
		s.Requests = append(s.Requests, r)
		s.reqIndex[r.ID] = r
	}
	return res
}

// pruneRequests forgets request ids older than requestTTL, and the oldest beyond maxRequests.
func (s *state) pruneRequests(now int64) {
	n := 0
	for n < len(s.Requests) && (len(s.Requests)-n > maxRequests || now-s.Requests[n].Time > requestTTL) {
		delete(s.reqIndex, s.Requests[n].ID)
		n++
	}
	if n > 0 {
		s.Requests = slices.Clone(s.Requests[n:])
	}
}

func (s *state) event(cursor uint64) *Event {
	if cursor == 0 || cursor > uint64(len(s.Events)) {
		return nil
	}
	return s.Events[cursor-1]
}

// emit appends an event for c and returns it.
func (s *state) emit(c *Command, kind Kind, now int64) *Event {
	e := &Event{
		Cursor:  uint64(len(s.Events)) + 1,
		ID:      c.EventID,
		Kind:    kind,
		Tenant:  c.Tenant,
		Service: c.Service,
		Version: c.Version,
		Time:    now,
		Reason:  c.Reason,
	}
	s.Events = append(s.Events, e)
	if t := s.Tenants[c.Tenant]; t != nil {
		t.Cursor = e.Cursor
	}
	return e
}

// result builds the answer to c after the fact: the event and the current state of what c concerns.
func (s *state) result(c *Command, e *Event) *Result {
	r := &Result{Event: e}
	t := s.Tenants[c.Tenant]
	if t == nil {
		return r
	}
	r.Tenant = t.view()
	switch c.Op {
	case OpCreateService:
		if sv := t.Services[c.Service]; sv != nil {
			r.Service = sv.view(t, c.Service)
		}
	case OpSetPolicy:
		if t.Policy != nil {
			r.Policy = t.Policy.clone()
		} else {
			r.Policy = &Policy{}
		}
	}
	return r
}

func (s *state) write(c *Command, now int64) *Result {
	t := s.Tenants[c.Tenant]
	if c.Op == OpCreateTenant {
		if t != nil {
			return &Result{Err: ErrTenantExists}
		}
		if len(s.Tenants) >= MaxTenants {
			return &Result{Err: ErrLimit}
		}
		if c.AnchorURI == "" || len(c.Regions) == 0 || len(c.Regions) > MaxTenantRegions || !slices.IsSorted(c.Regions) {
			return &Result{Err: ErrInvalidCommand}
		}
		for _, r := range c.Regions {
			if wrap.ValidateName(r) != nil {
				return &Result{Err: ErrInvalidCommand}
			}
		}
		if c.OwnerKey != "" && !validOwnerKey(c.OwnerKey) {
			return &Result{Err: ErrInvalidCommand}
		}
		t = &tenant{Name: c.Tenant, AnchorURI: c.AnchorURI, Regions: slices.Clone(c.Regions), CreatedAt: now, OwnerKey: c.OwnerKey}
		s.Tenants[c.Tenant] = t
		e := s.emit(c, KindCreateTenant, now)
		e.AnchorURI, e.Regions = c.AnchorURI, slices.Clone(c.Regions)
		return s.result(c, e)
	}
	if t == nil {
		return &Result{Err: ErrTenantNotFound}
	}
	switch c.Op {
	case OpCreateService:
		if wrap.ValidateName(c.Service) != nil {
			return &Result{Err: ErrInvalidCommand}
		}
		if t.RevokeCursor != 0 {
			return &Result{Err: ErrRevoked}
		}
		if t.Services[c.Service] != nil {
			return &Result{Err: ErrServiceExists}
		}
		if len(t.Services) >= MaxServices {
			return &Result{Err: ErrLimit}
		}
		if t.Services == nil {
			t.Services = map[string]*service{}
		}
		sv := &service{CreatedAt: now}
		t.Services[c.Service] = sv
		e := s.emit(c, KindCreateService, now)
		sv.Cursor = e.Cursor
		return s.result(c, e)

	case OpSetAnchor:
		if c.AnchorURI == "" {
			return &Result{Err: ErrInvalidCommand}
		}
		if t.RevokeCursor != 0 {
			return &Result{Err: ErrRevoked}
		}
		fp, err := t.consume(c, owner.Statement{Tenant: c.Tenant, Op: owner.OpSetAnchor, Anchor: c.AnchorURI, RequestID: c.RequestID}, now)
		if err != nil {
			return &Result{Err: err}
		}
		prev := t.AnchorURI
		t.AnchorURI, t.AnchorDeletedAt, t.DeleteCursor = c.AnchorURI, 0, 0
		e := s.emit(c, KindSetAnchor, now)
		e.AnchorURI, e.OwnerKey = c.AnchorURI, fp
		r := s.result(c, e)
		r.Previous = prev
		return r

	case OpSetOwnerKey:
		if t.RevokeCursor != 0 {
			return &Result{Err: ErrRevoked}
		}
		nk, err := owner.ParsePublicKey(c.OwnerKey)
		if err != nil {
			return &Result{Err: ErrInvalidCommand}
		}
		prev := ""
		if t.OwnerKey != "" {
			// Replacing a key needs the current key's consent; the first key of a tenant without
			// one is registered on the operator's word (docs/security.md, "Tenant owner consent").
			if prev, err = t.consume(c, owner.Statement{Tenant: c.Tenant, Op: owner.OpSetOwner, OwnerKey: nk.Fingerprint(), RequestID: c.RequestID}, now); err != nil {
				return &Result{Err: err}
			}
		} else if c.Consent != "" {
			return &Result{Err: ErrInvalidCommand}
		}
		t.OwnerKey = c.OwnerKey
		r := s.result(c, nil) // no event: the regions do not hold governance's owner keys
		r.Previous = prev
		return r

	case OpDeleteAnchor:
		if t.DeleteCursor != 0 {
			return s.result(c, s.event(t.DeleteCursor)) // already deleted: the original event
		}
		e := s.emit(c, KindDeleteAnchor, now)
		t.AnchorURI, t.AnchorDeletedAt, t.DeleteCursor = "", now, e.Cursor
		return s.result(c, e)

	case OpSetPolicy:
		if !ValidRules(c.Rules) {
			return &Result{Err: ErrInvalidCommand}
		}
		var rev uint64
		if t.Policy != nil {
			rev = t.Policy.Revision
		}
		if c.ExpectedRevision != 0 && c.ExpectedRevision != rev {
			return &Result{Err: ErrRevisionMismatch}
		}
		p := &Policy{Rules: c.Rules, Revision: rev + 1, UpdatedAt: now}
		t.Policy = p
		e := s.emit(c, KindSetPolicy, now)
		e.Policy = p.clone()
		return s.result(c, e)

	case OpLockTenant, OpUnlockTenant:
		if t.RevokeCursor != 0 {
			return &Result{Err: ErrRevoked}
		}
		kind := KindLockTenant
		if c.Op == OpUnlockTenant {
			if t.AnchorDeletedAt != 0 {
				return &Result{Err: ErrNoAnchor}
			}
			kind = KindUnlockTenant
		}
		t.Locked = c.Op == OpLockTenant
		return s.result(c, s.emit(c, kind, now))

	case OpRevoke:
		return s.revoke(c, t, now)

	case OpResyncTenant:
		return s.resync(c, t, now)
	}
	return &Result{Err: ErrInvalidCommand}
}

// consume checks c's consent against the tenant's owner key as st, at now (the command's clock, so
// that every replica decides alike), and records it as used. It returns the owner key's
// fingerprint. A tenant without an owner key takes a command without a consent: such commands are
// in logs from before owner keys (the API refuses new ones, ErrNoOwnerKey).
func (t *tenant) consume(c *Command, st owner.Statement, now int64) (string, error) {
	if t.OwnerKey == "" {
		if c.Consent != "" {
			return "", ErrConsentDenied
		}
		return "", nil
	}
	key, err := owner.ParsePublicKey(t.OwnerKey)
	if err != nil {
		return "", ErrConsentDenied
	}
	cs, err := owner.Verify(c.Consent, key, st, time.Unix(0, now))
	if err != nil {
		return "", ErrConsentDenied
	}
	secs := time.Unix(0, now).Unix()
	t.Consents = slices.DeleteFunc(t.Consents, func(u usedConsent) bool { return u.Expires <= secs })
	if slices.ContainsFunc(t.Consents, func(u usedConsent) bool { return u.Digest == cs.Digest }) {
		return "", ErrConsentUsed
	}
	if len(t.Consents) >= maxLiveConsents {
		return "", ErrLimit
	}
	t.Consents = append(t.Consents, usedConsent{Digest: cs.Digest, Expires: cs.Expires})
	return key.Fingerprint(), nil
}

// resync emits a RESYNC_TENANT event: what a region needs to converge on the tenant as governance
// holds it now (governance/DESIGN.md, "Resync"). c.Regions, sorted, names a subset of the tenant's
// regions; empty means all of them. A revoked tenant, or one whose anchor is deleted, is refused: a
// resync never brings back what a revocation or the kill switch took away (and without an anchor no
// region could create the tenant).
func (s *state) resync(c *Command, t *tenant, now int64) *Result {
	if t.RevokeCursor != 0 {
		return &Result{Err: ErrRevoked}
	}
	if t.AnchorDeletedAt != 0 || t.AnchorURI == "" {
		return &Result{Err: ErrNoAnchor}
	}
	regions := slices.Clone(t.Regions)
	if len(c.Regions) > 0 {
		if !slices.IsSorted(c.Regions) || len(slices.Compact(slices.Clone(c.Regions))) != len(c.Regions) {
			return &Result{Err: ErrInvalidCommand}
		}
		for _, r := range c.Regions {
			if !slices.Contains(t.Regions, r) {
				return &Result{Err: ErrNotTenantRegion}
			}
		}
		regions = slices.Clone(c.Regions)
	}
	var services []string
	for _, name := range slices.Sorted(maps.Keys(t.Services)) {
		// Only services created at governance (one learnt from a region's inventory was created in
		// that region), not revoked, and with no revoked version: a region that lacks such a
		// service would create it afresh and, by rotating, hand out the version numbers governance
		// lists as revoked.
		if sv := t.Services[name]; sv.Cursor != 0 && sv.RevokeCursor == 0 && len(sv.Versions) == 0 {
			services = append(services, name)
		}
	}
	e := s.emit(c, KindResyncTenant, now)
	e.AnchorURI, e.Regions, e.Services, e.Locked = t.AnchorURI, regions, services, t.Locked
	if t.Policy != nil {
		e.Policy = t.Policy.clone()
	}
	return s.result(c, e)
}

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

func (s *state) report(c *Command, now int64) *Result {
	if wrap.ValidateName(c.Region) != nil || len(c.Inventory) > MaxInventory {
		return &Result{Err: ErrInvalidCommand}
	}
	if !ValidConfig(c.ConfigIndex, c.Voters) {
		return &Result{Err: ErrInvalidCommand}
	}
	r := s.Regions[c.Region]
	// Checked here too, not only where the report arrived: the configuration that removed the node
	// may have been learned between that check and this entry.
	if !r.admits(c) {
		return &Result{Err: ErrNotRegionVoter}
	}
	if c.Cursor > uint64(len(s.Events)) {
		return &Result{Err: ErrCursorAhead}
	}
	if r == nil {
		r = &region{}
		s.Regions[c.Region] = r
	}
	if c.Cursor > r.Cursor {
		r.Cursor = c.Cursor // reports that go backwards are ignored
	}
	r.ReportedAt = now
	if c.HasInventory {
		r.Inventory = normInventory(c.Inventory)
	}
	if c.ConfigIndex > r.ConfigIndex {
		r.ConfigIndex, r.Voters = c.ConfigIndex, slices.Clone(c.Voters)
	}
	return &Result{Recorded: r.Cursor}
}

func compareKeyRef(a, b KeyRef) int {
	switch {
	case a.Tenant != b.Tenant:
		return cmpString(a.Tenant, b.Tenant)
	case a.Service != b.Service:
		return cmpString(a.Service, b.Service)
	case a.Version < b.Version:
		return -1
	case a.Version > b.Version:
		return 1
	}
	return 0
}

func cmpString(a, b string) int {
	if a < b {
		return -1
	}
	return 1
}

func (t *tenant) view() *Tenant {
	return &Tenant{
		Name: t.Name, AnchorURI: t.AnchorURI, Regions: slices.Clone(t.Regions), Locked: t.Locked,
		Revoked: t.RevokeCursor != 0, AnchorDeletedAt: t.AnchorDeletedAt, CreatedAt: t.CreatedAt, Cursor: t.Cursor,
		OwnerKey: t.OwnerKey,
	}
}

func (sv *service) view(t *tenant, name string) *Service {
	return &Service{Tenant: t.Name, Name: name, CreatedAt: sv.CreatedAt, Cursor: sv.Cursor, Revoked: sv.RevokeCursor != 0 || t.RevokeCursor != 0}
}

// Snapshot implements raft.FSM: it encodes the state now (between Applies) and Persist writes the
// bytes. Encoding here costs a copy of the state in memory but keeps Persist free of any lock.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.st.encode()
	if err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

// encode returns the state's snapshot bytes. encoding/json writes struct fields in order and map
// keys sorted, so equal states encode to equal bytes on every node.
func (s *state) encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("governance: encode snapshot: %w", err)
	}
	return b, nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("governance: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}

// Restore implements raft.FSM: it replaces the whole state with the snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error { return f.restore(rc, false) }

// restore replaces the state with the snapshot in rc; if keep, only if the snapshot keeps every
// revocation of the state now (state.keepsRevocations), checked under the same lock.
func (f *FSM) restore(rc io.ReadCloser, keep bool) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("governance: read snapshot: %w", err)
	}
	st, err := decodeState(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if keep {
		if err := f.st.keepsRevocations(st); err != nil {
			return err
		}
	}
	f.st = st
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

// decodeState parses and checks a snapshot: events numbered 1..n, names valid, every
// cross-reference in range. A snapshot that fails is refused whole.
func decodeState(b []byte) (*state, error) {
	st := newState()
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("governance: decode snapshot: %w", err)
	}
	bad := func(what string) error { return fmt.Errorf("governance: bad snapshot: %s", what) }
	if st.Tenants == nil {
		st.Tenants = map[string]*tenant{}
	}
	if st.Regions == nil {
		st.Regions = map[string]*region{}
	}
	n := uint64(len(st.Events))
	for i, e := range st.Events {
		if e == nil || e.Cursor != uint64(i)+1 || wrap.ValidateName(e.Tenant) != nil {
			return nil, bad("event log")
		}
	}
	for name, t := range st.Tenants {
		if t == nil || t.Name != name || wrap.ValidateName(name) != nil || t.Cursor > n || t.RevokeCursor > n || t.DeleteCursor > n ||
			(t.OwnerKey != "" && !validOwnerKey(t.OwnerKey)) || len(t.Consents) > maxLiveConsents {
			return nil, bad("tenant")
		}
		for sn, sv := range t.Services {
			if sv == nil || wrap.ValidateName(sn) != nil || sv.Cursor > n || sv.RevokeCursor > n {
				return nil, bad("service")
			}
			for _, c := range sv.Versions {
				if c > n {
					return nil, bad("service")
				}
			}
		}
	}
	for name, r := range st.Regions {
		if r == nil || wrap.ValidateName(name) != nil || r.Cursor > n || !ValidConfig(r.ConfigIndex, r.Voters) {
			return nil, bad("region")
		}
	}
	for _, r := range st.Requests {
		if r == nil || r.Cursor > n || st.reqIndex[r.ID] != nil {
			return nil, bad("request ids")
		}
		st.reqIndex[r.ID] = r
	}
	return st, nil
}

// --- Reads. Each takes the read lock and returns copies. ---

// Head returns the cursor of the newest event (0 for an empty log).
func (f *FSM) Head() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return uint64(len(f.st.Events))
}

// Tenant returns a copy of one tenant, or ErrTenantNotFound.
func (f *FSM) Tenant(name string) (*Tenant, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[name]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	return t.view(), nil
}

// Tenants returns up to limit tenants with names after after, by name.
func (f *FSM) Tenants(after string, limit int) []*Tenant {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := slices.Sorted(maps.Keys(f.st.Tenants))
	var out []*Tenant
	for _, n := range names {
		if n > after && len(out) < limit {
			out = append(out, f.st.Tenants[n].view())
		}
	}
	return out
}

// Services returns up to limit services of tenant with names after after.
func (f *FSM) Services(tenant, after string, limit int) ([]*Service, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	var out []*Service
	for _, n := range slices.Sorted(maps.Keys(t.Services)) {
		if n > after && len(out) < limit {
			out = append(out, t.Services[n].view(t, n))
		}
	}
	return out, nil
}

// Policy returns a tenant's policy (revision 0 if never set).
func (f *FSM) Policy(tenant string) (*Policy, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	if t.Policy == nil {
		return &Policy{}, nil
	}
	return t.Policy.clone(), nil
}

// Event returns the event at cursor, or nil.
func (f *FSM) Event(cursor uint64) *Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.event(cursor)
}

// EventsFor returns up to max events after cursor that concern region's tenants (all events if
// region is empty), and the head the answer is complete up to: every event for region with a cursor
// up to head is in the result, unless it was cut at max, when head is the last event's cursor.
// Events are shared, immutable values.
func (f *FSM) EventsFor(region string, after uint64, max int) (events []*Event, head uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := uint64(len(f.st.Events))
	for c := after + 1; c <= n; c++ {
		e := f.st.Events[c-1]
		if region != "" && !f.st.forRegion(e, region) {
			continue
		}
		events = append(events, e)
		if len(events) >= max {
			return events, c
		}
	}
	return events, n
}

func (s *state) inRegion(tenant, region string) bool {
	t := s.Tenants[tenant]
	return t != nil && slices.Contains(t.Regions, region)
}

// forRegion reports whether e is sent to region: every event of a tenant of the region, but a
// RESYNC_TENANT only to the regions it names.
func (s *state) forRegion(e *Event, region string) bool {
	if e.Kind == KindResyncTenant {
		return slices.Contains(e.Regions, region) && s.inRegion(e.Tenant, region)
	}
	return s.inRegion(e.Tenant, region)
}

// Report returns what region last reported.
func (f *FSM) Report(region string) RegionReport {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Regions[region].report(region)
}

func (r *region) report(name string) RegionReport {
	out := RegionReport{Region: name}
	if r != nil {
		out.Cursor, out.ReportedAt = r.Cursor, r.ReportedAt
		out.ConfigIndex, out.Voters = r.ConfigIndex, slices.Clone(r.Voters)
	}
	return out
}

// CheckReport says what report c would do to this node's state: ErrNotRegionVoter if its node may
// not report for the region, else whether it changes anything but the report time, and the region's
// report now. The API uses it to refuse, or answer without a write, before the log.
func (f *FSM) CheckReport(c *Command) (changes bool, last RegionReport, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := f.st.Regions[c.Region]
	if !r.admits(c) {
		return false, RegionReport{}, ErrNotRegionVoter
	}
	return r.changes(c), r.report(c.Region), nil
}

// MayFollow reports whether node may follow region's feed: any node of the region until governance
// has learned the region's configuration, then its voters only.
func (f *FSM) MayFollow(region, node string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Regions[region].admits(&Command{Node: node})
}

// RegionLag is one region's lag behind the log.
type RegionLag struct {
	RegionReport
	Pending       uint64 // events of the region's tenants after its cursor
	OldestPending int64  // Unix ns of the oldest of them; 0 if none
}

// Lags returns every known region (named by a tenant or by a report), sorted by name, with its lag.
func (f *FSM) Lags() []RegionLag {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := map[string]bool{}
	for _, t := range f.st.Tenants {
		for _, r := range t.Regions {
			names[r] = true
		}
	}
	for r := range f.st.Regions {
		names[r] = true
	}
	var out []RegionLag
	for _, name := range slices.Sorted(maps.Keys(names)) {
		l := RegionLag{RegionReport: f.st.Regions[name].report(name)}
		for c := l.Cursor + 1; c <= uint64(len(f.st.Events)); c++ {
			e := f.st.Events[c-1]
			if f.st.forRegion(e, name) {
				if l.Pending == 0 {
					l.OldestPending = e.Time
				}
				l.Pending++
			}
		}
		out = append(out, l)
	}
	return out
}

// EventCounts returns how many events of each kind the log holds.
func (f *FSM) EventCounts() map[Kind]uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m := map[Kind]uint64{}
	for _, e := range f.st.Events {
		m[e.Kind]++
	}
	return m
}

// BlastRadius is what revoking a scope would cover, from governance's state and the regions' last
// inventories.
type BlastRadius struct {
	Tenants     []string
	Services    []KeyRef // Version 0
	KeyVersions []KeyRef
	Regions     []string
}

// Blast computes the blast radius of revoking tenant (and service, and version). It returns
// ErrTenantNotFound or ErrServiceNotFound as Revoke would.
func (f *FSM) Blast(tenant, svc string, version uint32) (*BlastRadius, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t := f.st.Tenants[tenant]
	if t == nil {
		return nil, ErrTenantNotFound
	}
	b := &BlastRadius{Tenants: []string{tenant}, Regions: slices.Clone(t.Regions)}
	services := map[string]bool{}
	versions := map[KeyRef]bool{}
	for n := range t.Services {
		services[n] = true
	}
	for _, r := range f.st.Regions {
		for _, k := range r.Inventory {
			if k.Tenant == tenant {
				services[k.Service] = true
				versions[k] = true
			}
		}
	}
	if svc != "" {
		if !services[svc] {
			return nil, ErrServiceNotFound
		}
		services = map[string]bool{svc: true}
	}
	for _, n := range slices.Sorted(maps.Keys(services)) {
		b.Services = append(b.Services, KeyRef{Tenant: tenant, Service: n})
	}
	for k := range versions {
		if (svc == "" || k.Service == svc) && (version == 0 || k.Version == version) {
			b.KeyVersions = append(b.KeyVersions, k)
		}
	}
	if version != 0 && !versions[KeyRef{tenant, svc, version}] {
		// Not reported by any region (yet): it is still what would be revoked.
		b.KeyVersions = append(b.KeyVersions, KeyRef{tenant, svc, version})
	}
	slices.SortFunc(b.KeyVersions, compareKeyRef)
	return b, nil
}

// Encode returns the state's snapshot bytes (for tests and tools).
func (f *FSM) Encode() ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.encode()
}

// TenantCount returns how many tenants governance holds.
func (f *FSM) TenantCount() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.st.Tenants)
}
