package governance_test

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/audit"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestPinnedVotersAreReset: one voter of a region cannot pin the region's voter list forever. A
// configuration index beyond the report's commit index (2^64-1 with itself as the only voter) is
// refused; a liar who inflates both within the bound pins the list (the real voters are refused,
// the feed stops for them) until an operator's ResetRegionVoters, audited with its reason, lets the
// real voters teach the configuration again.
func TestPinnedVotersAreReset(t *testing.T) {
	g := governancetest.Start(t, 3)
	ctx := g.Context(60 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	leader := g.WaitLeader()
	follower := (leader + 1) % 3
	eu1, eu3 := g.NodeClient(leader, "eu", "eu-1"), g.NodeClient(leader, "eu", "eu-3")
	report := func(c kv1.GovernanceServiceClient, index, commit uint64, voters ...string) error {
		_, err := c.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", ConfigurationIndex: index, CommitIndex: commit, Voters: voters})
		return err
	}
	follow := func(c kv1.GovernanceServiceClient) error {
		s, err := c.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "eu"})
		if err == nil {
			_, err = s.Recv()
		}
		return err
	}
	if err := report(eu1, 5, 5, "eu-1", "eu-2", "eu-3"); err != nil {
		t.Fatal(err)
	}
	// The bound: an index beyond the report's commit index is refused before the log.
	wantCode(t, report(eu3, math.MaxUint64, 10, "eu-3"), codes.InvalidArgument)
	wantCode(t, report(eu3, math.MaxUint64, 0, "eu-3"), codes.InvalidArgument)
	if err := report(eu1, 6, 6, "eu-1", "eu-2", "eu-3"); err != nil {
		t.Fatalf("a real voter refused after a report beyond the bound: %v", err)
	}

	// A liar inflating both pins the list: the real voters are refused, their feed stops.
	if err := report(eu3, math.MaxUint64, math.MaxUint64, "eu-3"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, report(eu1, 7, 7, "eu-1", "eu-2"), codes.PermissionDenied)
	wantCode(t, follow(eu1), codes.PermissionDenied)

	// Only an operator resets, with a reason.
	req := &kv1.ResetRegionVotersRequest{RequestId: rid(), Region: "eu", Reason: "eu-3 pinned the voters; removed from eu"}
	_, err := eu3.ResetRegionVoters(ctx, req)
	wantCode(t, err, codes.PermissionDenied)
	_, err = g.Client(follower).ResetRegionVoters(ctx, &kv1.ResetRegionVotersRequest{RequestId: rid(), Region: "eu"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = g.Client(follower).ResetRegionVoters(ctx, &kv1.ResetRegionVotersRequest{RequestId: rid(), Region: "no such/region", Reason: "x"})
	wantCode(t, err, codes.InvalidArgument)
	got, err := g.Client(follower).ResetRegionVoters(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetConfigurationIndex() != 0 || len(got.GetVoters()) != 0 || got.GetAppliedCursor() != 0 {
		t.Fatalf("after the reset governance still knows %v", got)
	}

	// The real voters report first (the operator ran the reset once eu-3 was out): the feed works
	// again and the liar is refused.
	if err := report(eu1, 7, 7, "eu-1", "eu-2"); err != nil {
		t.Fatalf("a real voter after the reset: %v", err)
	}
	if err := follow(eu1); err != nil {
		t.Fatalf("a real voter follows the feed after the reset: %v", err)
	}
	wantCode(t, report(eu3, math.MaxUint64, math.MaxUint64, "eu-3"), codes.PermissionDenied)
	wantCode(t, follow(eu3), codes.PermissionDenied)

	// The reset is in the answering node's audit log with the operator, the reason and what it
	// forgot.
	dir := g.Cfgs[follower].DataDir
	g.Kill(follower)
	f, err := os.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var resets []audit.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Kind == governance.AuditRegionVotersReset {
			resets = append(resets, e)
		}
	}
	if len(resets) != 1 {
		t.Fatalf("%d reset records in the audit log, want 1: %+v", len(resets), resets)
	}
	e := resets[0]
	if e.Actor != "spiffe://krypton/operator/test-operator" || e.Reason != req.Reason || e.RequestID != req.RequestId ||
		e.Detail["region"] != "eu" || e.Detail["forgotten-voters"] != "eu-3" ||
		!slices.Contains([]string{"18446744073709551615"}, e.Detail["forgotten-configuration-index"]) {
		t.Fatalf("reset record: %+v", e)
	}
}
