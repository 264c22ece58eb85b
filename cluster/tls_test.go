package cluster_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/pki"
)

// TestRaftPortRefusesStrangers dials a node's Raft port with certificates
// that must be refused: one from another CA, and valid service and
// operator certificates of the cluster's own CA. A node certificate is
// the control: its connection stays open.
func TestRaftPortRefusesStrangers(t *testing.T) {
	h := clustertest.Start(t, 1, clustertest.WithConfig(func(c *cluster.Config) { c.BootstrapExpect = 1 }))
	nd := h.WaitForLeader()
	addr := nd.Config.RaftAddr

	other, err := pki.NewCA("other CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	foreignNode, _ := other.IssueNode("node-9", pki.NodeOptions{Region: clustertest.Region})
	service, _ := h.CA.IssueService("acme", "web", 0)
	operator, _ := h.CA.IssueOperator("alice", 0)
	otherRegion, _ := h.CA.IssueNode("node-0", pki.NodeOptions{Region: "elsewhere"})
	governance, _ := h.CA.IssueGovernance("node-0", pki.NodeOptions{})
	gateway, _ := h.CA.IssueGateway("acme", "node-0", pki.NodeOptions{})
	// A node of the region is admitted only if it is in the configuration: node-0 is, node-8
	// is not.
	goodNode, _ := h.CA.IssueNode(nd.ID, pki.NodeOptions{Region: clustertest.Region})
	stranger, _ := h.CA.IssueNode("node-8", pki.NodeOptions{Region: clustertest.Region})

	// probe connects, sends the Raft protocol byte and reports whether the
	// server kept the connection (a read that times out) or ended it.
	probe := func(cert *pki.Certificate) (kept bool) {
		t.Helper()
		cfg := pki.ClientTLSConfig(h.CA.Pool(), cert.TLSCertificate(), "127.0.0.1")
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return false
		}
		defer conn.Close()
		if _, err := conn.Write([]byte{'r'}); err != nil {
			return false
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return true
		}
		if err == nil || errors.Is(err, io.EOF) {
			return false
		}
		return false
	}
	if !probe(goodNode) {
		t.Fatal("control: a member's node certificate was refused")
	}
	for name, cert := range map[string]*pki.Certificate{
		"node of another CA":            foreignNode,
		"service":                       service,
		"operator":                      operator,
		"node of another region":        otherRegion,
		"governance node":               governance,
		"gateway (server-only)":         gateway,
		"node not in the configuration": stranger,
	} {
		if probe(cert) {
			t.Errorf("%s certificate accepted at the Raft port", name)
		}
	}
}
