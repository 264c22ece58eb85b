package region_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// startGoverned starts a one-node governance and a three-node region "eu" that follows it, with
// tenant acme and its service payments created at governance and applied on every region node.
func startGoverned(t *testing.T) (*governancetest.Cluster, *regiontest.Region) {
	t.Helper()
	g := governancetest.Start(t, 1, governancetest.WithHeartbeat(100*time.Millisecond))
	r := regiontest.Start(t, 3, regiontest.WithCA(g.CA), regiontest.WithRegion("eu"), regiontest.WithGovernance(g.Addrs()...))
	g.CreateTenant("acme", r.Anchor, "eu")
	if _, err := g.Client(g.WaitLeader()).CreateService(g.Context(20*time.Second), &kv1.GovernanceCreateServiceRequest{
		RequestId: governancetest.RequestID(), Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 30*time.Second, "acme/payments on every region node", func() bool {
		for _, n := range r.Nodes {
			if _, err := n.State().Service("acme", "payments"); err != nil {
				return false
			}
		}
		return true
	})
	return g, r
}

// TestGovernedRegionRefusesGovernanceWrites: on a region that follows governance, an operator's
// region-level tenant create, key create, revoke, lock, unlock, rekey and set-owner are refused with
// FailedPrecondition naming the governance command that makes the change (issue 14: a tenant made
// that way was unknown to governance, out of reach of its kill switch, and a region-level unlock
// lifted governance's lock). Nothing reaches the Raft log (krypton_raft_proposals_total stays) and
// the state is unchanged, on the leader and on a follower. Rotation stays the region's (governance
// has none): the control.
func TestGovernedRegionRefusesGovernanceWrites(t *testing.T) {
	g, r := startGoverned(t)
	gov := g.Addrs()[0]
	ld := r.WaitLeader()
	follower := r.Followers()[0]
	hashes := func() (out []string) {
		for _, n := range r.Nodes {
			h := n.State().Hash()
			out = append(out, string(h[:]))
		}
		return out
	}
	total := func() (sum float64) {
		for _, n := range r.Nodes {
			sum += proposals(t, n)
		}
		return sum
	}
	waitSameState(t, r)
	cases := []struct {
		name, hint string
		call       func(kv1.AdminServiceClient) error
	}{
		{"tenant create", "krypton tenant create -governance " + gov + " -anchor " + r.Anchor + " -regions eu initech", func(a kv1.AdminServiceClient) error {
			_, err := a.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "ct", Tenant: "initech", AnchorUri: r.Anchor})
			return err
		}},
		{"key create", "krypton service create -governance " + gov + " acme ledger", func(a kv1.AdminServiceClient) error {
			_, err := a.CreateKey(ctxShort(t), &kv1.CreateKeyRequest{RequestId: "ck", Tenant: "acme", Service: "ledger"})
			return err
		}},
		{"key revoke (version)", "krypton revoke -governance " + gov + " -tenant acme -service payments -version 1 -reason 'it leaked; rotate'", func(a kv1.AdminServiceClient) error {
			_, err := a.RevokeKey(ctxShort(t), &kv1.RevokeKeyRequest{RequestId: "rv", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "it leaked; rotate"})
			return err
		}},
		{"key revoke (tenant)", "krypton revoke -governance " + gov + " -tenant acme -reason 'don'\\''t ask'", func(a kv1.AdminServiceClient) error {
			_, err := a.RevokeKey(ctxShort(t), &kv1.RevokeKeyRequest{RequestId: "rvt", Scope: &kv1.KeyScope{Tenant: "acme"}, Reason: "don't ask"})
			return err
		}},
		{"tenant lock", "krypton tenant lock -governance " + gov + " -reason 'incident 7' acme", func(a kv1.AdminServiceClient) error {
			_, err := a.LockTenant(ctxShort(t), &kv1.LockTenantRequest{RequestId: "lk", Tenant: "acme", Reason: "incident 7"})
			return err
		}},
		{"tenant unlock", "krypton tenant unlock -governance " + gov + " acme", func(a kv1.AdminServiceClient) error {
			_, err := a.UnlockTenant(ctxShort(t), &kv1.UnlockTenantRequest{RequestId: "ul", Tenant: "acme"})
			return err
		}},
		{"tenant rekey", "krypton tenant set-anchor -governance " + gov + " -anchor " + r.Anchor + " acme", func(a kv1.AdminServiceClient) error {
			_, err := a.RekeyTenant(ctxShort(t), &kv1.RekeyTenantRequest{RequestId: "rk", Tenant: "acme", AnchorUri: r.Anchor})
			return err
		}},
		{"tenant set-owner", "krypton tenant set-owner -governance " + gov + " -owner-pub <file> acme", func(a kv1.AdminServiceClient) error {
			_, err := a.SetOwnerKey(ctxShort(t), &kv1.SetOwnerKeyRequest{RequestId: "so", Tenant: "acme", OwnerPublicKey: "x"})
			return err
		}},
		{"a name that is not one is not echoed", "krypton tenant unlock -governance " + gov + " <tenant>", func(a kv1.AdminServiceClient) error {
			_, err := a.UnlockTenant(ctxShort(t), &kv1.UnlockTenantRequest{RequestId: "ul2", Tenant: "acme`rm -rf`"})
			return err
		}},
		{"an anchor with a secret is not echoed", "krypton tenant create -governance " + gov + " -anchor <anchor-uri> -regions eu initech", func(a kv1.AdminServiceClient) error {
			_, err := a.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "ct2", Tenant: "initech", AnchorUri: "pkcs11:token=t;object=k?pin-value=123456"})
			return err
		}},
	}
	before, hashBefore := total(), hashes()
	for _, c := range cases {
		for _, i := range []int{ld, follower} {
			err := c.call(r.AdminClient(i))
			st := status.Convert(err)
			if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "`"+c.hint+"`") || !strings.Contains(st.Message(), "follows governance ("+gov+")") {
				t.Errorf("%s on %s: %v; want FailedPrecondition naming `%s`", c.name, r.Cfgs[i].NodeID, err, c.hint)
			}
			if strings.Contains(st.Message(), "123456") {
				t.Errorf("%s: the refusal echoes a PIN: %s", c.name, st.Message())
			}
		}
	}
	if after := total(); after != before {
		t.Errorf("refused writes reached the Raft log: %v proposals, were %v", after, before)
	}
	waitSameState(t, r)
	if got := hashes(); strings.Join(got, ",") != strings.Join(hashBefore, ",") {
		t.Error("the state changed under refused writes")
	}
	if _, err := r.Nodes[ld].State().Tenant("initech"); !errors.Is(err, fsm.ErrTenantNotFound) {
		t.Errorf("initech: %v, want not found", err)
	}

	// The control: rotation is the region's own.
	k, err := r.AdminClient(follower).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "acme", Service: "payments"})
	if err != nil || k.GetCurrentVersion() != 2 {
		t.Fatalf("RotateKey on a governed region: %v, %v", k, err)
	}
}
