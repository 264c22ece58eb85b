package region_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// keyringWarmed is krypton_keyring_warmed_total of node n.
func keyringWarmed(t *testing.T, n *region.Node) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "krypton_keyring_warmed_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no krypton_keyring_warmed_total")
	return 0
}

// TestKeyWarmupAfterRestartAndLeadership: a node that served some keys, restarted and then made
// leader, opens them again before any call reaches it (krypton_keyring_warmed_total), so its first
// calls on them open nothing (krypton_keyring_opens_total{kind="service"} unchanged). The list it
// kept holds key IDs only.
func TestKeyWarmupAfterRestartAndLeadership(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3)
	admin := r.AdminClient(r.Leader())
	const services = 5
	var names []string
	for i := range services {
		names = append(names, fmt.Sprintf("svc%d", i))
	}
	createTenant(t, admin, r.Anchor, "acme", names...)
	waitSameState(t, r)
	node := r.Followers()[0]
	for _, s := range names {
		if err := retryUnavailable(t, "wrap "+s, func() error {
			_, err := r.WrapClient(node, "acme", s).Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: s}, Plaintext: randKey(t)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	r.Kill(node)
	list, err := os.ReadFile(filepath.Join(r.Cfgs[node].DataDir, "recent-keys"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range names {
		if !strings.Contains(string(list), "acme/"+s+"@v1\n") {
			t.Fatalf("recent-keys lacks acme/%s@v1:\n%s", s, list)
		}
	}

	r.Start(node)
	// Leadership to the restarted node, before any call reaches it.
	clustertest.Eventually(t, 30*time.Second, "leadership moved to the restarted node", func() bool {
		if r.Leader() == node {
			return true
		}
		ld := r.Leader()
		if ld < 0 {
			return false
		}
		_, _ = r.AdminClient(ld).TransferLeadership(ctxT(t), &kv1.TransferLeadershipRequest{RequestId: fmt.Sprintf("tl-%d", time.Now().UnixNano()), TargetId: r.Cfgs[node].NodeID})
		return r.Leader() == node
	})
	clustertest.Eventually(t, 30*time.Second, "the new leader's keys warmed", func() bool {
		return keyringWarmed(t, r.Nodes[node]) >= services
	})
	before := keyringOpens(t, r.Nodes[node], "service")
	for _, s := range names {
		if err := retryUnavailable(t, "wrap "+s, func() error {
			_, err := r.WrapClient(node, "acme", s).Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: s}, Plaintext: randKey(t)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := keyringOpens(t, r.Nodes[node], "service") - before; got != 0 {
		t.Fatalf("the warmed leader opened %v service keys on its first calls, want 0", got)
	}
}

// TestKeyWarmupOff: with Config.NoKeyWarmup a node keeps no list and restarts cold.
func TestKeyWarmupOff(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) { c.NoKeyWarmup = true }))
	createTenant(t, r.AdminClient(r.Leader()), r.Anchor, "acme", "pay")
	waitSameState(t, r)
	node := r.Followers()[0]
	if _, err := r.WrapClient(node, "acme", "pay").Wrap(ctxT(t), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "pay"}, Plaintext: randKey(t)}); err != nil {
		t.Fatal(err)
	}
	r.Kill(node)
	if _, err := os.Stat(filepath.Join(r.Cfgs[node].DataDir, "recent-keys")); !os.IsNotExist(err) {
		t.Fatalf("recent-keys with the warm-up off: %v", err)
	}
	r.Start(node)
	clustertest.Eventually(t, 30*time.Second, "the restarted node serving", func() bool { return r.Nodes[node].Serving() == nil })
	if got := keyringWarmed(t, r.Nodes[node]); got != 0 {
		t.Fatalf("warmed %v keys with the warm-up off", got)
	}
}
