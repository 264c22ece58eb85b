package region_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// auditLines reads node i's audit log and checks its hash chain.
func auditLines(t *testing.T, r *regiontest.Region, i int) []audit.Event {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.Cfgs[i].DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(bytes.NewReader(b)); err != nil {
		t.Fatalf("audit chain of %s: %v", r.Cfgs[i].NodeID, err)
	}
	var out []audit.Event
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(l) == 0 {
			continue // an empty log
		}
		var e audit.Event
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func findAudit(events []audit.Event, match func(audit.Event) bool) (audit.Event, bool) {
	for _, e := range events {
		if match(e) {
			return e, true
		}
	}
	return audit.Event{}, false
}

// TestAuditOrigins: every L2 the leader hands a follower is audited (node, tenant, version), and
// every applied command's record names its origin: the API caller, the governance feed event, or
// the cluster peer that forwarded it (issue 14). The chains verify.
func TestAuditOrigins(t *testing.T) {
	g, r := startGoverned(t)
	ld := r.WaitLeader()
	follower := r.Followers()[0]
	leaderID, followerID := r.Cfgs[ld].NodeID, r.Cfgs[follower].NodeID

	// A hand-out: the follower's first wrap fetches acme's L2 from the leader.
	if _, err := r.ServingWrapClient(follower, "acme", "payments").Wrap(ctxT(t), &kv1.WrapRequest{
		Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: randKey(t)}); err != nil {
		t.Fatal(err)
	}
	handout, ok := findAudit(auditLines(t, r, ld), func(e audit.Event) bool {
		return e.Kind == "key.hand-out" && e.Detail["node"] == followerID
	})
	switch {
	case !ok:
		t.Errorf("no key.hand-out record of %s's L2 fetch on the leader %s", followerID, leaderID)
	case handout.Tenant != "acme" || handout.Version != 1 || handout.Detail["layer"] != "L2" ||
		handout.Actor != "spiffe://krypton/region/eu/node/"+followerID || handout.Detail["origin"] != "peer":
		t.Errorf("hand-out record %+v: want tenant acme, version 1, layer L2, the follower's identity, origin peer", handout)
	}

	// An API write on the follower: its record names the operator; the leader's names the peer
	// that forwarded it.
	if _, err := r.AdminClient(follower).RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot-audit", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	rot, ok := findAudit(auditLines(t, r, follower), func(e audit.Event) bool { return e.Kind == audit.KindKeyRotate && e.RequestID == "rot-audit" })
	if !ok || !strings.HasPrefix(rot.Actor, "spiffe://krypton/operator/") || rot.Detail["origin"] != "api" || rot.Version != 2 {
		t.Errorf("the follower's rotate record %+v (found %v): want the operator as actor, origin api, version 2", rot, ok)
	}
	fwd, ok := findAudit(auditLines(t, r, ld), func(e audit.Event) bool { return e.Kind == "cluster.apply" && e.RequestID == "rot-audit" })
	if !ok || fwd.Actor != "spiffe://krypton/region/eu/node/"+followerID || fwd.Detail["origin"] != "peer" || fwd.Detail["command"] == "" {
		t.Errorf("the leader's record of the forwarded write %+v (found %v): want the follower as actor, origin peer, the command", fwd, ok)
	}

	// A revocation from governance's feed: the leader's record names the event.
	resp, err := g.Client(g.WaitLeader()).Revoke(g.Context(30*time.Second), &kv1.RevokeRequest{RequestId: governancetest.RequestID(),
		Target: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "leaked", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	ev := resp.GetEvent()
	var rev audit.Event
	clustertest.Eventually(t, 20*time.Second, "the feed's revoke record on the leader", func() bool {
		rev, ok = findAudit(auditLines(t, r, r.WaitLeader()), func(e audit.Event) bool {
			return e.Kind == audit.KindKeyRevoke && e.Detail["event-id"] == ev.GetEventId()
		})
		return ok
	})
	if rev.Actor != "governance" || rev.Detail["origin"] != "governance-feed" || rev.Detail["event"] != "revoke-version" ||
		rev.Detail["cursor"] != strings.TrimSpace(jsonNumber(ev.GetCursor())) || rev.Detail["governance"] != g.Addrs()[0] ||
		rev.Tenant != "acme" || rev.Service != "payments" || rev.Version != 1 {
		t.Errorf("the feed's revoke record %+v: want actor governance, origin governance-feed, event revoke-version at cursor %d from %s", rev, ev.GetCursor(), g.Addrs()[0])
	}
	for i := range r.Nodes {
		auditLines(t, r, i) // every chain verifies
	}
}

func jsonNumber(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
