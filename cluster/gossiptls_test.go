package cluster_test

import (
	"crypto/fips140"
	"crypto/tls"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
)

// TestGossipOverTLSElects runs a three-node cluster whose gossip goes over mutual TLS, with
// memberlist's own encryption off and no gossip key: the nodes find each other, bootstrap, elect a
// leader and apply. Under GODEBUG=fips140=only (make test-fips) this is the mode FIPS forces; in a
// normal run GossipTLS selects it.
func TestGossipOverTLSElects(t *testing.T) {
	t.Parallel()
	h := clustertest.Start(t, 3, clustertest.WithConfig(func(c *cluster.Config) {
		c.GossipTLS = true
		c.GossipKey = nil
	}))
	leader := h.WaitForLeader()
	ctx := h.Context(10 * time.Second)
	if _, err := h.Followers()[0].Cluster.Apply(ctx, []byte("over-tls")); err != nil {
		t.Fatalf("apply through a follower (fips140 enabled: %v): %v", fips140.Enabled(), err)
	}
	// Every node sees the three as alive members through gossip.
	h.Eventually(10*time.Second, "three alive members on every node", func() bool {
		for _, nd := range h.Running() {
			members, err := nd.Cluster.Members()
			if err != nil {
				return false
			}
			alive := 0
			for _, m := range members {
				if m.Status == cluster.StatusAlive {
					alive++
				}
			}
			if alive != 3 {
				return false
			}
		}
		return true
	})
	// A peer without a node certificate of the region gets no gossip through: the listener
	// requires and verifies one before it reads a byte.
	conn, err := tls.Dial("tcp", leader.Config.GossipAddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write([]byte{'P', 0, 0})
		if _, err = conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("a peer without a certificate kept its gossip connection")
		}
	}
}
