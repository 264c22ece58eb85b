package region

import (
	"sync"

	"github.com/kryptonkms/krypton/wrap"
)

// keyring holds the unsealed keys of one node: each tenant's L2 versions and the L3 versions opened
// under them. It lives in RAM only; the key types keep their bytes in memguard (see wrap/DESIGN.md)
// and every key taken out of the keyring is destroyed exactly once, by the keyring.
//
// The keyring is a cache, not the authority: whether a key may be used is decided by the state
// machine on every call (fsm's Usable). Wiping on revocation is hygiene — the bytes of a key that
// will never be used again should not stay in memory — and makes a lookup miss, so a racing call
// that slipped past the state check fails rather than using a wiped key.
type keyring struct {
	mu      sync.RWMutex                          // guards the maps below, not the keys (each key has its own lock)
	tenants map[string]map[uint32]*wrap.TenantKey // tenant -> L2 version -> key
	svc     map[wrap.KeyID]*wrap.ServiceKey       // L3 by tenant, service, version
}

func newKeyring() *keyring {
	return &keyring{
		tenants: make(map[string]map[uint32]*wrap.TenantKey),
		svc:     make(map[wrap.KeyID]*wrap.ServiceKey),
	}
}

func (r *keyring) tenantKey(tenant string, version uint32) *wrap.TenantKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tenants[tenant][version]
}

// putTenantKey stores k unless a key for the same version is already held, in which case k is
// destroyed and the held one returned: two nodes' fetches racing must not leak a LockedBuffer.
func (r *keyring) putTenantKey(k *wrap.TenantKey) *wrap.TenantKey {
	id := k.ID()
	r.mu.Lock()
	defer r.mu.Unlock()
	versions := r.tenants[id.Tenant]
	if versions == nil {
		versions = make(map[uint32]*wrap.TenantKey)
		r.tenants[id.Tenant] = versions
	}
	if held := versions[id.Version]; held != nil {
		k.Destroy()
		return held
	}
	versions[id.Version] = k
	return k
}

func (r *keyring) serviceKey(id wrap.KeyID) *wrap.ServiceKey {
	r.mu.RLock()
	k := r.svc[id]
	r.mu.RUnlock()
	return k
}

// putServiceKey stores k, or destroys it and returns the one already held for its id.
func (r *keyring) putServiceKey(k *wrap.ServiceKey) *wrap.ServiceKey {
	id := k.ID()
	r.mu.Lock()
	defer r.mu.Unlock()
	if held := r.svc[id]; held != nil {
		k.Destroy()
		return held
	}
	r.svc[id] = k
	return k
}

// wipeTenant destroys every key of a tenant: its L2 versions and all its L3 versions.
func (r *keyring) wipeTenant(tenant string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.tenants[tenant] {
		k.Destroy()
		n++
	}
	delete(r.tenants, tenant)
	for id, k := range r.svc {
		if id.Tenant == tenant {
			k.Destroy()
			delete(r.svc, id)
			n++
		}
	}
	return n
}

// wipeService destroys the L3 versions of one service, or of one version when version > 0.
func (r *keyring) wipeService(tenant, service string, version uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, k := range r.svc {
		if id.Tenant == tenant && id.Service == service && (version == 0 || id.Version == version) {
			k.Destroy()
			delete(r.svc, id)
			n++
		}
	}
	return n
}

// wipeAll destroys every key; used on shutdown and when a restored snapshot replaces the state.
func (r *keyring) wipeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, versions := range r.tenants {
		for _, k := range versions {
			k.Destroy()
		}
	}
	for _, k := range r.svc {
		k.Destroy()
	}
	r.tenants = make(map[string]map[uint32]*wrap.TenantKey)
	r.svc = make(map[wrap.KeyID]*wrap.ServiceKey)
}

// size is the number of keys held: L2 and L3 versions together.
func (r *keyring) size() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := len(r.svc)
	for _, versions := range r.tenants {
		n += len(versions)
	}
	return n
}
