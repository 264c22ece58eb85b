package region

import (
	"errors"
	"maps"

	"go.etcd.io/bbolt"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/owner"
)

// The durable owner keys: the fingerprint of each tenant's owner key as this node last applied it,
// in the revocation set's bbolt file (outside the replicated state that a snapshot replaces), so
// that no restore can swap a tenant's owner key: not one snapshot that replaces it, nor one without
// the tenant followed by one that brings it back with a key of the operator's own
// (checkRestoreKeepsOwnerKeys). An entry is replaced when the tenant's key changes and never
// removed.

var ownersBucket = []byte("owner-keys")

// loadOwners reads the durable owner keys (creating their bucket) into memory.
func (s *revSet) loadOwners() error {
	m := map[string]string{}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(ownersBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			if !validName(string(k)) || !owner.ValidFingerprint(string(v)) {
				return errMalformedOwner
			}
			m[string(k)] = string(v)
			return nil
		})
	})
	s.owners.Store(&m)
	return err
}

var errMalformedOwner = errors.New("malformed owner key entry")

// ownerKeys returns the durable owner keys by tenant (the map must not be changed).
func (s *revSet) ownerKeys() map[string]string {
	if p := s.owners.Load(); p != nil {
		return *p
	}
	return nil
}

// setOwners records owner key fingerprints by tenant, durably (one fsync), after making them
// visible in memory (where they are enforced even if the write fails).
func (s *revSet) setOwners(fps map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.ownerKeys()
	fresh := map[string]string{}
	for t, fp := range fps {
		if fp != "" && old[t] != fp {
			fresh[t] = fp
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	m := maps.Clone(old)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, fresh)
	s.owners.Store(&m)
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(ownersBucket)
		for t, fp := range fresh {
			if err := b.Put([]byte(t), []byte(fp)); err != nil {
				return err
			}
		}
		return nil
	})
}

// noteOwners records in the durable owner keys the owner keys state holds for tenants (all of
// them if tenants is nil). It runs inside FSM.Apply (onChange), before the applied index passes
// the change.
func (n *Node) noteOwners(state *fsm.State, tenants ...string) {
	if tenants == nil {
		for _, t := range state.ListTenants() {
			tenants = append(tenants, t.Name)
		}
	}
	fps := map[string]string{}
	for _, t := range tenants {
		if _, fp, err := state.OwnerKey(t); err == nil && fp != "" {
			fps[t] = fp
		}
	}
	if err := n.revs.setOwners(fps); err != nil {
		n.log.Error("cannot record a tenant owner key durably; it is enforced in memory only", "file", revsetFile, "err", err)
	}
}
