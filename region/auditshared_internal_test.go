package region

import (
	"testing"

	"github.com/kryptonkms/krypton/fsm"
)

// TestSharedTenantAuditRecords: a region's audit records of a shared tenant's governance events
// name the tenant and what changed: the region set it recorded (and the home that makes a tenant
// shared), the tenant wiped when the region left its residency, the key versions it imported.
func TestSharedTenantAuditRecords(t *testing.T) {
	feed := func(c fsm.Command) fsm.Applied {
		return fsm.Applied{Index: 7, Entry: fsm.Entry{Origin: fsm.Origin{Kind: fsm.OriginFeed, Actor: "governance"},
			Command: fsm.ApplyGovernanceEvent{Cursor: 3, EventID: "e3", Event: c}}}
	}
	for _, c := range []struct {
		cmd    fsm.Command
		kind   string
		detail map[string]string
	}{
		{fsm.SetTenantRegions{Tenant: "acme", Regions: []string{"eu", "us"}, Home: "eu"}, auditGovSetRegions,
			map[string]string{"regions": "[eu us]", "home": "eu"}},
		{fsm.RemoveTenant{Tenant: "acme", Reason: "region removed"}, auditGovRemoveTenant, map[string]string{"wiped": "true"}},
		{fsm.ResyncTenant{Tenant: "acme", Import: &fsm.KeyImport{L2: []fsm.ImportedL2{{Version: 1}}, L3: []fsm.ImportedL3{{Service: "pay", Version: 1}, {Service: "pay", Version: 2}}}},
			auditGovResync, map[string]string{"imported-l2": "1", "imported-l3": "2"}},
	} {
		e, ok := auditEventOf(feed(c.cmd))
		if !ok || e.Kind != c.kind || e.Tenant != "acme" {
			t.Errorf("%s: record %q for tenant %q (%v), want %q for acme", c.cmd.Type(), e.Kind, e.Tenant, ok, c.kind)
			continue
		}
		for k, v := range c.detail {
			if e.Detail[k] != v {
				t.Errorf("%s: detail %s = %q, want %q (%v)", c.cmd.Type(), k, e.Detail[k], v, e.Detail)
			}
		}
	}
}
