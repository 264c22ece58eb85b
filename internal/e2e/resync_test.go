package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// testResync: the repair path for a tenant a region refused to create. The tenant's root key does
// not answer when governance creates it, so both regions record CREATE_TENANT refused after
// GovernanceAnchorWait (and its CREATE_SERVICE and SET_POLICY, for a tenant they do not have).
// Once the key answers, ResyncTenant with wait creates the tenant, its service and its policy in
// both regions, and wrap and unwrap work on every node when it returns. A second resync changes
// nothing (the same sealed key versions). A service missing in a tenant the regions have is
// created by a resync of one region. A tenant revoked in one region, or at governance, is not
// brought back.
func testResync(t *testing.T, p *planes) {
	keyPath := filepath.Join(t.TempDir(), "resync.key")
	uri := "file://" + keyPath
	pv, err := anchor.Open(context.Background(), uri, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	pv.Close()
	if err := file.SetUnavailable(keyPath, true); err != nil {
		t.Fatal(err)
	}
	var created, svc, pol uint64
	id := governancetest.RequestID()
	p.gov("create a tenant on a root key that does not answer", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		tn, err := c.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: id, Tenant: "resync", AnchorUri: uri, Regions: []string{"eu", "us"}})
		created = tn.GetCursor()
		return err
	})
	id = governancetest.RequestID()
	p.gov("create its service", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		s, err := c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "resync", Service: "pay"})
		svc = s.GetCursor()
		return err
	})
	// Its quotas, which the regions refuse too (no tenant) and the resync must bring.
	tq, sq := &kv1.Quota{Rate: 1000, Burst: 2000}, &kv1.Quota{Concurrency: 7}
	for _, q := range []struct {
		service string
		quota   *kv1.Quota
	}{{"", tq}, {"pay", sq}} {
		id := governancetest.RequestID()
		p.gov("set a quota", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			_, err := c.SetQuota(ctx, &kv1.GovernanceSetQuotaRequest{RequestId: id, Tenant: "resync", Service: q.service, Quota: q.quota})
			return err
		})
	}
	id = governancetest.RequestID()
	var rev uint64
	p.gov("set its policy", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		r, err := c.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: id, Policy: &kv1.Policy{Tenant: "resync", Rules: []*kv1.PolicyRule{{
			Caller: "spiffe://krypton/tenant/resync/**", Service: "*", Operations: []kv1.Operation{kv1.Operation_OPERATION_WRAP, kv1.Operation_OPERATION_UNWRAP},
		}}}})
		rev = r.GetRevision()
		return err
	})
	p.gov("read the tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		tn, err := c.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "resync"})
		pol = tn.GetCursor() // the SET_POLICY's
		return err
	})
	refusal := func(log []fsm.Revocation, cursor uint64) string {
		j := slices.IndexFunc(log, func(rv fsm.Revocation) bool { return rv.Cursor == cursor })
		if j < 0 {
			return "(not applied)"
		}
		return log[j].Error
	}
	p.waitEveryNode("both regions refusing the tenant", func(n *region.Node) bool { return n.State().GovernanceCursor() >= pol })
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		log := r.Nodes[i].State().RevocationLog(0)
		if a, b, c := refusal(log, created), refusal(log, svc), refusal(log, pol); a != "anchor-unavailable" || b != "tenant-not-found" || c != "tenant-not-found" {
			t.Fatalf("%s/%s: refusals %q, %q, %q; want anchor-unavailable, tenant-not-found, tenant-not-found", name, r.Cfgs[i].NodeID, a, b, c)
		}
	})

	// The key answers again; the operator resyncs the tenant and waits for both regions.
	if err := file.SetUnavailable(keyPath, false); err != nil {
		t.Fatal(err)
	}
	resync := func(what string) *kv1.ResyncTenantResponse {
		id := governancetest.RequestID()
		var resp *kv1.ResyncTenantResponse
		p.gov(what, func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			var err error
			resp, err = c.ResyncTenant(ctx, &kv1.ResyncTenantRequest{RequestId: id, Tenant: "resync", Wait: true})
			return err
		})
		if got := resp.GetRegions(); len(got) != 2 || got[0].GetRegion() != "eu" || got[1].GetRegion() != "us" {
			t.Fatalf("%s waited for %v, want eu and us", what, got)
		}
		return resp
	}
	first := resync("resync")
	if ev := first.GetEvent(); !slices.Equal(ev.GetServices(), []string{"pay"}) || ev.GetPolicy().GetRevision() != rev {
		t.Fatalf("resync event: %v", ev)
	}
	// Applied and fenced everywhere when it returns: no waiting here.
	keys := map[string][]byte{} // by region: the sealed L2 and L3, all nodes alike
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		st := r.Nodes[i].State()
		where := name + "/" + r.Cfgs[i].NodeID
		if _, err := st.Usable("resync", "pay", 0, fsm.OpWrap); err != nil {
			t.Fatalf("%s: not usable after ResyncTenant returned: %v", where, err)
		}
		if got, _ := st.Policy("resync"); got.Revision != rev {
			t.Fatalf("%s: policy revision %d, want %d", where, got.Revision, rev)
		}
		if tn, _ := st.Tenant("resync"); tn.Quota != (fsm.Quota{Rate: 1000, Burst: 2000}) {
			t.Fatalf("%s: tenant quota %v after the resync, want governance's", where, tn.Quota)
		}
		if sv, _ := st.Service("resync", "pay"); sv.Quota != (fsm.Quota{Concurrency: 7}) {
			t.Fatalf("%s: service quota %v after the resync, want governance's", where, sv.Quota)
		}
		if e := refusal(st.RevocationLog(0), first.GetEvent().GetCursor()); e != "" {
			t.Fatalf("%s: resync refused: %s", where, e)
		}
		k := sealedKeys(t, st)
		if keys[name] == nil {
			keys[name] = k
		} else if !bytes.Equal(keys[name], k) {
			t.Fatalf("%s holds other key versions than its region's other nodes", where)
		}
	})
	blobs := p.wrapEverywhere("resync", "pay")
	for _, w := range blobs {
		r := p.regions()[w.region]
		for i := range r.Nodes {
			c := p.wrapClient(r, i, "resync", "pay")
			var resp *kv1.UnwrapResponse
			expectCode(t, codes.OK, fmt.Sprintf("unwrap on %s/%s", w.region, r.Cfgs[i].NodeID), func() error {
				var err error
				resp, err = c.Unwrap(context.Background(), &kv1.UnwrapRequest{Blob: w.blob})
				return err
			})
			if !bytes.Equal(resp.GetPlaintext(), w.plain) {
				t.Fatalf("%s/%s unwrapped other bytes", w.region, r.Cfgs[i].NodeID)
			}
		}
	}

	// A second resync finds everything present: applied, and nothing changes.
	second := resync("resync again")
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		st := r.Nodes[i].State()
		if e := refusal(st.RevocationLog(0), second.GetEvent().GetCursor()); e != "" {
			t.Fatalf("%s/%s: second resync refused: %s", name, r.Cfgs[i].NodeID, e)
		}
		if !bytes.Equal(sealedKeys(t, st), keys[name]) {
			t.Fatalf("%s/%s: the second resync changed the key versions", name, r.Cfgs[i].NodeID)
		}
	})
	for name, r := range p.regions() {
		waitFor(t, 10*time.Second, "region "+name+" auditing the resyncs", func() bool {
			n := 0
			for i := range r.Nodes {
				n += len(auditLines(t, r, i, `"kind":"tenant.resync"`, `"tenant":"resync"`))
			}
			return n >= 2
		})
	}

	// A tenant the regions have, missing a service: created while governance had the tenant
	// locked, so both regions refused it (ErrLocked). After the unlock, a resync of eu alone
	// creates it there, under the tenant's current L2, and leaves pay's key versions alone.
	var late uint64
	for _, step := range []string{"lock", "service", "unlock"} {
		id := governancetest.RequestID()
		p.gov(step, func(ctx context.Context, c kv1.GovernanceServiceClient) error {
			var err error
			switch step {
			case "lock":
				_, err = c.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: id, Tenant: "resync", Reason: "audit"})
			case "service":
				var s *kv1.GovernanceServiceInfo
				s, err = c.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: id, Tenant: "resync", Service: "late"})
				late = s.GetCursor()
			case "unlock":
				_, err = c.UnlockTenant(ctx, &kv1.GovernanceUnlockTenantRequest{RequestId: id, Tenant: "resync"})
			}
			return err
		})
	}
	p.waitEveryNode("the locked tenant's service refused and the tenant unlocked", func(n *region.Node) bool {
		tn, err := n.State().Tenant("resync")
		return err == nil && tn.Status == fsm.StatusActive && refusal(n.State().RevocationLog(0), late) == "locked"
	})
	id = governancetest.RequestID()
	var euOnly *kv1.ResyncTenantResponse
	p.gov("resync eu", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		var err error
		euOnly, err = c.ResyncTenant(ctx, &kv1.ResyncTenantRequest{RequestId: id, Tenant: "resync", Regions: []string{"eu"}, Wait: true})
		return err
	})
	if got := euOnly.GetRegions(); len(got) != 1 || got[0].GetRegion() != "eu" || !slices.Equal(euOnly.GetEvent().GetServices(), []string{"late", "pay"}) {
		t.Fatalf("eu resync: %v", euOnly)
	}
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		st := r.Nodes[i].State()
		_, err := st.Usable("resync", "late", 0, fsm.OpWrap)
		if name == "eu" && err != nil || name == "us" && !errors.Is(err, fsm.ErrServiceNotFound) {
			t.Fatalf("%s/%s: service late after a resync of eu: %v", name, r.Cfgs[i].NodeID, err)
		}
		if !bytes.Equal(sealedKeys(t, st), keys[name]) {
			t.Fatalf("%s/%s: the resync changed pay's key versions", name, r.Cfgs[i].NodeID)
		}
	})
	for i := range p.eu.Nodes {
		c := p.wrapClient(p.eu, i, "resync", "late")
		expectCode(t, codes.OK, "wrap with late on eu/"+p.eu.Cfgs[i].NodeID, func() error {
			_, err := c.Wrap(context.Background(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "resync", Service: "late"}, Plaintext: bytes.Repeat([]byte{9}, 32)})
			return err
		})
	}

	// Revoked in one region only: a resync of that region is recorded there as refused, and the
	// tenant stays revoked. (A governed region's admin API refuses a region-level revoke; the
	// revocation is proposed in-process, as a region restored from a backup taken before it
	// followed governance may hold one.)
	id = governancetest.RequestID()
	waitFor(t, time.Minute, "revoking the tenant in us", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := p.us.Nodes[p.us.WaitLeader()].Revoke(ctx, id, region.Scope{Tenant: "resync"}, "local")
		switch status.Code(err) {
		case codes.OK:
			return true
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
			return false
		}
		t.Fatalf("revoke in us: %v", err)
		return false
	})
	id = governancetest.RequestID()
	var usOnly *kv1.ResyncTenantResponse
	p.gov("resync us", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		var err error
		usOnly, err = c.ResyncTenant(ctx, &kv1.ResyncTenantRequest{RequestId: id, Tenant: "resync", Regions: []string{"us"}, Wait: true})
		return err
	})
	for i, n := range p.us.Nodes {
		st := n.State()
		if e := refusal(st.RevocationLog(0), usOnly.GetEvent().GetCursor()); e != "revoked" {
			t.Fatalf("us/%s: resync of a tenant revoked there: %q, want refused as revoked", p.us.Cfgs[i].NodeID, e)
		}
		if _, err := st.Usable("resync", "pay", 0, fsm.OpUnwrap); !errors.Is(err, fsm.ErrRevoked) {
			t.Fatalf("us/%s: a resync revived a tenant revoked there: %v", p.us.Cfgs[i].NodeID, err)
		}
	}

	// Revoked at governance: governance refuses to resync it, and it stays revoked in every region.
	id = governancetest.RequestID()
	p.gov("revoke the tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, err := c.Revoke(ctx, &kv1.RevokeRequest{RequestId: id, Target: &kv1.KeyScope{Tenant: "resync"}, Reason: "offboarded", Wait: true})
		return err
	})
	var refused error
	p.gov("resync a revoked tenant", func(ctx context.Context, c kv1.GovernanceServiceClient) error {
		_, refused = c.ResyncTenant(ctx, &kv1.ResyncTenantRequest{RequestId: governancetest.RequestID(), Tenant: "resync", Wait: true})
		if status.Code(refused) == codes.FailedPrecondition {
			return nil
		}
		return refused
	})
	if status.Code(refused) != codes.FailedPrecondition {
		t.Fatalf("resync of a revoked tenant: %v, want FailedPrecondition", refused)
	}
	p.eachNode(func(name string, r *regiontest.Region, i int) {
		if _, err := r.Nodes[i].State().Usable("resync", "pay", 0, fsm.OpUnwrap); !errors.Is(err, fsm.ErrRevoked) {
			t.Fatalf("%s/%s: revoked tenant usable: %v", name, r.Cfgs[i].NodeID, err)
		}
	})
}

// sealedKeys returns the tenant "resync"'s sealed L2 and L3 versions as one byte string, to
// compare across nodes and over time.
func sealedKeys(t *testing.T, st *fsm.State) []byte {
	t.Helper()
	tn, err := st.Tenant("resync")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, l2 := range tn.L2 {
		fmt.Fprintf(&b, "L2 %d %x\n", l2.Version, l2.Sealed)
	}
	kvs, err := st.ListKeyVersions("resync", "pay")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		fmt.Fprintf(&b, "L3 %d %d %x\n", kv.Version, kv.SealedBy, kv.Sealed)
	}
	return b.Bytes()
}
