package kmip

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kryptonkms/krypton/internal/pki"
)

// object is one managed object: an AES-256 symmetric key. It holds the
// wrapped data key only; the plaintext exists only while an operation runs.
type object struct {
	ID        string   `json:"id"`
	State     uint32   `json:"state"`
	Algorithm uint32   `json:"alg"`
	Length    int32    `json:"len"`
	UsageMask int32    `json:"usage"`
	Names     []string `json:"names,omitempty"`
	Group     string   `json:"group,omitempty"`
	// Mode and Padding are the object's Cryptographic Parameters
	// attribute, the defaults of Encrypt and Decrypt (0: unset).
	Mode    uint32 `json:"mode,omitempty"`
	Padding uint32 `json:"pad,omitempty"`
	// Replacement and Replaced are the Link attributes Re-key sets: the
	// key that replaced this one, and the key this one replaced.
	Replacement string `json:"replacement,omitempty"`
	Replaced    string `json:"replaced,omitempty"`
	// Wrapped is the data key wrapped by the region; nil once destroyed.
	Wrapped []byte `json:"wrapped,omitempty"`

	Initial              time.Time `json:"initial"`
	LastChange           time.Time `json:"last-change"`
	Activation           time.Time `json:"activation,omitzero"`
	Deactivation         time.Time `json:"deactivation,omitzero"`
	Destroy              time.Time `json:"destroy,omitzero"`
	Compromise           time.Time `json:"compromise,omitzero"`
	CompromiseOccurrence time.Time `json:"compromise-occurrence,omitzero"`
	RevocationCode       uint32    `json:"revocation-code,omitempty"`
	RevocationMessage    string    `json:"revocation-message,omitempty"`
}

func (o *object) clone() *object {
	c := *o
	c.Names = slices.Clone(o.Names)
	c.Wrapped = bytes.Clone(o.Wrapped)
	return &c
}

// ownerKey names the namespace of an identity's objects. Objects belong to
// the service that created them: the data key is wrapped under that
// service's L3, so no other identity, of the same tenant or another, could
// use it anyway, and none can see it either.
func ownerKey(id pki.Identity) string { return id.Tenant + "/" + id.Service }

// newUID returns a random version-4 UUID, the usual form of a KMIP Unique
// Identifier.
func newUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

// registry stores objects by owner and identifier. update is atomic per
// object: fn sees the current object and its changes are kept only if it
// returns nil. Every method hands out and takes in copies.
type registry interface {
	get(owner, id string) (*object, error)
	create(owner string, o *object) error
	update(owner, id string, fn func(*object) error) (*object, error)
	// replace is update of the object id and create of the object fn
	// returns, in one atomic step: both are kept, or neither (Re-key).
	replace(owner, id string, fn func(old *object) (*object, error)) error
	list(owner string) ([]*object, error)
	close() error
}

// memRegistry keeps objects in memory, for a gateway run without a
// registry file (objects are lost on restart).
type memRegistry struct {
	mu      sync.Mutex
	objects map[string]*object // ownerKey + "\x00" + ID
}

func newMemRegistry() *memRegistry { return &memRegistry{objects: map[string]*object{}} }

func recordKey(owner, id string) string { return owner + "\x00" + id }

func (m *memRegistry) get(owner, id string) (*object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[recordKey(owner, id)]
	if !ok {
		return nil, errNotFound
	}
	return o.clone(), nil
}

func (m *memRegistry) create(owner string, o *object) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := recordKey(owner, o.ID)
	if _, ok := m.objects[k]; ok {
		return fmt.Errorf("kmip: object identifier collision")
	}
	m.objects[k] = o.clone()
	return nil
}

func (m *memRegistry) update(owner, id string, fn func(*object) error) (*object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := recordKey(owner, id)
	cur, ok := m.objects[k]
	if !ok {
		return nil, errNotFound
	}
	o := cur.clone()
	if err := fn(o); err != nil {
		return nil, err
	}
	if cur.Wrapped != nil && o.Wrapped == nil {
		clear(cur.Wrapped)
	}
	m.objects[k] = o
	return o.clone(), nil
}

func (m *memRegistry) replace(owner, id string, fn func(*object) (*object, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := recordKey(owner, id)
	cur, ok := m.objects[k]
	if !ok {
		return errNotFound
	}
	o := cur.clone()
	n, err := fn(o)
	if err != nil {
		return err
	}
	nk := recordKey(owner, n.ID)
	if _, ok := m.objects[nk]; ok {
		return fmt.Errorf("kmip: object identifier collision")
	}
	m.objects[k], m.objects[nk] = o, n.clone()
	return nil
}

func (m *memRegistry) list(owner string) ([]*object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*object
	prefix := owner + "\x00"
	for k, o := range m.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, o.clone())
		}
	}
	return out, nil
}

func (m *memRegistry) close() error { return nil }

// boltRegistry keeps objects in a bbolt file: one bucket, keys
// owner NUL identifier, values JSON. Only wrapped key material is in it.
type boltRegistry struct {
	db *bolt.DB
}

var objectsBucket = []byte("kmip-objects")

func openBoltRegistry(path string) (*boltRegistry, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("kmip: open registry: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(objectsBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("kmip: open registry: %w", err)
	}
	return &boltRegistry{db: db}, nil
}

func decodeObject(v []byte) (*object, error) {
	var o object
	if err := json.Unmarshal(v, &o); err != nil {
		return nil, fmt.Errorf("kmip: registry record does not decode: %w", err)
	}
	return &o, nil
}

func (b *boltRegistry) get(owner, id string) (*object, error) {
	var o *object
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(objectsBucket).Get([]byte(recordKey(owner, id)))
		if v == nil {
			return errNotFound
		}
		var err error
		o, err = decodeObject(v)
		return err
	})
	return o, err
}

func (b *boltRegistry) create(owner string, o *object) error {
	v, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(objectsBucket)
		k := []byte(recordKey(owner, o.ID))
		if bk.Get(k) != nil {
			return fmt.Errorf("kmip: object identifier collision")
		}
		return bk.Put(k, v)
	})
}

func (b *boltRegistry) update(owner, id string, fn func(*object) error) (*object, error) {
	var o *object
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(objectsBucket)
		k := []byte(recordKey(owner, id))
		v := bk.Get(k)
		if v == nil {
			return errNotFound
		}
		var err error
		if o, err = decodeObject(v); err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
		nv, err := json.Marshal(o)
		if err != nil {
			return err
		}
		return bk.Put(k, nv)
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

func (b *boltRegistry) replace(owner, id string, fn func(*object) (*object, error)) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(objectsBucket)
		k := []byte(recordKey(owner, id))
		v := bk.Get(k)
		if v == nil {
			return errNotFound
		}
		o, err := decodeObject(v)
		if err != nil {
			return err
		}
		n, err := fn(o)
		if err != nil {
			return err
		}
		nk := []byte(recordKey(owner, n.ID))
		if bk.Get(nk) != nil {
			return fmt.Errorf("kmip: object identifier collision")
		}
		ov, err := json.Marshal(o)
		if err != nil {
			return err
		}
		nv, err := json.Marshal(n)
		if err != nil {
			return err
		}
		if err := bk.Put(k, ov); err != nil {
			return err
		}
		return bk.Put(nk, nv)
	})
}

func (b *boltRegistry) list(owner string) ([]*object, error) {
	var out []*object
	prefix := []byte(owner + "\x00")
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(objectsBucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			o, err := decodeObject(v)
			if err != nil {
				return err
			}
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

func (b *boltRegistry) close() error { return b.db.Close() }
