package governance_test

import (
	"context"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestForwardedWriteRidesOutLeaderChange (issue 16): a write sent through a follower right after
// the leader is cut off used to fail as UNAVAILABLE (the forward to the old leader failed, the
// outcome unknown). The follower now sends the same command to the new leader within the call's
// deadline: the write succeeds, once, and a retry under its request id answers the same event.
func TestForwardedWriteRidesOutLeaderChange(t *testing.T) {
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(100*time.Millisecond))
	old := g.WaitLeader()
	f := (old + 1) % len(g.Nodes)
	c := g.Client(f)
	// A write through the follower first: its forward connection to the leader is pooled.
	if _, err := c.CreateTenant(g.Context(20*time.Second), &kv1.GovernanceCreateTenantRequest{
		RequestId: governancetest.RequestID(), Tenant: "acme", AnchorUri: devAnchor, Regions: []string{"eu"}, OwnerPublicKey: g.Owner.Public,
	}); err != nil {
		t.Fatal(err)
	}
	g.Partition(old)
	t.Cleanup(g.Heal)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	req := &kv1.GovernanceLockTenantRequest{RequestId: "lock-ride", Tenant: "acme", Reason: "leader cut off"}
	first, err := c.LockTenant(ctx, req)
	if err != nil {
		t.Fatalf("LockTenant through a follower right after the leader was cut off: %v (want success once a new leader exists)", err)
	}
	if first.GetState() != kv1.TenantState_TENANT_STATE_LOCKED {
		t.Fatalf("tenant %v after LockTenant, want LOCKED", first.GetState())
	}
	again, err := c.LockTenant(g.Context(20*time.Second), req)
	if err != nil {
		t.Fatalf("retry of LockTenant: %v", err)
	}
	if again.GetCursor() != first.GetCursor() {
		t.Fatalf("retry answered cursor %d, the first call %d: applied twice?", again.GetCursor(), first.GetCursor())
	}
}
