package region

import (
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/pki"
)

// TestConfigGovernanceCertificate: a node that follows the governance feed must present a
// certificate naming its region, or governance would refuse it.
func TestConfigGovernanceCertificate(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	config := func(opts pki.NodeOptions, gov ...string) Config {
		cert, err := ca.IssueNode("n1", opts)
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
	for name, tt := range map[string]struct {
		c    Config
		want string
	}{
		"no governance, no region in the certificate": {config(pki.NodeOptions{}), ""},
		"governance and the region":                   {config(pki.NodeOptions{Region: "eu"}, "127.0.0.1:9"), ""},
		"governance without a region":                 {config(pki.NodeOptions{}, "127.0.0.1:9"), "must be a node certificate naming region"},
		"governance and another region":               {config(pki.NodeOptions{Region: "us"}, "127.0.0.1:9"), "must be a node certificate naming region"},
		"bad governance address":                      {config(pki.NodeOptions{Region: "eu"}, "nowhere"), "Governance[0]"},
	} {
		err := tt.c.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: Validate() = %v, want %q", name, err, tt.want)
		}
	}
}
