package region_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	anchorfile "github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// keyFile is the path of a file:// anchor URI.
func keyFile(uri string) string { return strings.TrimPrefix(uri, "file://") }

// eachNodeAnswers waits until a wrap on every node gets the given code.
func eachNodeAnswers(t *testing.T, r *regiontest.Region, code codes.Code, what string) {
	t.Helper()
	clients := make([]kv1.WrapServiceClient, len(r.Nodes))
	for i := range r.Nodes {
		clients[i] = r.WrapClient(i, "acme", "payments")
	}
	clustertest.Eventually(t, 20*time.Second, what, func() bool {
		for _, c := range clients {
			_, err := c.Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{5}, 32)})
			if status.Code(err) != code {
				return false
			}
		}
		return true
	})
}

// The customer disables the root key: every node refuses the tenant with FailedPrecondition
// ("L1 unavailable"), another tenant on another root key is unaffected, and enabling the key again
// serves every earlier blob.
func TestKillSwitchDefiniteDenial(t *testing.T) {
	r := setup(t)
	ctx := ctxT(t)
	// A second tenant on its own root key.
	otherURI := "file://" + filepath.Join(t.TempDir(), "other.key")
	p, err := anchor.Open(ctx, otherURI, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "t2", Tenant: "globex", AnchorUri: otherURI}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "k2", Tenant: "globex", Service: "billing"}); err != nil {
		t.Fatal(err)
	}
	before := mustWrap(t, r, 1, "acme", "payments")

	start := time.Now()
	if err := anchorfile.Disable(keyFile(r.Anchor)); err != nil {
		t.Fatal(err)
	}
	eachNodeAnswers(t, r, codes.FailedPrecondition, "every node refusing acme")
	t.Logf("L1 disabled -> every node refusing in %v (check period 200ms + fence)", time.Since(start).Round(time.Millisecond))
	_, err = r.WrapClient(0, "acme", "payments").Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{5}, 32)})
	if !strings.Contains(status.Convert(err).Message(), "L1 unavailable") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	for i := range r.Nodes {
		mustWrap(t, r, i, "globex", "billing") // unaffected
	}

	if err := anchorfile.Enable(keyFile(r.Anchor)); err != nil {
		t.Fatal(err)
	}
	eachNodeAnswers(t, r, codes.OK, "every node serving acme again")
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", before)
	}
}

// An unreachable KMS is tolerated for the grace period, then the tenant is locked out; reachable
// again, it is served again.
func TestKillSwitchTransientGrace(t *testing.T) {
	r := setup(t)
	before := mustWrap(t, r, 0, "acme", "payments")
	// Every node unseals (or fetches) the tenant key while the KMS answers; the grace period is
	// about keys already held, since nothing can be unsealed while the KMS is away.
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", before)
	}
	if err := anchorfile.SetUnavailable(keyFile(r.Anchor), true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Within the grace period (regiontest sets 2 s) the keys already held keep serving.
	mustUnwrap(t, r, 2, "acme", "payments", before)
	eachNodeAnswers(t, r, codes.FailedPrecondition, "the lockout after the grace period")
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("locked out after %v, before the 2 s grace period", d)
	}
	if err := anchorfile.SetUnavailable(keyFile(r.Anchor), false); err != nil {
		t.Fatal(err)
	}
	eachNodeAnswers(t, r, codes.OK, "serving again once the KMS answers")
	mustUnwrap(t, r, 1, "acme", "payments", before)
}

// Rotating L1 re-seals L2 under the new root: nothing wrapped before needs rewrapping, the old root
// can be disabled, and a restarted region unseals through the new one.
func TestRekeyTenant(t *testing.T) {
	r := setup(t)
	ctx := ctxT(t)
	before := mustWrap(t, r, 0, "acme", "payments")
	newURI := "file://" + filepath.Join(t.TempDir(), "new-root.key")
	p, err := anchor.Open(ctx, newURI, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	admin := r.AdminClient(r.Followers()[0])
	k := ownertest.New(t)
	registerOwner(t, r, "acme", k)
	tn, err := admin.RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rekey", Tenant: "acme", AnchorUri: newURI, Consent: rekeyConsent(t, k, "acme", newURI, "rekey")})
	if err != nil {
		t.Fatalf("RekeyTenant: %v", err)
	}
	if tn.GetAnchorUri() != newURI {
		t.Fatalf("anchor after rekey: %q", tn.GetAnchorUri())
	}
	// The old root key may go now.
	if err := anchorfile.Destroy(keyFile(r.Anchor)); err != nil {
		t.Fatal(err)
	}
	for i := range r.Nodes {
		r.Kill(i)
	}
	for i := range r.Nodes {
		r.Start(i)
	}
	r.WaitLeader()
	for i := range r.Nodes {
		mustUnwrap(t, r, i, "acme", "payments", before)
	}
	// A rekey to an anchor that does not work is refused and changes nothing.
	bad := "file:///nonexistent/root.key"
	_, err = r.AdminClient(r.WaitLeader()).RekeyTenant(ctx, &kv1.RekeyTenantRequest{RequestId: "rekey-bad", Tenant: "acme", AnchorUri: bad, Consent: rekeyConsent(t, k, "acme", bad, "rekey-bad")})
	if status.Code(err) == codes.OK {
		t.Fatal("a rekey to a missing root key was accepted")
	}
}
