package apiservertest_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/kryptonkms/krypton/client"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/gateway/kmsplugin"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// secret is a Secret as the apiserver stores it, and the etcd key it is bound to.
var (
	secret    = []byte(`{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","namespace":"default"},"data":{"password":"aHVudGVyMg=="}}`)
	secretKey = value.DefaultContext("/registry/secrets/default/db")
)

// encryptionConfig is the EncryptionConfiguration of docs/kms-plugin.md, for a plugin on socket.
func encryptionConfig(socket string) string {
	return `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - kms:
          apiVersion: v2
          name: krypton
          endpoint: unix://` + socket + `
          timeout: 10s
      - identity: {}
`
}

// TestKMSv2Apiserver runs the kube-apiserver's KMS v2 code against the plugin over a real Unix
// socket, the plugin working through a gateway of a real region: the apiserver's own
// EncryptionConfiguration loader seals and opens a Secret, a key rotation changes the key ID
// Status reports and the apiserver's next DEK seed is sealed under it while Secrets of the old
// version still open, and once the key is revoked Status is not "ok" and Decrypt is refused.
func TestKMSv2Apiserver(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "k8s")
	admin := r.AdminClient(r.WaitLeader())
	g := startGateway(t, r, "acme", "k8s")
	socket := startPlugin(t, gatewayClient(t, g))
	ctx := ctxT(t)

	// The apiserver as configured by the documented EncryptionConfiguration: it primes its DEK
	// seed from the plugin's Status and Encrypt at load.
	cfg := loadEncryptionConfig(t, socket)
	secrets := cfg.Transformers[schema.GroupResource{Resource: "secrets"}]
	stored, err := secrets.TransformToStorage(ctx, secret, secretKey)
	if err != nil {
		t.Fatalf("TransformToStorage: %v", err)
	}
	if !bytes.HasPrefix(stored, []byte("k8s:enc:kms:v2:krypton:")) {
		t.Fatalf("stored Secret starts %q, want the KMS v2 prefix", stored[:min(len(stored), 32)])
	}
	if bytes.Contains(stored, []byte("aHVudGVyMg")) {
		t.Fatal("the stored Secret holds its data in clear")
	}
	if kid := keyIDOf(t, stored); kid != "krypton:acme/k8s@v1" {
		t.Fatalf("stored key ID %q, want krypton:acme/k8s@v1", kid)
	}
	if got, stale, err := secrets.TransformFromStorage(ctx, stored, secretKey); err != nil || stale || !bytes.Equal(got, secret) {
		t.Fatalf("TransformFromStorage: %q stale=%v %v", got, stale, err)
	}
	if _, _, err := secrets.TransformFromStorage(ctx, stored, value.DefaultContext("/registry/secrets/default/other")); err == nil {
		t.Fatal("a Secret opened under another etcd key")
	}
	if err := cfg.HealthChecks[0].Check(httptest.NewRequest("GET", "/healthz/kms-providers", nil)); err != nil {
		t.Fatalf("the apiserver's KMS health check: %v", err)
	}

	// The apiserver's steady state, driven here: its gRPC client, its envelope transformer, and
	// the DEK seed refreshed on Status's key ID.
	a := newApiserver(t, socket)
	if st := a.probe(t, ctx); st.KeyID != "krypton:acme/k8s@v1" {
		t.Fatalf("Status key ID %q, want krypton:acme/k8s@v1", st.KeyID)
	}
	v1Stored, err := a.transformer().TransformToStorage(ctx, secret, secretKey)
	if err != nil {
		t.Fatal(err)
	}

	// Rotation: Status reports the new version, the apiserver makes a new seed under it.
	if _, err := admin.RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "rotate-k8s", Tenant: "acme", Service: "k8s"}); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	var st *kmsservice.StatusResponse
	clustertest.Eventually(t, 10*time.Second, "Status reports the rotated key", func() bool {
		st = a.probe(t, ctx)
		return st.KeyID != "krypton:acme/k8s@v1"
	})
	if st.KeyID != "krypton:acme/k8s@v2" {
		t.Fatalf("Status key ID after rotation %q, want krypton:acme/k8s@v2", st.KeyID)
	}
	tr := a.transformer()
	v2Stored, err := tr.TransformToStorage(ctx, secret, secretKey)
	if err != nil {
		t.Fatal(err)
	}
	if kid := keyIDOf(t, v2Stored); kid != "krypton:acme/k8s@v2" {
		t.Fatalf("key ID of a Secret written after rotation %q, want krypton:acme/k8s@v2", kid)
	}
	// A fresh transformer has no DEK cached: the old Secret's seed is opened by the plugin, under v1.
	if got, stale, err := a.transformer().TransformFromStorage(ctx, v1Stored, secretKey); err != nil || !stale || !bytes.Equal(got, secret) {
		t.Fatalf("a v1 Secret after rotation: %q stale=%v %v (want it, stale: to be rewritten under v2)", got, stale, err)
	}
	// A restarted apiserver (the loader again) writes under v2 and reads what it wrote under v1.
	cfg2 := loadEncryptionConfig(t, socket)
	secrets2 := cfg2.Transformers[schema.GroupResource{Resource: "secrets"}]
	if got, _, err := secrets2.TransformFromStorage(ctx, stored, secretKey); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("a restarted apiserver reading the v1 Secret: %q %v", got, err)
	}
	stored2, err := secrets2.TransformToStorage(ctx, secret, secretKey)
	if err != nil {
		t.Fatal(err)
	}
	if kid := keyIDOf(t, stored2); kid != "krypton:acme/k8s@v2" {
		t.Fatalf("a restarted apiserver writes under %q, want krypton:acme/k8s@v2", kid)
	}

	// Revocation: Status is not "ok" and has no key ID; the plugin refuses Decrypt.
	if _, err := admin.RevokeKey(ctx, &kv1.RevokeKeyRequest{RequestId: "revoke-k8s", Reason: "kill switch",
		Scope: &kv1.KeyScope{Tenant: "acme", Service: "k8s"}}); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	clustertest.Eventually(t, 10*time.Second, "Status unhealthy after revocation", func() bool {
		st, err = a.svc.Status(ctx)
		return err == nil && st.Healthz != "ok"
	})
	if st.KeyID != "" || !strings.Contains(st.Healthz, "FailedPrecondition") {
		t.Errorf("Status after revocation: healthz %q key ID %q, want a FailedPrecondition refusal and no key ID", st.Healthz, st.KeyID)
	}
	t.Logf("Status after revocation: %q", st.Healthz)
	for name, ct := range map[string][]byte{"v1": v1Stored, "v2": v2Stored} {
		if _, _, err := a.transformer().TransformFromStorage(ctx, ct, secretKey); err == nil {
			t.Errorf("a %s Secret opened after revocation", name)
		}
	}
	enc := encryptedObject(t, v2Stored)
	if _, err := a.svc.Decrypt(ctx, "after-revoke", &kmsservice.DecryptRequest{Ciphertext: enc.EncryptedDEKSource, KeyID: enc.KeyID}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("plugin Decrypt after revocation: %v, want FailedPrecondition", err)
	}
	// (cfg2's own health check would answer from its cache of a healthy answer for 20 s; a
	// freshly loaded configuration asks the plugin.)
	if err := loadEncryptionConfig(t, socket).HealthChecks[0].Check(httptest.NewRequest("GET", "/healthz/kms-providers", nil)); err == nil {
		t.Error("the apiserver's KMS health check passes after revocation")
	}
}

// TestKMSv2StatusRefusals: Status is not "ok", and carries no key ID, when the tenant is locked
// (the kill switch) and when Krypton cannot be reached; and the plugin works directly against a
// region's nodes as well as through a gateway.
func TestKMSv2StatusRefusals(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "halted", "k8s")
	setupTenant(t, r, "gone", "k8s")
	setupTenant(t, r, "direct", "k8s")
	admin := r.AdminClient(r.WaitLeader())
	ctx := ctxT(t)

	t.Run("through the region directly", func(t *testing.T) {
		cert, err := r.CA.IssueService("direct", "k8s", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var addrs []string
		for _, c := range r.Cfgs {
			addrs = append(addrs, c.RPCAddr)
		}
		c, err := client.DialRegion(ctx, r.Cfgs[0].Region, addrs, transport.ClientConfig{Roots: r.CA.Pool(), Certificate: cert.TLSCertificate()}, "direct", "k8s")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		a := newApiserver(t, startPlugin(t, c))
		if st := a.probe(t, ctx); st.KeyID != "krypton:direct/k8s@v1" {
			t.Fatalf("Status key ID %q", st.KeyID)
		}
		stored, err := a.transformer().TransformToStorage(ctx, secret, secretKey)
		if err != nil {
			t.Fatal(err)
		}
		if got, _, err := a.transformer().TransformFromStorage(ctx, stored, secretKey); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("TransformFromStorage: %q %v", got, err)
		}
	})

	t.Run("tenant locked", func(t *testing.T) {
		a := newApiserver(t, startPlugin(t, gatewayClient(t, startGateway(t, r, "halted", "k8s"))))
		a.probe(t, ctx)
		stored, err := a.transformer().TransformToStorage(ctx, secret, secretKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.LockTenant(ctx, &kv1.LockTenantRequest{RequestId: "lock-halted", Tenant: "halted", Reason: "kill switch"}); err != nil {
			t.Fatalf("LockTenant: %v", err)
		}
		wantUnhealthy(t, a, ctx, "FailedPrecondition")
		if _, _, err := a.transformer().TransformFromStorage(ctx, stored, secretKey); err == nil {
			t.Error("a Secret opened while the tenant is locked")
		}
		// Unlocked, the plugin is healthy again by itself, under the same key.
		if _, err := admin.UnlockTenant(ctx, &kv1.UnlockTenantRequest{RequestId: "unlock-halted", Tenant: "halted"}); err != nil {
			t.Fatalf("UnlockTenant: %v", err)
		}
		clustertest.Eventually(t, 10*time.Second, "Status ok after unlock", func() bool {
			st, err := a.svc.Status(ctx)
			return err == nil && st.Healthz == "ok" && st.KeyID == "krypton:halted/k8s@v1"
		})
		if got, _, err := a.transformer().TransformFromStorage(ctx, stored, secretKey); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("a Secret after unlock: %q %v", got, err)
		}
	})

	t.Run("gateway unreachable", func(t *testing.T) {
		g := startGateway(t, r, "gone", "k8s")
		a := newApiserver(t, startPlugin(t, gatewayClient(t, g)))
		a.probe(t, ctx)
		g.Close()
		wantUnhealthy(t, a, ctx, "Unavailable")
	})
}

// wantUnhealthy waits for the plugin's Status to report a refusal with code, and no key ID.
func wantUnhealthy(t *testing.T, a *apiserver, ctx context.Context, code string) {
	t.Helper()
	var st *kmsservice.StatusResponse
	clustertest.Eventually(t, 10*time.Second, "Status unhealthy", func() bool {
		var err error
		st, err = a.svc.Status(ctx)
		if err != nil {
			t.Fatalf("Status: %v (want a response that is not ok)", err)
		}
		return st.Healthz != "ok"
	})
	if st.KeyID != "" || !strings.Contains(st.Healthz, code) || st.Version != "v2" {
		t.Errorf("Status: version %q healthz %q key ID %q, want v2, a %s refusal and no key ID", st.Version, st.Healthz, st.KeyID, code)
	}
	t.Logf("Status: %q", st.Healthz)
}

// apiserver is what the kube-apiserver keeps for one KMS v2 provider: its gRPC client of the
// plugin (kmsv2.NewGRPCService) and the current DEK seed, refreshed from Status as its health
// probe does (encryptionconfig's rotateDEKOnKeyIDChange: unexported, so its steps are repeated
// here, with the apiserver's own GenerateTransformer). The loader runs that probe once a minute;
// here the test runs it.
type apiserver struct {
	svc   kmsservice.Service
	state atomic.Pointer[kmsv2.State]
}

const providerName = "krypton"

func newApiserver(t *testing.T, socket string) *apiserver {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // closes the connection
	svc, err := kmsv2.NewGRPCService(ctx, "unix://"+socket, providerName, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &apiserver{svc: svc}
}

// transformer is a new envelope transformer, with an empty DEK cache (every read asks the plugin).
func (a *apiserver) transformer() value.Transformer {
	return kmsv2.NewEnvelopeTransformer(a.svc, providerName, func() (kmsv2.State, error) {
		s := a.state.Load()
		if s == nil {
			return kmsv2.State{}, errors.New("no DEK seed yet")
		}
		return *s, nil
	}, "apiserver-1")
}

// probe calls Status and, if its key ID is not the current seed's, makes a new seed (Encrypt);
// it fails the test if Status is not ok.
func (a *apiserver) probe(t *testing.T, ctx context.Context) *kmsservice.StatusResponse {
	t.Helper()
	st, err := a.svc.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Healthz != "ok" || st.Version != "v2" {
		t.Fatalf("Status: version %q healthz %q", st.Version, st.Healthz)
	}
	if cur := a.state.Load(); cur != nil && cur.EncryptedObjectKeyID == st.KeyID {
		return st
	}
	uid := "seed-" + strconv.FormatInt(time.Now().UnixNano(), 10)
	tr, obj, cacheKey, err := kmsv2.GenerateTransformer(ctx, uid, a.svc, true)
	if err != nil {
		t.Fatalf("GenerateTransformer: %v", err)
	}
	if obj.KeyID != st.KeyID {
		// The apiserver keeps its seed and tries again at the next probe.
		t.Logf("Encrypt's key ID %q is not Status's %q: a rotation in between", obj.KeyID, st.KeyID)
		return st
	}
	a.state.Store(&kmsv2.State{
		Transformer:                           tr,
		EncryptedObjectKeyID:                  obj.KeyID,
		EncryptedObjectEncryptedDEKSource:     obj.EncryptedDEKSource,
		EncryptedObjectAnnotations:            obj.Annotations,
		EncryptedObjectEncryptedDEKSourceType: obj.EncryptedDEKSourceType,
		UID:                                   uid,
		ExpirationTimestamp:                   time.Now().Add(3 * time.Minute),
		CacheKey:                              cacheKey,
		KMSProviderName:                       providerName,
	})
	return st
}

// loadEncryptionConfig loads encryptionConfig(socket) with the apiserver's loader; its
// background probes stop at the test's end.
func loadEncryptionConfig(t *testing.T, socket string) *encryptionconfig.EncryptionConfiguration {
	t.Helper()
	path := filepath.Join(t.TempDir(), "encryption.yaml")
	if err := os.WriteFile(path, []byte(encryptionConfig(socket)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg, err := encryptionconfig.LoadEncryptionConfig(ctx, path, false, "apiserver-1")
	if err != nil {
		t.Fatalf("LoadEncryptionConfig: %v", err)
	}
	return cfg
}

// encryptedObject decodes what the envelope transformer stored (after the loader's prefix, if any).
func encryptedObject(t *testing.T, stored []byte) *kmstypes.EncryptedObject {
	t.Helper()
	if p := []byte("k8s:enc:kms:v2:" + providerName + ":"); bytes.HasPrefix(stored, p) {
		stored = stored[len(p):]
	}
	var o kmstypes.EncryptedObject
	if err := proto.Unmarshal(stored, &o); err != nil {
		t.Fatalf("stored value: %v", err)
	}
	return &o
}

func keyIDOf(t *testing.T, stored []byte) string {
	t.Helper()
	return encryptedObject(t, stored).KeyID
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setupTenant creates a tenant with service keys on the region.
func setupTenant(t testing.TB, r *regiontest.Region, tenant string, services ...string) {
	t.Helper()
	admin := r.AdminClient(r.WaitLeader())
	if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "create-" + tenant, Tenant: tenant, AnchorUri: r.Anchor}); err != nil {
		t.Fatalf("CreateTenant %s: %v", tenant, err)
	}
	for _, s := range services {
		if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "create-" + tenant + "-" + s, Tenant: tenant, Service: s}); err != nil {
			t.Fatalf("CreateKey %s/%s: %v", tenant, s, err)
		}
	}
}

// startGateway starts a gateway for tenant/service on the region, on a Unix socket only.
func startGateway(t testing.TB, r *regiontest.Region, tenant, service string) *gateway.Gateway {
	t.Helper()
	cert, err := r.CA.IssueService(tenant, service, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	for _, c := range r.Cfgs {
		cfg.RegionAddrs = append(cfg.RegionAddrs, c.RPCAddr)
	}
	cfg.Region = r.Cfgs[0].Region
	cfg.Roots = r.CA.Pool()
	cfg.Certificate = cert.TLSCertificate()
	cfg.ListenAddr = ""
	cfg.UnixSocket = filepath.Join(t.TempDir(), "gw.sock")
	cfg.RefreshInterval = 200 * time.Millisecond
	cfg.MaxAttempts = 16 // ride out a region slowed down by a busy machine
	cfg.Logger = clustertest.NewLogger(t)
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve() }()
	t.Cleanup(func() {
		g.Close()
		if err := <-served; err != nil {
			t.Errorf("gateway Serve: %v", err)
		}
	})
	return g
}

// gatewayClient is a client of the gateway's Unix socket.
func gatewayClient(t testing.TB, g *gateway.Gateway) *client.Client {
	t.Helper()
	c, err := client.DialGatewayUnix(g.UnixSocket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startPlugin serves a plugin working through keys on a new socket, and returns the socket's path.
func startPlugin(t testing.TB, keys kmsplugin.Keys) string {
	t.Helper()
	cfg := kmsplugin.DefaultConfig()
	cfg.Keys = keys
	cfg.Socket = filepath.Join(t.TempDir(), "kms.sock")
	cfg.Logger = clustertest.NewLogger(t)
	p, err := kmsplugin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v, want mode 0600", fi, err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve() }()
	t.Cleanup(func() {
		p.Close()
		if err := <-served; err != nil {
			t.Errorf("plugin Serve: %v", err)
		}
	})
	return cfg.Socket
}
