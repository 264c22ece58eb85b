package xks

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
)

// Keys is what the proxy needs from Krypton: the gateway implements it (gateway.XKSKeys) with
// its batching, failover and revocation-coherent cache, acting as the gateway's own service.
type Keys interface {
	// NewKey makes a fresh 32-byte key, has the region wrap it under the gateway's service key
	// bound to aad, wipes the plaintext and returns the wrapped blob.
	NewKey(ctx context.Context, aad []byte) (blob []byte, err error)
	// Unwrap has the region (or the gateway's cache, while the region allows it) open blob
	// with aad. The caller wipes the key.
	Unwrap(ctx context.Context, blob, aad []byte) ([]byte, error)
}

// keyIDRe is the specification's externalKeyId: at most 128 letters, digits, '-', '.', '_'.
var keyIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// ValidKeyID reports whether id is a well-formed external key ID.
func ValidKeyID(id string) bool { return keyIDRe.MatchString(id) }

// keyAAD binds a key's wrapped blob to its external key ID, so that a blob cannot serve under
// another ID, and to this use, so that no other Krypton blob of the service (an application's data
// key, a KMIP object) opens as an XKS key.
func keyAAD(id string) []byte { return []byte("krypton-xks/v1/key\x00" + id) }

// keyFile is the keys file: external key ID to its Krypton blob (base64). The blobs are wrapped by
// the region; the file holds no plaintext key.
type keyFile struct {
	Version int               `json:"version"`
	Keys    map[string]string `json:"keys"`
}

// registry is the set of external keys, kept in a JSON file written atomically (temporary file,
// fsync, rename).
type registry struct {
	path string
	mu   sync.RWMutex
	keys map[string][]byte
}

func openRegistry(path string) (*registry, error) {
	r := &registry{path: path, keys: map[string][]byte{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xks: keys file: %w", err)
	}
	var f keyFile
	if err := json.Unmarshal(raw, &f); err != nil || f.Version != 1 {
		return nil, fmt.Errorf("xks: keys file %s is not a Krypton XKS keys file (version 1): restore it from a backup", path)
	}
	for id, b := range f.Keys {
		blob, err := base64.StdEncoding.DecodeString(b)
		if err != nil || !ValidKeyID(id) {
			return nil, fmt.Errorf("xks: keys file %s: entry %q is damaged: restore the file from a backup", path, id)
		}
		r.keys[id] = blob
	}
	return r, nil
}

func (r *registry) get(id string) ([]byte, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b, ok := r.keys[id]
	return b, ok
}

func (r *registry) ids() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.keys))
	for id := range r.keys {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// add records a new key and rewrites the file; an ID already present is left as it is.
func (r *registry) add(id string, blob []byte) (added bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.keys[id]; ok {
		return false, nil
	}
	f := keyFile{Version: 1, Keys: map[string]string{id: base64.StdEncoding.EncodeToString(blob)}}
	for k, v := range r.keys {
		f.Keys[k] = base64.StdEncoding.EncodeToString(v)
	}
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(r.path), ".xks-keys-*")
	if err != nil {
		return false, fmt.Errorf("xks: keys file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return false, fmt.Errorf("xks: keys file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("xks: keys file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("xks: keys file: %w", err)
	}
	if err := os.Rename(tmp.Name(), r.path); err != nil {
		return false, fmt.Errorf("xks: keys file: %w", err)
	}
	r.keys[id] = blob
	return true, nil
}
