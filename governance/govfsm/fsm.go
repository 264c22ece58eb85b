// The state machine's type, its replicated state, and Apply with the dispatch of each command.

package govfsm

import (
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"

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

	onApplied func(index uint64, c *Command, r *Result) // set before Raft starts; see OnApplied
}

// OnApplied sets fn to be called by Apply with every log entry it applied, in log order, before
// Apply returns (so before Raft counts the entry applied): the governance node writes its audit
// record of each replicated change there, on every node. fn must not block for long and must not
// call Apply or Restore; it may read the state. Call it before the FSM is handed to Raft.
func (f *FSM) OnApplied(fn func(index uint64, c *Command, r *Result)) { f.onApplied = fn }

// state is everything governance replicates. Its JSON form is the snapshot.
type state struct {
	Tenants map[string]*tenant `json:"tenants"`
	// Events is the log, by cursor: every event after Floor (cursors Floor+1..Head without gaps),
	// and at or below it only the events that still define the state (compact.go).
	Events   []*Event           `json:"events"`
	Requests []*request         `json:"requests"`
	Regions  map[string]*region `json:"regions"`
	LastTime int64              `json:"last-time"`
	// Head is the newest event's cursor; Floor the cursor the log was last compacted to (0: never).
	// Snapshots from before compaction have neither: Head is then len(Events).
	Head  uint64 `json:"head,omitempty"`
	Floor uint64 `json:"floor,omitempty"`
	// Counts is how many events of each kind the log ever had (compaction does not lower it).
	Counts map[Kind]uint64 `json:"counts,omitempty"`

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
	Quota    *Quota        `json:"quota,omitempty"`
	// Home is a shared tenant's home region (empty: each region makes its own keys); Keys the
	// sealed hierarchy it published (absent in older snapshots, which have no shared tenants).
	Home string      `json:"home,omitempty"`
	Keys *TenantKeys `json:"keys,omitempty"`
	// RegionAnchors are the per-region anchors (region -> URI, each region one of Regions); a
	// region not named uses AnchorURI. The kill switch empties each URI but keeps the region
	// named: lifting it with the tenant's anchor does not hand that anchor to a region that has
	// its own key.
	RegionAnchors map[string]string `json:"region-anchors,omitempty"`
	// A tenant made shared (SetTenantRegions with a home): Floors holds each other region's own
	// newest versions as it reported them, FloorPending the regions yet to report.
	Floors       map[string]*Floor `json:"floors,omitempty"`
	FloorPending []string          `json:"floor-pending,omitempty"`
}

// anchorFor returns region's anchor URI: its own pointer (empty while the kill switch is on),
// else the tenant's.
func (t *tenant) anchorFor(region string) string {
	if u, ok := t.RegionAnchors[region]; ok {
		return u
	}
	return t.AnchorURI
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
	Quota        *Quota            `json:"quota,omitempty"`
}

type request struct {
	ID          string `json:"id"`
	Fingerprint string `json:"fp"`
	Cursor      uint64 `json:"cursor"` // the event it made (0: none)
	Time        int64  `json:"time"`
	// The event's id and kind, so that a retry answers with them after compaction dropped the
	// event (retried).
	EventID string `json:"eid,omitempty"`
	Kind    Kind   `json:"kind,omitempty"`
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
	r := f.ApplyCommand(c)
	if f.onApplied != nil {
		f.onApplied(l.Index, c, r)
	}
	return r
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
	switch c.Op {
	case OpReport:
		return s.report(c, now)
	case OpCompact:
		return s.compact(c, now)
	}
	if c.RequestID == "" || c.Fingerprint == "" || (c.Op != OpResetVoters && wrap.ValidateName(c.Tenant) != nil) {
		return &Result{Err: ErrInvalidCommand}
	}
	if !shortText(c.Actor) || !shortText(c.Proposer) {
		return &Result{Err: ErrInvalidCommand}
	}
	s.pruneRequests(now)
	if r, ok := s.reqIndex[c.RequestID]; ok {
		if r.Fingerprint != c.Fingerprint {
			return &Result{Err: ErrRequestIDReused}
		}
		res := s.result(c, s.retried(c, r))
		res.Retry = true
		return res
	}
	res := s.write(c, now)
	if res.Err == nil {
		r := &request{ID: c.RequestID, Fingerprint: c.Fingerprint, Time: now}
		if e := res.Event; e != nil {
			r.Cursor, r.EventID, r.Kind = e.Cursor, e.ID, e.Kind
		}
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

// event returns the event at cursor, or nil if there is none (or compaction dropped it).
func (s *state) event(cursor uint64) *Event {
	if cursor == 0 || cursor > s.Head {
		return nil
	}
	if cursor > s.Floor {
		// After the floor the log is gapless and ends at Head.
		return s.Events[len(s.Events)-int(s.Head-cursor)-1]
	}
	i, ok := slices.BinarySearchFunc(s.Events, cursor, func(e *Event, c uint64) int { return cmpUint(e.Cursor, c) })
	if !ok {
		return nil
	}
	return s.Events[i]
}

// after returns the index in Events of the first event after cursor.
func (s *state) after(cursor uint64) int {
	if cursor >= s.Floor {
		return len(s.Events) - int(s.Head-min(cursor, s.Head))
	}
	i, _ := slices.BinarySearchFunc(s.Events, cursor+1, func(e *Event, c uint64) int { return cmpUint(e.Cursor, c) })
	return i
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// retried returns the event a request made, for its retry: a stub (cursor, id, kind and scope)
// if compaction dropped it; every region that pinned the floor has applied it.
func (s *state) retried(c *Command, r *request) *Event {
	if r.Cursor == 0 {
		return nil
	}
	if e := s.event(r.Cursor); e != nil {
		return e
	}
	return &Event{Cursor: r.Cursor, ID: r.EventID, Kind: r.Kind, Tenant: c.Tenant, Service: c.Service, Version: c.Version, Time: r.Time, Reason: c.Reason}
}

// emit appends an event for c and returns it.
func (s *state) emit(c *Command, kind Kind, now int64) *Event {
	e := &Event{
		Cursor:  s.Head + 1,
		ID:      c.EventID,
		Kind:    kind,
		Tenant:  c.Tenant,
		Service: c.Service,
		Version: c.Version,
		Time:    now,
		Reason:  c.Reason,
	}
	s.Events = append(s.Events, e)
	s.Head = e.Cursor
	if s.Counts == nil {
		s.Counts = map[Kind]uint64{}
	}
	s.Counts[kind]++
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
	case OpCreateService, OpSetQuota:
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
	if c.Op == OpResetVoters {
		return s.resetVoters(c)
	}
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
		if c.Home != "" && !slices.Contains(c.Regions, c.Home) {
			return &Result{Err: ErrInvalidCommand}
		}
		for r, u := range c.RegionAnchors {
			if !slices.Contains(c.Regions, r) || u == "" {
				return &Result{Err: ErrInvalidCommand}
			}
		}
		t = &tenant{Name: c.Tenant, AnchorURI: c.AnchorURI, Regions: slices.Clone(c.Regions), CreatedAt: now, OwnerKey: c.OwnerKey, Home: c.Home,
			RegionAnchors: cloneAnchors(c.RegionAnchors)}
		s.Tenants[c.Tenant] = t
		e := s.emit(c, KindCreateTenant, now)
		e.AnchorURI, e.Regions, e.Home, e.RegionAnchors = c.AnchorURI, slices.Clone(c.Regions), c.Home, cloneAnchors(t.RegionAnchors)
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
		if c.Region != "" && !slices.Contains(t.Regions, c.Region) {
			return &Result{Err: ErrNotTenantRegion}
		}
		fp, err := t.consume(c, owner.Statement{Tenant: c.Tenant, Op: owner.OpSetAnchor, Anchor: c.AnchorURI, Region: c.Region, RequestID: c.RequestID}, now)
		if err != nil {
			return &Result{Err: err}
		}
		return s.setAnchor(c, t, fp, now)

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
		// Every pointer goes: the tenant's and each region's own (the kill switch covers them all).
		for r := range t.RegionAnchors {
			t.RegionAnchors[r] = ""
		}
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

	case OpSetQuota:
		if !ValidQuota(c.Quota) {
			return &Result{Err: ErrInvalidCommand}
		}
		if t.RevokeCursor != 0 {
			return &Result{Err: ErrRevoked}
		}
		q := c.Quota
		if q != nil && *q == (Quota{}) {
			q = nil
		}
		if c.Service == "" {
			t.Quota = q.clone()
		} else {
			sv := t.Services[c.Service]
			switch {
			case sv == nil:
				return &Result{Err: ErrServiceNotFound}
			case sv.RevokeCursor != 0:
				return &Result{Err: ErrRevoked}
			}
			sv.Quota = q.clone()
		}
		e := s.emit(c, KindSetQuota, now)
		e.Quota = q.clone()
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

	case OpSetRegions:
		return s.setRegions(c, t, now)

	case OpPublishKeys:
		return s.publishKeys(c, t, now)
	}
	return &Result{Err: ErrInvalidCommand}
}

// shortText reports whether s fits an audit record: at most MaxActor bytes of valid UTF-8.
func shortText(s string) bool { return len(s) <= MaxActor && utf8.ValidString(s) }
