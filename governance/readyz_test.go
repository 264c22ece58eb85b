package governance_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
)

func adminGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadyz: a governance node's /readyz answers 200 while it knows a leader and has applied the
// log, and 503 with a short reason (no node id, no address) once it is cut off and has no leader;
// /livez stays 200 while it runs.
func TestReadyz(t *testing.T) {
	g := governancetest.Start(t, 3, governancetest.WithHeartbeat(100*time.Millisecond),
		governancetest.WithConfig(func(c *governance.Config) { c.HTTPAddr = "127.0.0.1:0" }))
	for _, n := range g.Nodes {
		clustertest.Eventually(t, 20*time.Second, "a caught-up node says ready", func() bool {
			code, _ := adminGet(t, n.HTTPAddr(), "/readyz")
			return code == http.StatusOK
		})
	}
	f := (g.WaitLeader() + 1) % 3
	addr := g.Nodes[f].HTTPAddr()
	g.Partition(f)
	defer g.Heal()
	var body string
	clustertest.Eventually(t, 30*time.Second, "a cut-off node says not ready", func() bool {
		var code int
		code, body = adminGet(t, addr, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if body != "no leader\n" {
		t.Errorf("/readyz of a node without a leader: %q", body)
	}
	for _, c := range g.Cfgs {
		if strings.Contains(body, c.NodeID) || strings.Contains(body, "127.0.0.1") {
			t.Errorf("/readyz leaks a node id or address: %q", body)
		}
	}
	if code, _ := adminGet(t, addr, "/livez"); code != http.StatusOK {
		t.Errorf("/livez of a running but cut-off node: %d", code)
	}
	g.Heal()
	clustertest.Eventually(t, 30*time.Second, "the healed node says ready again", func() bool {
		code, _ := adminGet(t, addr, "/readyz")
		return code == http.StatusOK
	})
}
