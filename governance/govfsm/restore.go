package govfsm

import (
	"fmt"
	"io"
	"strings"
)

// Backups and restores (DESIGN.md, "Snapshots, backups and restores"). Revocation is final, and a
// restore must not undo it: not one restore, nor two in a row. The event log is governance's own
// durable revocation set: compaction keeps every revocation event at its cursor (compact.go),
// every revocation is an event in it, and a restore is accepted only if the snapshot holds every revocation event of
// the log it replaces, at the same cursor, and keeps it in force. So the revocations of the log
// only grow across accepted restores, and a snapshot from before a revocation is refused however
// many restores come first (a region needs a separate set, region/revset.go, because its revocation
// log starts afresh with a restored snapshot's).

// CheckSnapshot checks the snapshot in b against the state now: an error wrapping
// ErrSnapshotLacksRevocations if restoring it would undo a revocation (see state.keepsRevocations),
// or the snapshot's decoding error. Governance's Node.Restore runs it under the cluster's apply
// gate.
func (f *FSM) CheckSnapshot(b []byte) error {
	snap, err := decodeState(b)
	if err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.keepsRevocations(snap)
}

// RestoreChecked is Restore for a snapshot another node sent (Raft's InstallSnapshot): it is
// refused, the state untouched, if it lacks a revocation of the state now (an error wrapping
// ErrSnapshotLacksRevocations).
func (f *FSM) RestoreChecked(rc io.ReadCloser) error { return f.restore(rc, true) }

// keepsRevocations returns an error wrapping ErrSnapshotLacksRevocations if snap, restored in place
// of s, would undo a revocation of s: every REVOKE_TENANT, REVOKE_SERVICE and REVOKE_VERSION event
// of s must be in snap's log at the same cursor (same id, kind and scope), and in force in snap's
// state. Anchor deletions are the reversible kill switch and not checked.
func (s *state) keepsRevocations(snap *state) error {
	var missing []string
	for _, e := range s.Events { // compaction keeps every revocation
		if e.Kind != KindRevokeTenant && e.Kind != KindRevokeService && e.Kind != KindRevokeVersion {
			continue
		}
		if !snap.holdsRevocation(e) {
			missing = append(missing, describeRevocation(e))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	named := missing
	more := ""
	if len(named) > 5 {
		named, more = named[:5], fmt.Sprintf(" and %d more", len(missing)-5)
	}
	return fmt.Errorf("%w (it lacks %d: %s%s)", ErrSnapshotLacksRevocations, len(missing), strings.Join(named, ", "), more)
}

// holdsRevocation reports whether st has revocation event e in its log at e's cursor and in force.
func (st *state) holdsRevocation(e *Event) bool {
	se := st.event(e.Cursor)
	if se == nil || se.ID != e.ID || se.Kind != e.Kind || se.Tenant != e.Tenant || se.Service != e.Service || se.Version != e.Version {
		return false
	}
	t := st.Tenants[e.Tenant]
	if t == nil {
		return false
	}
	if t.RevokeCursor != 0 {
		return true // a revoked tenant covers its services and versions
	}
	if e.Kind == KindRevokeTenant {
		return false
	}
	sv := t.Services[e.Service]
	if sv == nil {
		return false
	}
	if sv.RevokeCursor != 0 {
		return true
	}
	return e.Kind == KindRevokeVersion && sv.Versions[e.Version] != 0
}

func describeRevocation(e *Event) string {
	switch e.Kind {
	case KindRevokeTenant:
		return fmt.Sprintf("event %d: tenant %s revoked", e.Cursor, e.Tenant)
	case KindRevokeService:
		return fmt.Sprintf("event %d: service %s/%s revoked", e.Cursor, e.Tenant, e.Service)
	}
	return fmt.Sprintf("event %d: key %s/%s v%d revoked", e.Cursor, e.Tenant, e.Service, e.Version)
}
