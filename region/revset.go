package region

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
)

// The durable revocation set (DESIGN.md, "Revocations survive every restore"): every revocation
// this node has seen, in a bbolt file of its own beside the Raft data, outside the replicated state
// that a snapshot replaces. It only grows: a revocation goes in when the node applies it (before
// the node's applied index passes it, so before any fence or Revoke acknowledges it), and a
// restored snapshot's revocations go in when it is installed. Nothing ever takes one out.

const revsetFile = "revocations.db"

var revsetBucket = []byte("revoked")

// revEntry is one revoked scope: a tenant (Service empty), a service (Version 0), or a version.
type revEntry struct {
	Tenant  string `json:"tenant"`
	Service string `json:"service,omitempty"`
	Version uint32 `json:"version,omitempty"`
	// Index is the log index at which this node first saw it (applied or restored), At when.
	Index uint64 `json:"index"`
	At    int64  `json:"at"`
}

// key is the entry's bbolt key and map key. Names cannot hold '/' (wrap.ValidateName).
func (e revEntry) key() string {
	switch {
	case e.Service == "":
		return e.Tenant
	case e.Version == 0:
		return e.Tenant + "/" + e.Service
	}
	return e.Tenant + "/" + e.Service + "/" + strconv.FormatUint(uint64(e.Version), 10)
}

func (e revEntry) String() string {
	switch {
	case e.Service == "":
		return "tenant " + e.Tenant
	case e.Version == 0:
		return "service " + e.Tenant + "/" + e.Service
	}
	return fmt.Sprintf("key %s/%s v%d", e.Tenant, e.Service, e.Version)
}

// revFromLog returns the final revocations of a revocation log: applied (not refused)
// revocations of a tenant, service or version. Anchor deletions are the reversible kill switch
// and not in the set (checkRestoreKeepsRevocations still keeps those in force).
func revFromLog(log []fsm.Revocation) []revEntry {
	var out []revEntry
	for _, r := range log {
		if r.Error != "" {
			continue
		}
		switch r.Kind {
		case fsm.RevokedTenant:
			out = append(out, revEntry{Tenant: r.Tenant, Index: r.Index})
		case fsm.RevokedService:
			out = append(out, revEntry{Tenant: r.Tenant, Service: r.Service, Index: r.Index})
		case fsm.RevokedKeyVersion:
			out = append(out, revEntry{Tenant: r.Tenant, Service: r.Service, Version: r.Version, Index: r.Index})
		}
	}
	return out
}

// revSet is the durable set and its copy in memory (copy-on-write: read lock-free on the wrap
// path, replaced whole on the rare write).
type revSet struct {
	db *bbolt.DB
	mu sync.Mutex // serialises add
	// unsaved are entries enforced in memory whose write failed (mu held): written with the next.
	unsaved []revEntry
	keys    atomic.Pointer[map[string]revEntry]
	// owners: the durable owner keys (ownerset.go), tenant to fingerprint.
	owners atomic.Pointer[map[string]string]
	// anchors: the durable anchors of owned tenants (ownerset.go), tenant to anchorDigest.
	anchors atomic.Pointer[map[string]string]
}

func openRevSet(dataDir string) (*revSet, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("region: revocation set: %w", err)
	}
	db, err := bbolt.Open(filepath.Join(dataDir, revsetFile), 0o600, &bbolt.Options{Timeout: time.Second})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("region: revocation set %s: %w (is another node using this data directory?)", filepath.Join(dataDir, revsetFile), err)
	}
	if err != nil {
		return nil, fmt.Errorf("region: revocation set: %w", cluster.DamagedState(filepath.Join(dataDir, revsetFile), dataDir, err))
	}
	m := map[string]revEntry{}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(revsetBucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var e revEntry
			if err := json.Unmarshal(v, &e); err != nil || e.key() != string(k) {
				return fmt.Errorf("malformed entry %q", k)
			}
			m[string(k)] = e
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("region: revocation set %s: %w", filepath.Join(dataDir, revsetFile), err)
	}
	s := &revSet{db: db}
	s.keys.Store(&m)
	if err := s.loadOwners(); err != nil {
		db.Close()
		return nil, fmt.Errorf("region: owner keys in %s: %w", filepath.Join(dataDir, revsetFile), err)
	}
	return s, nil
}

func (s *revSet) close() error { return s.db.Close() }

// add records the entries not yet in the set, durably (one fsync), then makes them visible.
// On a write failure they are still enforced in memory, the error says so, and the next add
// writes them again (a full disk: once space returns, the set on disk catches up).
func (s *revSet) add(entries []revEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.keys.Load()
	var fresh []revEntry
	for _, e := range entries {
		if _, ok := old[e.key()]; !ok && !slices.ContainsFunc(fresh, func(f revEntry) bool { return f.key() == e.key() }) {
			if e.At == 0 {
				e.At = time.Now().UnixNano()
			}
			fresh = append(fresh, e)
		}
	}
	if len(fresh) == 0 && len(s.unsaved) == 0 {
		return nil
	}
	m := make(map[string]revEntry, len(old)+len(fresh))
	for k, v := range old {
		m[k] = v
	}
	for _, e := range fresh {
		m[e.key()] = e
	}
	s.keys.Store(&m)
	write := append(s.unsaved, fresh...)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(revsetBucket)
		for _, e := range write {
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(e.key()), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.unsaved = write
		return fmt.Errorf("%w (%d revocations in memory only until a write succeeds)", err, len(write))
	}
	s.unsaved = nil
	return nil
}

// revoked reports whether the set revokes version of tenant/service (version 0: the service).
func (s *revSet) revoked(tenant, service string, version uint32) bool {
	m := *s.keys.Load()
	if len(m) == 0 {
		return false
	}
	if _, ok := m[tenant]; ok {
		return true
	}
	if _, ok := m[tenant+"/"+service]; ok {
		return true
	}
	if version == 0 {
		return false
	}
	_, ok := m[tenant+"/"+service+"/"+strconv.FormatUint(uint64(version), 10)]
	return ok
}

// missingFrom returns the entries of the set that state's revocation log does not hold, in key
// order: a snapshot that lacks one would undo a revocation this node has seen. A revocation of a
// wider scope holds the narrower ones (a revoked tenant, each of its services and versions).
func (s *revSet) missingFrom(state *fsm.State) []revEntry {
	m := *s.keys.Load()
	if len(m) == 0 {
		return nil
	}
	have := map[string]bool{}
	for _, e := range revFromLog(state.RevocationLog(0)) {
		have[e.key()] = true
	}
	var missing []revEntry
	for k, e := range m {
		if have[k] || have[e.Tenant] || (e.Version != 0 && have[e.Tenant+"/"+e.Service]) {
			continue
		}
		missing = append(missing, e)
	}
	slices.SortFunc(missing, func(a, b revEntry) int { return strings.Compare(a.key(), b.key()) })
	return missing
}

// describeMissing names up to five missing revocations, for an error.
func describeMissing(missing []revEntry) string {
	var b strings.Builder
	for i, e := range missing {
		if i == 5 {
			fmt.Fprintf(&b, " and %d more", len(missing)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.String())
	}
	return b.String()
}
