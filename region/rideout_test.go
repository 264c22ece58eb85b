package region_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestForwardedRevokeRidesOutLeaderChange (issue 16): a revoke sent through a follower just after
// the leader is cut off used to come back at once or at the client's deadline as "may or may not
// have been applied" (the follower's forward failed against the old leader), although the
// follower knew a new leader within an election timeout. Now the follower sends the same entry
// (same request id) again to the new leader: the revoke succeeds within the caller's deadline, is
// applied once, and a retry under the same request id answers the same.
func TestForwardedRevokeRidesOutLeaderChange(t *testing.T) {
	t.Parallel()
	r := setup(t)
	old := r.Leader()
	f := r.Followers()[0]
	admin := r.AdminClient(f)
	// A write through the follower first: its forward connection to the leader is pooled, as on
	// any region in use.
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-ledger", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatalf("CreateKey through a follower: %v", err)
	}
	before := len(r.Nodes[f].State().RevocationLog(0))

	r.Partition(old)
	t.Cleanup(r.Heal)
	// Shorter than the 15 or 30 s client deadlines the old behaviour used up; an election, the
	// resend and the fence (the old leader's 1.5 s lease running out) fit well within it.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	req := &kv1.RevokeKeyRequest{RequestId: "rv-ride", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments"}, Reason: "leader cut off"}
	first, err := admin.RevokeKey(ctx, req)
	if err != nil {
		t.Fatalf("RevokeKey through %s right after the leader %s was cut off: %v (want success once a new leader exists)", r.Cfgs[f].NodeID, r.Cfgs[old].NodeID, err)
	}
	if len(first.GetRevoked()) != 1 || first.GetRevoked()[0].GetService() != "payments" {
		t.Fatalf("revoked %v, want acme/payments v1", first.GetRevoked())
	}
	// In force: the follower refuses to wrap with it.
	_, err = r.WrapClient(f, "acme", "payments").Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: randKey(t)})
	if status.Code(err) == codes.OK || status.Code(err) == codes.Unavailable {
		t.Fatalf("Wrap of a revoked key on %s: %v, want a refusal", r.Cfgs[f].NodeID, err)
	}
	// Applied once, however many times it was sent.
	var mine int
	for _, rv := range r.Nodes[f].State().RevocationLog(uint64(before)) {
		if rv.RequestID == "rv-ride" {
			mine++
		}
	}
	if mine != 1 {
		t.Fatalf("%d revocation log entries under request id rv-ride, want 1", mine)
	}
	// A retry under the same request id answers the same.
	again, err := admin.RevokeKey(ctxT(t), req)
	if err != nil {
		t.Fatalf("retry of RevokeKey: %v", err)
	}
	if len(again.GetRevoked()) != len(first.GetRevoked()) || again.GetRevoked()[0].GetService() != "payments" {
		t.Fatalf("retry revoked %v, first %v", again.GetRevoked(), first.GetRevoked())
	}
	if n := len(r.Nodes[f].State().RevocationLog(uint64(before))); n != 1 {
		t.Fatalf("%d revocations after the retry, want 1", n)
	}
}

// TestClientReconnectsQuicklyToRestartedNode (issue 16): a client connection pinned to a node
// that was down long enough for gRPC's default reconnect backoff to grow (1 s × 1.6 per failed
// attempt, up to 120 s) used to wait ten seconds and more after the node was back. Every
// transport.Dial connection now backs off at most 3 s (transport.ReconnectParams).
func TestClientReconnectsQuicklyToRestartedNode(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 3)
	i := r.Followers()[0]
	cert, err := r.CA.IssueOperator("test-operator", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := r.Cfgs[i].RPCAddr
	conn, err := transport.Dial(context.Background(), addr, transport.ClientConfig{Roots: r.CA.Pool(), Certificate: cert.TLSCertificate(),
		Server: pki.Identity{Kind: pki.KindNode, Region: "test", NodeID: r.Cfgs[i].NodeID}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := kv1.NewAdminServiceClient(conn)
	if _, err := admin.Status(ctxT(t), &kv1.StatusRequest{}); err != nil {
		t.Fatalf("Status before the restart: %v", err)
	}

	// The node goes down; what answers at its address in the meantime accepts and hangs up, so
	// that every reconnect attempt fails and is counted.
	r.Kill(i)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on the stopped node's address: %v", err)
	}
	var attempts atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			c.Close()
		}
	}()
	conn.Connect()
	// Seven failed attempts: with gRPC's default backoff the next one would come 13 s or more
	// after the seventh (1.6⁷ s less 20% jitter); bounded, within 3.6 s.
	clustertest.Eventually(t, 90*time.Second, "seven failed reconnect attempts", func() bool {
		return attempts.Load() >= 7
	})
	ln.Close()
	r.Start(i)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		_, err := admin.Status(cctx, &kv1.StatusRequest{})
		ccancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil || errors.Is(err, context.Canceled) {
			t.Fatalf("Status through the old connection 6 s after %s restarted: %v (reconnect backoff unbounded?)", r.Cfgs[i].NodeID, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
