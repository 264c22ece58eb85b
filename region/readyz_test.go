package region_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// adminGet fetches path from an admin HTTP port (plain HTTP, no credentials, as anyone on the
// management network could) and returns the status and body.
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

// TestReadyz: a region node's /readyz answers 200 only while it holds a serving lease (which it
// gets only once caught up with the leader), and 503 with a short reason naming no node, address
// or key while it is cut off from the others; /livez stays 200 while the node runs and fails once
// it is shut down.
func TestReadyz(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) { c.HTTPAddr = "127.0.0.1:0" }))
	for i, n := range r.Nodes {
		clustertest.Eventually(t, 20*time.Second, "node serving says ready", func() bool {
			code, _ := adminGet(t, n.HTTPAddr(), "/readyz")
			return code == http.StatusOK
		})
		if code, body := adminGet(t, n.HTTPAddr(), "/livez"); code != http.StatusOK || body != "ok\n" {
			t.Fatalf("node %d /livez: %d %q", i, code, body)
		}
	}
	f := r.Followers()[0]
	addr := r.Nodes[f].HTTPAddr()
	r.Partition(f)
	var body string
	clustertest.Eventually(t, 30*time.Second, "a cut-off node says not ready", func() bool {
		var code int
		code, body = adminGet(t, addr, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "no serving lease") {
		t.Errorf("/readyz of a node without a lease: %q, want the reason", body)
	}
	for _, c := range r.Cfgs {
		if strings.Contains(body, c.NodeID) || strings.Contains(body, c.RaftAddr) || strings.Contains(body, "127.0.0.1") {
			t.Errorf("/readyz leaks a node id or address: %q", body)
		}
	}
	if code, _ := adminGet(t, addr, "/livez"); code != http.StatusOK {
		t.Errorf("/livez of a running but cut-off node: %d, want 200", code)
	}
	r.Heal()
	clustertest.Eventually(t, 30*time.Second, "a healed node says ready again", func() bool {
		code, _ := adminGet(t, addr, "/readyz")
		return code == http.StatusOK
	})
}
