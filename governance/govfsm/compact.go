// Compaction of the event log (DESIGN.md, "Compaction"): the events every pinning region has
// applied are dropped, save those that still define the state.

package govfsm

import (
	"slices"
)

// pins reports whether region r holds the floor at or below its cursor at log time now: it has
// reported within retention. A region that never reported, or has been silent longer, does not:
// when it comes back below the floor it catches up from the retained events (EventsFor).
func (r *region) pins(now, retention int64) bool {
	return r != nil && r.ReportedAt != 0 && now-r.ReportedAt <= retention
}

// compactTarget is the floor an OpCompact with cursor upper and retention would set at time now:
// the lowest cursor of the pinning regions, at most upper and the head, never below the floor.
// Only a region some tenant names pins: any node certificate of a region name no tenant uses may
// report (trust on first use), and its reports must not hold the log back.
func (s *state) compactTarget(upper uint64, retention, now int64) uint64 {
	named := map[string]bool{}
	for _, t := range s.Tenants {
		for _, r := range t.Regions {
			named[r] = true
		}
	}
	floor := min(upper, s.Head)
	for name, r := range s.Regions {
		if named[name] && r.pins(now, retention) {
			floor = min(floor, r.Cursor)
		}
	}
	return max(floor, s.Floor)
}

// stateKey names what a superseding event sets: a tenant's anchor (SET_ANCHOR, DELETE_ANCHOR),
// policy (SET_POLICY) or lock (LOCK_TENANT, UNLOCK_TENANT).
type stateKey struct {
	tenant string
	what   Kind // KindSetAnchor, KindSetPolicy or KindLockTenant
}

func supersedes(e *Event) (stateKey, bool) {
	switch e.Kind {
	case KindSetAnchor, KindDeleteAnchor:
		return stateKey{e.Tenant, KindSetAnchor}, true
	case KindSetPolicy:
		return stateKey{e.Tenant, KindSetPolicy}, true
	case KindLockTenant, KindUnlockTenant:
		return stateKey{e.Tenant, KindLockTenant}, true
	case KindTenantKeys, KindSetRegions:
		// TENANT_KEYS carries the whole hierarchy, SET_REGIONS the whole set: the newest defines it.
		return stateKey{e.Tenant, e.Kind}, true
	}
	return stateKey{}, false
}

// compact applies OpCompact. The new floor is computed here, from the replicated state and the
// command alone, so every node drops the same events at the same index. An event at or below the
// floor is kept if it still defines the state — a tenant's or service's creation, every
// revocation (the revoked set: revocation is forever, and a restore is checked against it), and
// the newest event that sets each tenant's anchor, policy and lock — and dropped otherwise: an
// anchor, policy or lock a later event replaced, and every RESYNC_TENANT (a repair of regions
// that have applied it; a region replaying the retained events gets what it carried from them).
// Replaying the retained events in cursor order, from any cursor, leaves a region in the state
// the whole log would: each dropped event's effect is overwritten by a retained later one.
func (s *state) compact(c *Command, now int64) *Result {
	// Any retention is safe (a region that stops pinning catches up from the retained events); a
	// short one only makes quiet regions, whose unchanged reports are written once a minute, catch
	// up that way rather than from the whole log.
	if c.Retention <= 0 {
		return &Result{Err: ErrInvalidCommand}
	}
	floor := s.compactTarget(c.Cursor, c.Retention, now)
	if floor <= s.Floor {
		return &Result{Recorded: s.Floor}
	}
	latest := map[stateKey]uint64{}
	for _, e := range s.Events {
		if k, ok := supersedes(e); ok {
			latest[k] = e.Cursor // ascending: the last one wins
		}
	}
	kept := make([]*Event, 0, len(s.Events))
	for _, e := range s.Events {
		if e.Cursor > floor || defines(e, latest) {
			kept = append(kept, e)
		}
	}
	s.Events, s.Floor = slices.Clip(kept), floor
	return &Result{Recorded: floor}
}

func defines(e *Event, latest map[stateKey]uint64) bool {
	switch e.Kind {
	case KindCreateTenant, KindCreateService, KindRevokeTenant, KindRevokeService, KindRevokeVersion:
		return true
	case KindResyncTenant:
		return false
	}
	k, ok := supersedes(e)
	return ok && latest[k] == e.Cursor
}

// CompactTarget returns the floor an OpCompact with cursor upper and retention would set at now
// (Unix ns), and the floor now: the leader proposes one only when it would raise the floor.
func (f *FSM) CompactTarget(upper uint64, retention, now int64) (target, floor uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.compactTarget(upper, retention, max(now, f.st.LastTime)), f.st.Floor
}

// Floor returns the cursor the log was last compacted to (0: never).
func (f *FSM) Floor() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Floor
}

// LogLen returns how many events the log holds (after compaction, fewer than Head).
func (f *FSM) LogLen() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.st.Events)
}
