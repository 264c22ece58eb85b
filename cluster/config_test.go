package cluster

import (
	"crypto/fips140"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/kryptonkms/krypton/internal/pki"
)

func validConfig() Config {
	c := DefaultConfig()
	c.NodeID = "node-1"
	c.DataDir = "/var/lib/krypton"
	c.RaftAddr = "127.0.0.1:7300"
	c.GossipAddr = "127.0.0.1:7301"
	c.GossipKey = make([]byte, 32)
	c.BootstrapExpect = 3
	c.Join = []string{"127.0.0.1:7311"}
	c.TLS = pki.NodeTLSConfig(testCA.Pool(), testCert("node-1"))
	return c
}

var testCA = func() *pki.CA {
	ca, err := pki.NewCA("config test CA", 0)
	if err != nil {
		panic(err)
	}
	return ca
}()

func testCert(id string) tls.Certificate {
	c, err := testCA.IssueNode(id, pki.NodeOptions{Region: "test"})
	if err != nil {
		panic(err)
	}
	return c.TLSCertificate()
}

func TestConfigValidate(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		field  string
		mutate func(*Config)
	}{
		{"NodeID", func(c *Config) { c.NodeID = "" }},
		{"NodeID", func(c *Config) { c.NodeID = "Node_1" }},
		{"DataDir", func(c *Config) { c.DataDir = "" }},
		{"DataDir", func(c *Config) { c.DataDir = "relative/dir" }},
		{"RaftAddr", func(c *Config) { c.RaftAddr = "7300" }},
		{"RaftAdvertise", func(c *Config) { c.RaftAddr = "0.0.0.0:7300" }},
		{"RaftAdvertise", func(c *Config) { c.RaftAdvertise = "10.0.0.1:0" }},
		{"GossipAddr", func(c *Config) { c.GossipAddr = "nohost" }},
		{"GossipAdvertise", func(c *Config) { c.GossipAdvertise = "0.0.0.0:1" }},
		{"GossipKey", func(c *Config) { c.GossipKey = make([]byte, 16) }},
		{"BootstrapExpect", func(c *Config) { c.BootstrapExpect = -1 }},
		{"Join[0]", func(c *Config) { c.Join = []string{"x"} }},
		{"TLS", func(c *Config) { c.TLS = nil }},
		{"TLS", func(c *Config) { c.TLS = &tls.Config{RootCAs: x509.NewCertPool(), ClientCAs: x509.NewCertPool()} }},
		{"TLS", func(c *Config) { c.TLS.ClientCAs = nil }},
		{"TLS", func(c *Config) { c.TLS = pki.NodeTLSConfig(testCA.Pool(), testCert("node-2")) }},
		{"TLS", func(c *Config) {
			gw, _ := testCA.IssueGateway("acme", "node-1", pki.NodeOptions{})
			c.TLS = pki.NodeTLSConfig(testCA.Pool(), gw.TLSCertificate())
		}},
		{"HeartbeatTimeout", func(c *Config) { c.HeartbeatTimeout = 0 }},
		{"ElectionTimeout", func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 }},
		{"LeaderLeaseTimeout", func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout }},
		{"CommitTimeout", func(c *Config) { c.CommitTimeout = -1 }},
		{"SnapshotThreshold", func(c *Config) { c.SnapshotThreshold = 0 }},
		{"TrailingLogs", func(c *Config) { c.TrailingLogs = 0 }},
		{"ReconcileInterval", func(c *Config) { c.ReconcileInterval = 0 }},
		{"GossipTCPTimeout", func(c *Config) { c.GossipTCPTimeout = -1 }},
		{"GossipMaxStreams", func(c *Config) { c.GossipMaxStreams = -1 }},
		{"GossipMaxStreamsPerSource", func(c *Config) { c.GossipMaxStreamsPerSource = -1 }},
		{"Meta", func(c *Config) { c.Meta = map[string]string{"": "x"} }},
		{"Meta", func(c *Config) { c.Meta = map[string]string{"k": string(make([]byte, 400))} }},
	}
	for _, tt := range tests {
		if tt.field == "GossipKey" && fips140.Enabled() {
			continue // FIPS mode gossips over TLS: no gossip key is needed (Config.GossipTLS)
		}
		c := validConfig()
		tt.mutate(&c)
		err := c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("field %s: Validate() = %v", tt.field, err)
		}
	}
}

func TestDefaultCodec(t *testing.T) {
	var c DefaultCodec
	for _, v := range []any{nil, []byte("abc"), []byte{}, errors.New("boom")} {
		b, err := c.EncodeResponse(v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.DecodeResponse(b)
		if err != nil {
			t.Fatal(err)
		}
		switch want := v.(type) {
		case nil:
			if got != nil {
				t.Errorf("nil -> %#v", got)
			}
		case []byte:
			if g, ok := got.([]byte); !ok || string(g) != string(want) {
				t.Errorf("%q -> %#v", want, got)
			}
		case error:
			var re *RemoteError
			if e, ok := got.(error); !ok || !errors.As(e, &re) || re.Msg != want.Error() {
				t.Errorf("%v -> %#v", want, got)
			}
		}
	}
	if _, err := c.EncodeResponse(42); err == nil {
		t.Error("encoded an int")
	}
	for _, b := range [][]byte{nil, {9}} {
		if _, err := c.DecodeResponse(b); err == nil {
			t.Errorf("decoded %v", b)
		}
	}
}
