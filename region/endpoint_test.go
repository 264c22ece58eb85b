package region_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/awskms/awskmstest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// An anchor's endpoint override must use TLS: a tenant created or rekeyed onto an awskms
// endpoint=http://... had its L2 sent to KMS in clear (issue 14). A production node (no
// -dev-anchor) refuses any http:// endpoint, a development node one that is not on loopback; both
// with InvalidArgument naming https:// and before anything is proposed. The development path
// still works: a local-kms emulator over http on 127.0.0.1 serves a tenant.
func TestPlainEndpointRefused(t *testing.T) {
	refused := func(t *testing.T, r *regiontest.Region, what string, call func(kv1.AdminServiceClient) error) {
		t.Helper()
		before := proposals(t, r.Nodes[r.WaitLeader()])
		err := call(r.AdminClient(r.WaitLeader()))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "https://") {
			t.Errorf("%s: %v, want InvalidArgument naming https://", what, err)
		}
		if after := proposals(t, r.Nodes[r.WaitLeader()]); after != before {
			t.Errorf("%s reached the Raft log (%v proposals, were %v)", what, after, before)
		}
	}
	kms := awskmstest.Start(t)
	key := kms.CreateKey(t)
	loopback := kms.URI(key) // endpoint=http://127.0.0.1:port
	remote := "awskms://" + key + "?endpoint=http://192.0.2.7:4599"

	t.Run("production", func(t *testing.T) {
		r := regiontest.Start(t, 1, regiontest.WithConfig(func(c *region.Config) { c.AllowDevAnchor = false }),
			regiontest.WithAnchorOptions(map[string]any{anchor.SchemeAWSKMS: kms.Options()}))
		for _, uri := range []string{loopback, remote} {
			refused(t, r, "tenant create on "+uri, func(a kv1.AdminServiceClient) error {
				_, err := a.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "ct-" + uri, Tenant: "acme", AnchorUri: uri})
				return err
			})
		}
	})
	t.Run("development", func(t *testing.T) {
		r := regiontest.Start(t, 1, regiontest.WithAnchorOptions(map[string]any{anchor.SchemeAWSKMS: kms.Options()}))
		admin := r.AdminClient(0)
		refused(t, r, "tenant create on a remote http endpoint", func(a kv1.AdminServiceClient) error {
			_, err := a.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "ct-remote", Tenant: "acme", AnchorUri: remote})
			return err
		})
		// The emulator on loopback: the dev and test path.
		createTenant(t, admin, loopback, "acme", "payments")
		if _, err := r.ServingWrapClient(0, "acme", "payments").Wrap(ctxT(t), &kv1.WrapRequest{
			Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: randKey(t)}); err != nil {
			t.Fatalf("wrap under a local-kms anchor on loopback: %v", err)
		}
		refused(t, r, "tenant rekey onto a remote http endpoint", func(a kv1.AdminServiceClient) error {
			_, err := a.RekeyTenant(ctxShort(t), &kv1.RekeyTenantRequest{RequestId: "rk-remote", Tenant: "acme", AnchorUri: remote})
			return err
		})
		if tn, err := admin.DescribeTenant(ctxT(t), &kv1.DescribeTenantRequest{Tenant: "acme"}); err != nil || tn.GetTenant().GetAnchorUri() != anchor.Redact(loopback) {
			t.Errorf("acme after the refused rekey: %v, %v", tn, err)
		}
	})
}
