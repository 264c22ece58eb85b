package governance

import (
	"testing"

	"github.com/kryptonkms/krypton/governance/govfsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestEveryStateMachineErrorHasACode fails when package govfsm has a sentinel fsmCodes does not
// map: it would reach the wire as Internal.
func TestEveryStateMachineErrorHasACode(t *testing.T) {
	mapped := map[error]bool{}
	for _, row := range fsmCodes {
		mapped[row.Err] = true
	}
	for _, e := range govfsm.Errors() {
		if !mapped[e] {
			t.Errorf("govfsm error %q has no code in fsmCodes", e)
		}
	}
}

// TestKindsAreTheWireKinds holds package govfsm's event kinds, which it spells as numbers (it
// links no API code), to the wire's kv1.EventKind.
func TestKindsAreTheWireKinds(t *testing.T) {
	want := map[govfsm.Kind]kv1.EventKind{
		govfsm.KindRevokeTenant:  kv1.EventKind_EVENT_KIND_REVOKE_TENANT,
		govfsm.KindRevokeService: kv1.EventKind_EVENT_KIND_REVOKE_SERVICE,
		govfsm.KindRevokeVersion: kv1.EventKind_EVENT_KIND_REVOKE_VERSION,
		govfsm.KindLockTenant:    kv1.EventKind_EVENT_KIND_LOCK_TENANT,
		govfsm.KindUnlockTenant:  kv1.EventKind_EVENT_KIND_UNLOCK_TENANT,
		govfsm.KindDeleteAnchor:  kv1.EventKind_EVENT_KIND_DELETE_ANCHOR,
		govfsm.KindSetAnchor:     kv1.EventKind_EVENT_KIND_SET_ANCHOR,
		govfsm.KindSetPolicy:     kv1.EventKind_EVENT_KIND_SET_POLICY,
		govfsm.KindCreateTenant:  kv1.EventKind_EVENT_KIND_CREATE_TENANT,
		govfsm.KindCreateService: kv1.EventKind_EVENT_KIND_CREATE_SERVICE,
		govfsm.KindResyncTenant:  kv1.EventKind_EVENT_KIND_RESYNC_TENANT,
		govfsm.KindSetQuota:      kv1.EventKind_EVENT_KIND_SET_QUOTA,
		govfsm.KindTenantKeys:    kv1.EventKind_EVENT_KIND_TENANT_KEYS,
		govfsm.KindSetRegions:    kv1.EventKind_EVENT_KIND_SET_REGIONS,
	}
	if len(want) != len(govfsm.AllKinds) || len(kv1.EventKind_name) != len(want)+1 {
		t.Fatalf("%d kinds in govfsm, %d tested, %d on the wire (with UNSPECIFIED)", len(govfsm.AllKinds), len(want), len(kv1.EventKind_name))
	}
	for k, w := range want {
		if int32(k) != int32(w) {
			t.Errorf("%v is %d, the wire's %v is %d", k, k, w, w)
		}
	}
}
