package fsm

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/policy"
)

// keyTypeName matches type names that hold plaintext key material in the
// rest of Krypton (wrap.DataKey, wrap.ServiceKey, memguard.LockedBuffer,
// ...). KeyVersion and KeyState name metadata, and KeyID an identity.
var keyTypeName = regexp.MustCompile(`(?i)^(key|(data|service|tenant|root|master|private|secret|plain|l[1-4])key|lockedbuffer|enclave|keyring)$`)

// keyFieldName matches field names that would suggest plaintext keys.
var keyFieldName = regexp.MustCompile(`(?i)^(key|plain.*|secret.*|private.*|unsealed.*|.*plaintext)$`)

// plaintextKeyPaths walks t and returns the paths at which a type or field
// that may hold plaintext key material is reachable.
func plaintextKeyPaths(t reflect.Type) []string {
	var out []string
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		if seen[t] {
			return
		}
		seen[t] = true
		if pkg := t.PkgPath(); t.Name() != "" {
			fromWrap := strings.HasSuffix(pkg, "/wrap") && t.Name() != "KeyID"
			if fromWrap || strings.Contains(pkg, "memguard") || keyTypeName.MatchString(t.Name()) {
				out = append(out, path+" ("+pkg+"."+t.Name()+")")
			}
		}
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Chan:
			walk(t.Elem(), path+"[]")
		case reflect.Map:
			walk(t.Key(), path+"{key}")
			walk(t.Elem(), path+"{}")
		case reflect.Struct:
			for i := range t.NumField() {
				f := t.Field(i)
				if keyFieldName.MatchString(f.Name) {
					out = append(out, path+"."+f.Name+" (field name)")
				}
				walk(f.Type, path+"."+f.Name)
			}
		case reflect.Interface:
			// Command is an interface: its implementations are listed below.
		}
	}
	walk(t, t.String())
	return out
}

// TestNoPlaintextKeyMaterial fails if a plaintext key type can reach the
// log entries, the state or the snapshot: they hold sealed blobs only.
func TestNoPlaintextKeyMaterial(t *testing.T) {
	types := []any{
		Entry{}, Result{}, Change{}, Settings{},
		CreateTenant{}, RotateTenantKey{}, CreateService{}, RotateServiceKey{},
		RevokeTenant{}, RevokeService{}, RevokeKeyVersion{}, LockTenant{}, UnlockTenant{},
		SetAnchor{}, DeleteAnchor{}, ApplyGovernanceEvent{}, SetSettings{}, SetPolicy{}, ResyncTenant{}, SetOwnerKey{},
		policy.Policy{}, policy.Rule{}, tenantNode{},
		wireEntry{}, wireEvent{}, wireResponse{},
		root{}, snapshotHeader{}, snapshot{}, dedupeEntry{},
		Tenant{}, Service{}, KeyVersion{}, Revocation{},
	}
	for _, v := range types {
		if p := plaintextKeyPaths(reflect.TypeOf(v)); len(p) > 0 {
			t.Errorf("plaintext key material reachable: %v", p)
		}
	}
	// Every command type is listed above.
	for _, tag := range []string{"create-tenant", "rotate-tenant-key", "create-service", "rotate-service-key",
		"revoke-tenant", "revoke-service", "revoke-key-version", "lock-tenant", "unlock-tenant",
		"set-anchor", "delete-anchor", "governance-event", "set-settings", "set-policy", "resync-tenant", "set-owner-key"} {
		if newCommand(tag) == nil {
			t.Errorf("unknown tag %s", tag)
		}
	}
}

// The walker itself must be able to fail.
func TestPlaintextKeyWalkerCatches(t *testing.T) {
	type DataKey struct{ b [32]byte }
	type badRecord struct {
		Sealed []byte
		Inner  struct{ K map[string]*DataKey }
	}
	type badField struct{ Plaintext []byte }
	if p := plaintextKeyPaths(reflect.TypeOf(badRecord{})); len(p) != 1 {
		t.Fatalf("paths = %v", p)
	}
	if p := plaintextKeyPaths(reflect.TypeOf(badField{})); len(p) != 1 {
		t.Fatalf("paths = %v", p)
	}
}

// TestImports: fsm does no I/O of its own and depends on no other part of
// Krypton but wrap (for names), policy (the key-use policy language,
// itself standard library only) and internal/owner (verifying a tenant
// owner's consent: a signature check, deterministic, at the entry's time)
// and internal/staterr (the refusals it shares with governance's state
// machine, standard library only); only Raft, for the FSM interface.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"bufio": true, "bytes": true, "crypto/sha256": true, "encoding/binary": true, "encoding/json": true, "errors": true,
		"math": true,
		"fmt":  true, "io": true, "maps": true, "slices": true, "strconv": true, "strings": true,
		"sync": true, "sync/atomic": true, "time": true, "unicode/utf8": true,
		"github.com/hashicorp/raft":                      true,
		"github.com/kryptonkms/krypton/wrap":             true,
		"github.com/kryptonkms/krypton/policy":           true,
		"encoding/hex":                                   true,
		"github.com/kryptonkms/krypton/internal/owner":   true,
		"github.com/kryptonkms/krypton/internal/staterr": true,
	}
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[p] {
				t.Errorf("%s imports %s", name, p)
			}
		}
	}
}
