package region

import (
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/pki"
)

// TestConfigCertificate: a node must present a region node certificate naming its own region and
// node ID: peers and governance admit only those, and a governance node's or a gateway's is no
// region node's.
func TestConfigCertificate(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	config := func(issue func() (*pki.Certificate, error), gov ...string) Config {
		cert, err := issue()
		if err != nil {
			t.Fatal(err)
		}
		c := DefaultConfig()
		c.NodeID, c.Region, c.DataDir = "n1", "eu", t.TempDir()
		c.RaftAddr, c.GossipAddr, c.RPCAddr = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
		c.Roots, c.Certificate = ca.Pool(), cert.TLSCertificate()
		c.Governance = gov
		return c
	}
	node := func(id, region string) func() (*pki.Certificate, error) {
		return func() (*pki.Certificate, error) { return ca.IssueNode(id, pki.NodeOptions{Region: region}) }
	}
	const want = "must be a region node certificate naming spiffe://krypton/region/eu/node/n1"
	for name, tt := range map[string]struct {
		c    Config
		want string
	}{
		"the region, no governance":  {config(node("n1", "eu")), ""},
		"governance and the region":  {config(node("n1", "eu"), "127.0.0.1:9"), ""},
		"another region":             {config(node("n1", "us")), want},
		"governance, another region": {config(node("n1", "us"), "127.0.0.1:9"), want},
		"another node":               {config(node("n2", "eu")), want},
		"a governance node":          {config(func() (*pki.Certificate, error) { return ca.IssueGovernance("n1", pki.NodeOptions{}) }), want},
		"a gateway":                  {config(func() (*pki.Certificate, error) { return ca.IssueGateway("eu", "n1", pki.NodeOptions{}) }), want},
		"bad governance address":     {config(node("n1", "eu"), "nowhere"), "Governance[0]"},
	} {
		err := tt.c.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: Validate() = %v, want %q", name, err, tt.want)
		}
	}
}
