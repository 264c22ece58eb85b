package region_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// TestConfigSettingsLeaderDuty: a region whose nodes are started with Config.Settings converges on
// them without any SetSettings, and its leader puts them back when they are changed through the
// log; the duty stops with the node (the test's Close waits for it).
func TestConfigSettingsLeaderDuty(t *testing.T) {
	t.Parallel()
	want := fsm.DefaultSettings()
	want.LeaseDuration = regiontest.LeaseDuration
	want.AnchorCheckPeriod = 200 * time.Millisecond
	want.AnchorGracePeriod = 2 * time.Second
	want.DedupeWindow = 4321
	r := regiontest.StartNoWait(t, 3, regiontest.WithConfig(func(c *region.Config) { c.Settings = &want }))
	converged := func(what string) {
		t.Helper()
		clustertest.Eventually(t, 30*time.Second, what, func() bool {
			for _, n := range r.Nodes {
				if n.State().Settings() != want {
					return false
				}
			}
			return true
		})
	}
	converged("every node on the configured settings")

	other := want
	other.DedupeWindow = 99
	ld := r.WaitLeader()
	if err := r.Nodes[ld].SetSettings(r.Context(10*time.Second), other); err != nil {
		t.Fatal(err)
	}
	converged("the configured settings back after a change")

	bad := fsm.Settings{}
	cfg := r.Cfgs[0]
	cfg.Settings = &bad
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Settings") {
		t.Fatalf("invalid Settings: got %v, want an error naming Settings", err)
	}
}
