package governance

import (
	"testing"

	"github.com/kryptonkms/krypton/governance/govfsm"
)

// TestEventForRegionSendsOnlyItsOwnL2: a TENANT_KEYS event reaches each region with only the L2
// blobs sealed for it (the L3 blobs are the same everywhere), and operators see no blob at all.
func TestEventForRegionSendsOnlyItsOwnL2(t *testing.T) {
	e := &govfsm.Event{Cursor: 3, Kind: govfsm.KindTenantKeys, Tenant: "acme", Home: "eu", Regions: []string{"ap", "us"},
		Keys: &govfsm.TenantKeys{
			L2: []govfsm.SealedL2{{Region: "ap", Version: 1, Sealed: []byte("ap1")}, {Region: "us", Version: 1, Sealed: []byte("us1")}},
			L3: []govfsm.SealedL3{{Service: "pay", Version: 1, SealedBy: 1, Sealed: []byte("pay1")}},
		}}
	us := eventForRegion(e, "us")
	if l2 := us.GetKeys().GetL2(); len(l2) != 1 || l2[0].GetRegion() != "us" || len(us.GetKeys().GetL3()) != 1 || us.GetHomeRegion() != "eu" {
		t.Fatalf("us gets %v", us.GetKeys())
	}
	if len(e.Keys.L2) != 2 {
		t.Fatal("the stored event was changed")
	}
	if op := operatorEvent(e); op.GetKeys() != nil {
		t.Fatal("an operator's view of the event carries sealed blobs")
	}
}

// TestSharedTenantAuditRecords: governance's audit records of a shared tenant's changes say what
// changed: a set-regions names the home it makes a tenant shared with; a region's report of its
// own versions (a floor) says so and which region, not "governance held them all".
func TestSharedTenantAuditRecords(t *testing.T) {
	e := auditEventOf(9, &govfsm.Command{Op: govfsm.OpSetRegions, Tenant: "acme", Regions: []string{"eu", "us"}, Home: "eu", Actor: "spiffe://krypton/operator/op"},
		&govfsm.Result{Event: &govfsm.Event{Cursor: 4, Regions: []string{"eu", "us"}, Home: "eu"}, Previous: "sha256:owner"})
	if e.Kind != AuditTenantSetRegions || e.Tenant != "acme" || e.Detail["regions"] != "[eu us]" || e.Detail["home"] != "eu" || e.Detail["consented-by"] != "sha256:owner" {
		t.Errorf("set-regions making acme shared: %+v", e)
	}
	e = auditEventOf(10, &govfsm.Command{Op: govfsm.OpPublishKeys, Tenant: "acme", Region: "us", Floor: &govfsm.Floor{L2: 3, Services: map[string]uint32{"pay": 2}}},
		&govfsm.Result{})
	if e.Kind != AuditTenantKeys || e.Detail["region"] != "us" || e.Detail["floor-l2"] != "3" || e.Detail["floor-services"] != "1" || e.Detail["event"] != "" {
		t.Errorf("a floor report: %+v", e)
	}
}
