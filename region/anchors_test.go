package region_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	// The test process registers the cloud and HSM providers, as cmd/krypton does.
	_ "github.com/kryptonkms/krypton/anchor/awskms"
	"github.com/kryptonkms/krypton/anchor/awskms/awskmstest"
	_ "github.com/kryptonkms/krypton/anchor/pkcs11"
	"github.com/kryptonkms/krypton/anchor/pkcs11/pkcs11test"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The region tests' SoftHSM2 token and its PINs; the logs are scanned for the PINs.
const (
	hsmTokenLabel = "krypton-region"
	hsmSOPIN      = "Pin-region-so-4a7e19c2"
	hsmPIN        = "Pin-region-user-8d03f5b6"
)

// The regiontest timing the L1 checks run with (regiontest.Start sets them).
const (
	checkPeriod = 200 * time.Millisecond
	gracePeriod = 2 * time.Second
)

var hsmToken struct {
	once sync.Once
	tok  *pkcs11test.Token
	err  error
}

// regionToken returns the SoftHSM2 token the tests share, initialised on first use. It skips the
// test only when SoftHSM2 is missing and not required (TestMain fails the run when it is).
func regionToken(t *testing.T) *pkcs11test.Token {
	t.Helper()
	if softHSM == nil {
		t.Skip(softHSMMissing)
	}
	hsmToken.once.Do(func() { hsmToken.tok, hsmToken.err = softHSM.InitToken(hsmTokenLabel, hsmSOPIN, hsmPIN) })
	if hsmToken.err != nil {
		t.Fatal(hsmToken.err)
	}
	return hsmToken.tok
}

// anchorsRegion is a three-node region with tenant "hsm" (service "vault") on a SoftHSM2 key and
// tenant "cloud" (service "billing") on a local-kms key.
type anchorsRegion struct {
	r      *regiontest.Region
	kms    *awskmstest.Server
	tok    *pkcs11test.Token
	hsmKey string // the SoftHSM2 key's label
	kmsKey string // the local-kms key's ARN
	logs   *syncBuffer

	mu    sync.Mutex
	plain [][]byte // every data key wrapped: no log may show one
}

func startAnchors(t *testing.T) *anchorsRegion {
	t.Helper()
	a := &anchorsRegion{tok: regionToken(t), kms: awskmstest.Start(t), logs: &syncBuffer{}}
	a.hsmKey = a.tok.NewKey(t)
	a.kmsKey = a.kms.CreateKey(t)
	// Registered before the region starts, so it runs after every node has stopped.
	t.Cleanup(func() { a.scanSecrets(t) })
	a.r = regiontest.Start(t, 3, regiontest.WithLogs(a.logs),
		regiontest.WithAnchorOptions(map[string]any{anchor.SchemeAWSKMS: a.kms.Options()}))
	admin := a.r.AdminClient(a.r.Followers()[0])
	createTenant(t, admin, a.tok.URI(a.hsmKey), "hsm", "vault")
	createTenant(t, admin, a.kms.URI(a.kmsKey), "cloud", "billing")
	return a
}

func service(tenant string) string {
	if tenant == "hsm" {
		return "vault"
	}
	return "billing"
}

// wrapAll wraps a data key of tenant on every node.
func (a *anchorsRegion) wrapAll(t *testing.T, tenant string) []wrapped {
	t.Helper()
	var out []wrapped
	for i := range a.r.Nodes {
		w := mustWrap(t, a.r, i, tenant, service(tenant))
		a.mu.Lock()
		a.plain = append(a.plain, w.plain)
		a.mu.Unlock()
		out = append(out, w)
	}
	return out
}

// unwrapAll unwraps every blob on every node.
func (a *anchorsRegion) unwrapAll(t *testing.T, tenant string, ws []wrapped) {
	t.Helper()
	for i := range a.r.Nodes {
		for _, w := range ws {
			mustUnwrap(t, a.r, i, tenant, service(tenant), w)
		}
	}
}

// everyNode waits (up to timeout) until a wrap of tenant on every node answers code.
func (a *anchorsRegion) everyNode(t *testing.T, tenant string, code codes.Code, timeout time.Duration, what string) {
	t.Helper()
	clients := make([]kv1.WrapServiceClient, len(a.r.Nodes))
	for i := range a.r.Nodes {
		clients[i] = a.r.WrapClient(i, tenant, service(tenant))
	}
	req := &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: tenant, Service: service(tenant)}, Plaintext: bytes.Repeat([]byte{5}, 32)}
	clustertest.Eventually(t, timeout, what, func() bool {
		for _, c := range clients {
			if _, err := c.Wrap(ctxShort(t), req); status.Code(err) != code {
				return false
			}
		}
		return true
	})
}

// refusedForL1 checks that every node refuses tenant saying "L1 unavailable".
func (a *anchorsRegion) refusedForL1(t *testing.T, tenant string) {
	t.Helper()
	for i := range a.r.Nodes {
		_, err := a.r.WrapClient(i, tenant, service(tenant)).Wrap(ctxShort(t), &kv1.WrapRequest{
			Key: &kv1.KeyRef{Tenant: tenant, Service: service(tenant)}, Plaintext: bytes.Repeat([]byte{5}, 32)})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "L1 unavailable") {
			t.Fatalf("%s on %s: %v, want FailedPrecondition \"L1 unavailable\"", tenant, a.r.Cfgs[i].NodeID, err)
		}
	}
}

// scanSecrets fails the test if a PIN, the AWS secret key or session token, or a data key (raw,
// hex or base64) shows in any node's log or audit log.
func (a *anchorsRegion) scanSecrets(t *testing.T) {
	t.Helper()
	texts := map[string]string{"the nodes' logs": string(a.logs.Bytes())}
	if a.r != nil {
		audited := 0
		for _, c := range a.r.Cfgs {
			path := c.AuditPath
			if path == "" {
				path = filepath.Join(c.DataDir, "audit.log")
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("audit log of %s: %v", c.NodeID, err)
				continue
			}
			// A node records what it prepared or refused: one that did neither has an empty log.
			texts["the audit log of "+c.NodeID] = string(b)
			audited += len(b)
		}
		if audited == 0 {
			t.Error("no node wrote an audit record: the scan saw nothing")
		}
	}
	secrets := map[string]string{
		"the user PIN": hsmPIN, "the SO PIN": hsmSOPIN,
		"the AWS secret key": awskmstest.SecretKey, "the AWS session token": awskmstest.SessionToken,
	}
	a.mu.Lock()
	for i, k := range a.plain {
		for j, f := range secretForms(k) {
			secrets[fmt.Sprintf("data key %d (form %d)", i, j)] = string(f)
		}
	}
	a.mu.Unlock()
	for where, text := range texts {
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows %s", where, what)
			}
		}
	}
	if t.Failed() {
		logs := string(a.logs.Bytes())
		t.Logf("the nodes' logs (last 20 kB):\n%s", logs[max(0, len(logs)-20000):])
	}
}

// Wraps work on every node for tenants on SoftHSM2 and local-kms; the customer disabling either
// root key is obeyed on every node within a check period and a lease, leaves the other tenant
// alone, and enabling it again serves every earlier blob; an unreachable KMS is ridden out for the
// grace period, then the tenant is refused until KMS answers again.
func TestAnchorsKillSwitch(t *testing.T) {
	a := startAnchors(t)
	hsmBlobs := a.wrapAll(t, "hsm")
	cloudBlobs := a.wrapAll(t, "cloud")
	a.unwrapAll(t, "hsm", hsmBlobs)
	a.unwrapAll(t, "cloud", cloudBlobs)

	// The bound the design promises (one check period, then the lockout applied everywhere;
	// a node cut off from it stops within a lease), with room for -race on two shared cores.
	bound := checkPeriod + regiontest.LeaseDuration + 3*time.Second
	for _, tc := range []struct {
		tenant, other   string
		what            string
		disable, enable func()
	}{
		{"hsm", "cloud", "SoftHSM2 CKA_ENCRYPT/CKA_DECRYPT off",
			func() { a.tok.Disable(t, a.hsmKey) }, func() { a.tok.Enable(t, a.hsmKey) }},
		{"cloud", "hsm", "local-kms DisableKey",
			func() { a.kms.Disable(t, a.kmsKey) }, func() { a.kms.Enable(t, a.kmsKey) }},
	} {
		start := time.Now()
		tc.disable()
		a.everyNode(t, tc.tenant, codes.FailedPrecondition, bound, "every node refusing "+tc.tenant+" after "+tc.what)
		t.Logf("%s: L1 disabled -> last of 3 nodes refusing in %v (check period %v, lease %v)",
			tc.what, time.Since(start).Round(time.Millisecond), checkPeriod, regiontest.LeaseDuration)
		a.refusedForL1(t, tc.tenant)
		a.wrapAll(t, tc.other) // unaffected
		tc.enable()
		a.everyNode(t, tc.tenant, codes.OK, 20*time.Second, "every node serving "+tc.tenant+" again")
		a.unwrapAll(t, "hsm", hsmBlobs)
		a.unwrapAll(t, "cloud", cloudBlobs)
	}

	// KMS unreachable: every connection dropped.
	a.kms.SetMode(awskmstest.Unreachable)
	start := time.Now()
	mustUnwrap(t, a.r, 2, "cloud", "billing", cloudBlobs[0]) // within the grace period
	a.everyNode(t, "cloud", codes.FailedPrecondition, gracePeriod+bound, "the lockout after the grace period")
	if d := time.Since(start); d < gracePeriod {
		t.Fatalf("locked out after %v, before the %v grace period", d, gracePeriod)
	}
	t.Logf("local-kms unreachable -> last of 3 nodes refusing in %v (grace %v)", time.Since(start).Round(time.Millisecond), gracePeriod)
	a.refusedForL1(t, "cloud")
	a.wrapAll(t, "hsm")
	a.kms.SetMode(awskmstest.Up)
	a.everyNode(t, "cloud", codes.OK, 20*time.Second, "every node serving cloud once KMS answers")
	a.unwrapAll(t, "cloud", cloudBlobs)
}

// RekeyTenant moves tenant "cloud" from its local-kms key to a SoftHSM2 key: every data key
// wrapped before opens on every node, before and after, and after the old KMS key is scheduled
// for deletion and the whole region restarted (so that L2 is unsealed through the new root).
func TestAnchorsRekeyKMSToHSM(t *testing.T) {
	a := startAnchors(t)
	before := a.wrapAll(t, "cloud")
	a.unwrapAll(t, "cloud", before)

	newKey := a.tok.NewKey(t)
	admin := a.r.AdminClient(a.r.Followers()[0])
	k := ownertest.New(t)
	registerOwner(t, a.r, "cloud", k)
	tn, err := admin.RekeyTenant(ctxT(t), &kv1.RekeyTenantRequest{RequestId: "rekey-cloud", Tenant: "cloud", AnchorUri: a.tok.URI(newKey), Consent: rekeyConsent(t, k, "cloud", a.tok.URI(newKey), "rekey-cloud")})
	if err != nil {
		t.Fatalf("RekeyTenant: %v", err)
	}
	if tn.GetAnchorUri() != a.tok.URI(newKey) {
		t.Fatalf("anchor after rekey: %q", tn.GetAnchorUri())
	}
	a.unwrapAll(t, "cloud", before)
	after := a.wrapAll(t, "cloud")

	// The old root key goes: KMS refuses it from now on.
	a.kms.ScheduleDeletion(t, a.kmsKey)
	for i := range a.r.Nodes {
		a.r.Kill(i)
	}
	for i := range a.r.Nodes {
		a.r.Start(i)
	}
	a.r.WaitLeader()
	a.unwrapAll(t, "cloud", before)
	a.unwrapAll(t, "cloud", after)
	a.everyNode(t, "cloud", codes.OK, 20*time.Second, "every node serving cloud on the new root")
	a.wrapAll(t, "hsm")
}
