package region

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"sync/atomic"

	"go.etcd.io/bbolt"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/owner"
)

// The durable owner keys: the fingerprint of each tenant's owner key as this node last applied it,
// in the revocation set's bbolt file (outside the replicated state that a snapshot replaces), so
// that no restore can swap a tenant's owner key: not one snapshot that replaces it, nor one without
// the tenant followed by one that brings it back with a key of the operator's own
// (checkRestoreKeepsOwnerKeys). An entry is replaced when the tenant's key changes and never
// removed.
//
// Beside each, the anchor of each owned tenant as this node last applied it (anchorDigest: a hash,
// not the URI, so that no PIN an old URI may hold lands in this file), so that no restore, nor two
// in a row, moves an owned tenant back to an anchor it left with its owner's consent
// (checkRestoreKeepsOwnerAnchors).

var (
	ownersBucket  = []byte("owner-keys")
	anchorsBucket = []byte("owner-anchors")
)

// anchorDigest is the hex SHA-256 of an anchor URI's redacted form (anchor.Redact): what the
// durable record holds of an owned tenant's anchor. Redact keeps a storable URI as it is, so two
// anchors differ here exactly when their URIs do; it hides the value of a PIN an old URI may hold,
// which a plain hash would not (a PIN is short enough to guess from its hash).
func anchorDigest(uri string) string {
	sum := sha256.Sum256([]byte(anchor.Redact(uri)))
	return hex.EncodeToString(sum[:])
}

func validAnchorDigest(d string) bool {
	b, err := hex.DecodeString(d)
	return err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == d
}

// loadOwners reads the durable owner keys and anchors (creating their buckets) into memory.
func (s *revSet) loadOwners() error {
	m, a := map[string]string{}, map[string]string{}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(ownersBucket)
		if err != nil {
			return err
		}
		if err := b.ForEach(func(k, v []byte) error {
			if !validName(string(k)) || !owner.ValidFingerprint(string(v)) {
				return errMalformedOwner
			}
			m[string(k)] = string(v)
			return nil
		}); err != nil {
			return err
		}
		b, err = tx.CreateBucketIfNotExists(anchorsBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			if !validName(string(k)) || !validAnchorDigest(string(v)) {
				return errMalformedOwner
			}
			a[string(k)] = string(v)
			return nil
		})
	})
	s.owners.Store(&m)
	s.anchors.Store(&a)
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

// ownerAnchors returns the durable anchor digests of owned tenants, by tenant (the map must not be
// changed).
func (s *revSet) ownerAnchors() map[string]string {
	if p := s.anchors.Load(); p != nil {
		return *p
	}
	return nil
}

// setOwners records owner key fingerprints and anchor digests by tenant, durably (one fsync),
// after making them visible in memory (where they are enforced even if the write fails).
func (s *revSet) setOwners(fps, anchors map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	freshFPs := fresher(&s.owners, fps)
	freshAnchors := fresher(&s.anchors, anchors)
	if len(freshFPs) == 0 && len(freshAnchors) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bbolt.Tx) error {
		for bucket, fresh := range map[string]map[string]string{string(ownersBucket): freshFPs, string(anchorsBucket): freshAnchors} {
			b := tx.Bucket([]byte(bucket))
			for t, v := range fresh {
				if err := b.Put([]byte(t), []byte(v)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// fresher stores in p (copy-on-write) the entries of next that differ from p's, and returns them.
func fresher(p *atomic.Pointer[map[string]string], next map[string]string) map[string]string {
	var old map[string]string
	if m := p.Load(); m != nil {
		old = *m
	}
	fresh := map[string]string{}
	for t, v := range next {
		if v != "" && old[t] != v {
			fresh[t] = v
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
	p.Store(&m)
	return fresh
}

// noteOwners records in the durable owner keys the owner keys state holds for tenants (all of
// them if tenants is nil), and the anchors of those that have one. It runs inside FSM.Apply
// (onChange), before the applied index passes the change.
func (n *Node) noteOwners(state *fsm.State, tenants ...string) {
	if tenants == nil {
		for _, t := range state.ListTenants() {
			tenants = append(tenants, t.Name)
		}
	}
	fps, anchors := map[string]string{}, map[string]string{}
	for _, t := range tenants {
		if _, fp, err := state.OwnerKey(t); err == nil && fp != "" {
			fps[t] = fp
			if tn, err := state.Tenant(t); err == nil {
				anchors[t] = anchorDigest(tn.Anchor)
			}
		}
	}
	if err := n.revs.setOwners(fps, anchors); err != nil {
		n.log.Error("cannot record a tenant owner key durably; it is enforced in memory only", "file", revsetFile, "err", err)
	}
}
