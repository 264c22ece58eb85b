package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/region/regiontest"
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

// TestReadyz: a gateway's /readyz answers 200 while it reaches a serving region node and 503,
// with a reason that names no node or address, once every node is down; /livez stays 200 while
// the gateway runs.
func TestReadyz(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "payments")
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) { c.HTTPAddr = "127.0.0.1:0" })
	addr := g.HTTPAddr().String()
	clustertest.Eventually(t, 20*time.Second, "the gateway says ready", func() bool {
		code, _ := adminGet(t, addr, "/readyz")
		return code == http.StatusOK
	})
	for i := range r.Nodes {
		r.Kill(i)
	}
	var body string
	clustertest.Eventually(t, 30*time.Second, "a gateway without a region says not ready", func() bool {
		var code int
		code, body = adminGet(t, addr, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if body != "no serving region node reached\n" {
		t.Errorf("/readyz: %q", body)
	}
	for _, c := range r.Cfgs {
		if strings.Contains(body, c.NodeID) || strings.Contains(body, c.RPCAddr) {
			t.Errorf("/readyz leaks a node id or address: %q", body)
		}
	}
	if code, body := adminGet(t, addr, "/livez"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez of a running gateway: %d %q", code, body)
	}
	for i := range r.Nodes {
		r.Start(i)
	}
	clustertest.Eventually(t, 60*time.Second, "the gateway says ready again", func() bool {
		code, _ := adminGet(t, addr, "/readyz")
		return code == http.StatusOK
	})
}
