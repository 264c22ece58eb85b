package region_test

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestNodeServiceAdmitsOnlyItsRegionsNodes: the L2 hand-out (FetchTenantKey) answers only a node of
// the region's own kind and region, however the certificate names the voter it claims to be. A
// gateway's certificate (issue 14: a gateway had a node certificate, made itself a voter, then
// fetched the tenant's L2), another region's node-2 and governance's node-2 are all refused; the
// region's own node-2 certificate, the control, is answered.
func TestNodeServiceAdmitsOnlyItsRegionsNodes(t *testing.T) {
	t.Parallel()
	r := setup(t)
	ld := r.Leader()
	voter := r.Cfgs[(ld+1)%len(r.Cfgs)].NodeID
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(issue func() (*pki.Certificate, error)) error {
		t.Helper()
		cert, err := issue()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := transport.Dial(context.Background(), r.Cfgs[ld].RPCAddr, transport.ClientConfig{
			Roots: r.CA.Pool(), Certificate: cert.TLSCertificate(),
			Server: pki.Identity{Kind: pki.KindNode, Region: r.Cfgs[ld].Region, NodeID: r.Cfgs[ld].NodeID},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = kv1.NewNodeServiceClient(conn).FetchTenantKey(ctxShort(t), &kv1.FetchTenantKeyRequest{
			NodeId: voter, Tenant: "acme", TenantKeyVersion: 1,
			Suite:              kv1.HpkeSuite_HPKE_SUITE_X25519_SHA256_AES256GCM,
			RecipientPublicKey: priv.PublicKey().Bytes(),
		})
		return err
	}
	for _, c := range []struct {
		name  string
		issue func() (*pki.Certificate, error)
		want  codes.Code
	}{
		// A gateway's certificate is a server's only: the handshake itself fails.
		{"a gateway's certificate", func() (*pki.Certificate, error) {
			return r.CA.IssueGateway("acme", voter, pki.NodeOptions{})
		}, codes.Unavailable},
		{"another region's " + voter, func() (*pki.Certificate, error) {
			return r.CA.IssueNode(voter, pki.NodeOptions{Region: "elsewhere"})
		}, codes.PermissionDenied},
		{"governance's " + voter, func() (*pki.Certificate, error) {
			return r.CA.IssueGovernance(voter, pki.NodeOptions{})
		}, codes.PermissionDenied},
		{"a service of the tenant", func() (*pki.Certificate, error) {
			return r.CA.IssueService("acme", "payments", 0)
		}, codes.PermissionDenied},
		{"the region's own " + voter + " (control)", func() (*pki.Certificate, error) {
			return r.CA.IssueNode(voter, pki.NodeOptions{Region: r.Cfgs[ld].Region})
		}, codes.OK},
	} {
		wantCode(t, fetch(c.issue), c.want, "FetchTenantKey with "+c.name)
	}
}

// TestRaftPortRefusesNonMembers: on a real region, certificates that are not a member's (a
// gateway's, another region's node-1, governance's node-1, a removed node's) ask the leader's
// cluster RPC to add a voter, apply a command and transfer leadership (issue 14, finding 1). Every
// request is refused; the configuration, the state and every node's audit chain stay as they were.
func TestRaftPortRefusesNonMembers(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	n4 := r.AddNode(r.Leader())
	removed := r.Cfgs[n4].NodeID
	if _, err := admin.RemovePeer(ctxT(t), &kv1.RemovePeerRequest{RequestId: "rm-" + removed, NodeId: removed}); err != nil {
		t.Fatal(err)
	}
	r.Kill(n4)
	waitSameState(t, r)
	ld := r.Leader()
	follower := r.Cfgs[(ld+1)%3].NodeID
	peersBefore := fmt.Sprint(voterIDs(t, r, ld))
	stateBefore := r.Nodes[ld].State().Hash()
	audits := func() []string {
		var out []string
		for i := range 3 {
			b, err := os.ReadFile(filepath.Join(r.Cfgs[i].DataDir, "audit.log"))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		return out
	}
	auditBefore := audits()

	issue := func(c *pki.Certificate, err error) *pki.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	member := r.Cfgs[ld].NodeID
	for who, cert := range map[string]*pki.Certificate{
		"a gateway's certificate":    issue(r.CA.IssueGateway("acme", member, pki.NodeOptions{})),
		"another region's " + member: issue(r.CA.IssueNode(member, pki.NodeOptions{Region: "elsewhere"})),
		"governance's " + member:     issue(r.CA.IssueGovernance(member, pki.NodeOptions{})),
		"the removed " + removed:     issue(r.CA.IssueNode(removed, pki.NodeOptions{Region: r.Cfgs[ld].Region})),
	} {
		for op, req := range map[string]string{
			"add-voter":           `{"op":"add-voter","id":"evil","addr":"127.0.0.1:1"}`,
			"apply":               `{"op":"apply","cmd":"AAAA"}`,
			"transfer-leadership": `{"op":"transfer-leadership","id":"` + follower + `"}`,
		} {
			if answered := clusterRPC(t, r.CA, r.Cfgs[ld].RaftAddr, cert, req); answered {
				t.Errorf("%s asking %s was answered", who, op)
			}
		}
	}
	if got := fmt.Sprint(voterIDs(t, r, ld)); got != peersBefore {
		t.Errorf("voters %s, were %s", got, peersBefore)
	}
	if r.Leader() != ld {
		t.Errorf("leadership moved")
	}
	if r.Nodes[ld].State().Hash() != stateBefore {
		t.Errorf("state changed")
	}
	for i, a := range audits() {
		if a != auditBefore[i] {
			t.Errorf("%s's audit chain changed", r.Cfgs[i].NodeID)
		}
	}
}

// clusterRPC dials addr's Raft port with cert, selects the cluster RPC, sends one request frame and
// reports whether any answer came back.
func clusterRPC(t *testing.T, ca *pki.CA, addr string, cert *pki.Certificate, req string) bool {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		pki.ClientTLSConfig(ca.Pool(), cert.TLSCertificate(), "127.0.0.1"))
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	frame := binary.BigEndian.AppendUint32([]byte{'c'}, uint32(len(req)))
	if _, err := conn.Write(append(frame, req...)); err != nil {
		return false
	}
	var hdr [4]byte
	_, err = io.ReadFull(conn, hdr[:])
	return err == nil
}
