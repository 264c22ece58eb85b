// The walkthrough of `krypton dev -demo`, step by step through the public API.

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	anchorfile "github.com/kryptonkms/krypton/anchor/file"
	"github.com/kryptonkms/krypton/client"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// runDemo is the walkthrough of `krypton dev -demo`. Every step goes through the public gRPC API
// with mutual TLS, as a real operator and a real service would.
func (d *devRegion) runDemo(ctx context.Context, w io.Writer) error {
	step := func(format string, a ...any) { fmt.Fprintf(w, "\n==> "+format+"\n", a...) }
	say := func(format string, a ...any) { fmt.Fprintf(w, "    "+format+"\n", a...) }

	leader := d.leader()
	follower := (leader + 1) % devNodes
	step("bootstrap: three nodes started identically with -bootstrap-expect 3 elected %s", d.cfgs[leader].NodeID)
	opConn, err := d.dial(follower, d.operator[0], d.operator[1])
	if err != nil {
		return err
	}
	admin := kv1.NewAdminServiceClient(opConn)
	peers, err := admin.ListPeers(ctx, &kv1.ListPeersRequest{})
	if err != nil {
		return err
	}
	for _, p := range peers.GetPeers() {
		role := "follower"
		if p.GetLeader() {
			role = "leader"
		}
		say("%-7s raft %-16s voter, %s", p.GetNodeId(), p.GetRaftAddress(), role)
	}

	step("governance creates tenant acme on %s in region dev, and its service acme/payments; the region's leader follows the feed", d.anchorURI)
	ownerPub, err := d.ownerKey()
	if err != nil {
		return err
	}
	govConn, err := d.dialAddr(d.gov.Addr(), pki.Identity{Kind: pki.KindGovernance}, d.operator[0], d.operator[1])
	if err != nil {
		return err
	}
	gov := kv1.NewGovernanceServiceClient(govConn)
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceTenant, error) {
		return gov.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: "demo-tenant", Tenant: "acme", AnchorUri: d.anchorURI, Regions: []string{devRegionName}, OwnerPublicKey: ownerPub})
	}); err != nil {
		return err
	}
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceServiceInfo, error) {
		return gov.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "demo-service", Tenant: "acme", Service: "payments"})
	}); err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, "acme/payments in the region", func() bool {
		_, err := admin.DescribeKey(ctx, &kv1.DescribeKeyRequest{Tenant: "acme", Service: "payments"})
		return err == nil
	}); err != nil {
		return err
	}
	say("follower %s knows acme/payments: the leader sealed its L2 with the anchor and its L3 under the L2", d.cfgs[follower].NodeID)
	svc, err := d.ca.IssueService("acme", "payments", time.Hour)
	if err != nil {
		return err
	}
	certDir := filepath.Join(d.dir, "certs")
	svcFiles := [2]string{}
	svcFiles[0], svcFiles[1] = serviceCertFiles(certDir, "acme", "payments")
	if err := svc.WriteFiles(svcFiles[0], svcFiles[1]); err != nil {
		return err
	}
	clients := make([]kv1.WrapServiceClient, devNodes)
	for i := range clients {
		conn, err := d.dial(i, svcFiles[0], svcFiles[1])
		if err != nil {
			return err
		}
		clients[i] = kv1.NewWrapServiceClient(conn)
	}
	ref := &kv1.KeyRef{Tenant: "acme", Service: "payments"}
	orderCtx := []byte("order=1001")

	step("generate a data key on node-1, unwrap it on node-2 and node-3")
	gen, err := clients[0].GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: ref, Context: orderCtx})
	if err != nil {
		return err
	}
	say("wrapped under %s/%s v%d: %d-byte blob", gen.GetKey().GetTenant(), gen.GetKey().GetService(), gen.GetKey().GetVersion(), len(gen.GetBlob()))
	for i := 1; i < devNodes; i++ {
		got, err := clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: orderCtx})
		if err != nil {
			return fmt.Errorf("dev: unwrap on %s: %w", d.cfgs[i].NodeID, err)
		}
		if !bytes.Equal(got.GetPlaintext(), gen.GetPlaintext()) {
			return fmt.Errorf("dev: %s unwrapped other bytes", d.cfgs[i].NodeID)
		}
		say("%s unwrapped the same 32 bytes", d.cfgs[i].NodeID)
	}
	if _, err := clients[1].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: []byte("order=1002")}); status.Code(err) != codes.InvalidArgument {
		return fmt.Errorf("dev: unwrap under another context: %v, want InvalidArgument", err)
	}
	say("under another context it does not open: %s", codes.InvalidArgument)

	if err := d.demoGateway(ctx, step, say); err != nil {
		return err
	}

	step("rotate acme/payments: new wraps use v2, the v1 blob still unwraps")
	key, err := retryWrite(ctx, func() (*kv1.Key, error) {
		return admin.RotateKey(ctx, &kv1.RotateKeyRequest{RequestId: "demo-rotate", Tenant: "acme", Service: "payments"})
	})
	if err != nil {
		return err
	}
	if err := poll(ctx, 10*time.Second, "the rotation on node-3", func() bool {
		r, err := clients[2].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{7}, 32)})
		return err == nil && r.GetKey().GetVersion() == key.GetCurrentVersion()
	}); err != nil {
		return err
	}
	say("current version %d; node-3 wraps under it", key.GetCurrentVersion())
	if _, err := clients[2].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: orderCtx}); err != nil {
		return fmt.Errorf("dev: v1 blob after rotation: %w", err)
	}
	say("the v1 blob still unwraps on node-3")

	leader = d.leader()
	step("kill the leader %s (no goodbye) and keep wrapping on the survivors", d.cfgs[leader].NodeID)
	d.kill(leader)
	start := time.Now()
	newLeader, err := d.waitLeader(ctx)
	if err != nil {
		return err
	}
	say("%s leads after %v", d.cfgs[newLeader].NodeID, time.Since(start).Round(time.Millisecond))
	for i := range devNodes {
		if i == leader {
			continue
		}
		if err := poll(ctx, 20*time.Second, d.cfgs[i].NodeID+" to wrap again", func() bool {
			_, err := clients[i].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{9}, 32)})
			return err == nil
		}); err != nil {
			return err
		}
		say("%s wraps again (%v after the kill)", d.cfgs[i].NodeID, time.Since(start).Round(time.Millisecond))
	}

	// The region follows governance, which alone revokes (a governed region refuses region-level
	// revocations): the surviving nodes' new leader applies the event and fences it.
	step("revoke acme/payments v1 at governance while %s is down", d.cfgs[leader].NodeID)
	rv, err := retryWrite(ctx, func() (*kv1.RevokeResponse, error) {
		return gov.Revoke(ctx, &kv1.RevokeRequest{RequestId: "demo-revoke", Target: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "demo", Wait: true})
	})
	if err != nil {
		return err
	}
	// Region dev reported it applied and fenced: every voter confirmed, or its serving lease ran
	// out. The stopped node cannot confirm, so the fence waited out its lease.
	say("event %d effective in regions %v: the running nodes applied it; %s is down, so the fence waited until its lease expired on [%s]",
		rv.GetEvent().GetCursor(), regionNames(rv.GetRegions()), d.cfgs[leader].NodeID, d.cfgs[leader].NodeID)
	step("restart %s from its data directory: it catches up before it serves", d.cfgs[leader].NodeID)
	if err := d.start(leader); err != nil {
		return err
	}
	if err := poll(ctx, 30*time.Second, d.cfgs[leader].NodeID+" to serve", func() bool { return d.nodes[leader].Serving() == nil }); err != nil {
		return err
	}
	for i := range devNodes {
		_, err := clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: gen.GetBlob(), Context: orderCtx})
		if status.Code(err) != codes.FailedPrecondition {
			return fmt.Errorf("dev: %s answered %v for the revoked key, want FailedPrecondition", d.cfgs[i].NodeID, err)
		}
		say("%s refuses the v1 blob: %s", d.cfgs[i].NodeID, status.Convert(err).Message())
	}

	if err := d.demoGovernanceKillSwitch(ctx, gov, clients, ref, step, say); err != nil {
		return err
	}

	if d.anchorPath == "" {
		step("the L1 kill switch: disable the key %s in its own console and every node refuses acme within one check period", d.anchorURI)
		fmt.Fprintln(w, "\n==> demo complete")
		return nil
	}
	step("the customer disables the root key (the L1 kill switch): every node refuses the tenant")
	if err := anchorfile.Disable(d.anchorPath); err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, "the lockout", func() bool {
		for i := range devNodes {
			if _, err := clients[i].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{1}, 32)}); status.Code(err) != codes.FailedPrecondition {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	say("all three nodes refuse acme with FailedPrecondition; the sealed keys stay intact")
	if err := anchorfile.Enable(d.anchorPath); err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, "the lockout to lift", func() bool {
		_, err := clients[0].Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{1}, 32)})
		return err == nil
	}); err != nil {
		return err
	}
	say("root key enabled again: acme wraps again, nothing was lost")
	fmt.Fprintln(w, "\n==> demo complete")
	return nil
}

// demoGovernanceKillSwitch deletes acme's L1 pointer at governance, shows every node refusing the
// tenant the moment DeleteAnchor returns, then sets the pointer back and shows that a blob wrapped
// before the switch still unwraps: the sealed keys were never touched.
func (d *devRegion) demoGovernanceKillSwitch(ctx context.Context, gov kv1.GovernanceServiceClient, clients []kv1.WrapServiceClient,
	ref *kv1.KeyRef, step func(string, ...any), say func(string, ...any)) error {
	blobCtx := []byte("invoice=42")
	before, err := clients[0].GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: ref, Context: blobCtx})
	if err != nil {
		return err
	}
	step("governance pulls the kill switch: delete acme's L1 pointer and wait until every region has it in force")
	start := time.Now()
	del, err := retryWrite(ctx, func() (*kv1.DeleteAnchorResponse, error) {
		return gov.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: "demo-kill", Tenant: "acme", Reason: "demo", Wait: true})
	})
	if err != nil {
		return err
	}
	say("event %d effective in %v (regions %v)", del.GetEvent().GetCursor(), time.Since(start).Round(time.Millisecond), regionNames(del.GetRegions()))
	for i := range devNodes {
		_, err := clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: before.GetBlob(), Context: blobCtx})
		if status.Code(err) != codes.FailedPrecondition {
			return fmt.Errorf("dev: %s answered %v after the kill switch, want FailedPrecondition", d.cfgs[i].NodeID, err)
		}
		say("%s refuses acme: %s", d.cfgs[i].NodeID, status.Convert(err).Message())
	}
	step("the tenant's owner signs a consent and governance sets the pointer again: the region checks that the anchor opens the sealed tenant keys, then serves")
	consent, err := d.ownerConsent("acme", d.anchorURI, "demo-restore")
	if err != nil {
		return err
	}
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceTenant, error) {
		return gov.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: "demo-restore", Tenant: "acme", AnchorUri: d.anchorURI, Consent: consent})
	}); err != nil {
		return err
	}
	for i := range devNodes {
		var got *kv1.UnwrapResponse
		if err := poll(ctx, 20*time.Second, d.cfgs[i].NodeID+" to serve acme again", func() bool {
			got, err = clients[i].Unwrap(ctx, &kv1.UnwrapRequest{Blob: before.GetBlob(), Context: blobCtx})
			return err == nil
		}); err != nil {
			return err
		}
		if !bytes.Equal(got.GetPlaintext(), before.GetPlaintext()) {
			return fmt.Errorf("dev: %s unwrapped other bytes after the kill switch", d.cfgs[i].NodeID)
		}
	}
	say("every node unwraps the blob wrapped before the switch: nothing was lost")
	return nil
}

func regionNames(rc []*kv1.RegionCursor) []string {
	names := make([]string, len(rc))
	for i, r := range rc {
		names[i] = r.GetRegion()
	}
	return names
}

// demoGateway encrypts a record through the gateway's Unix socket, as an application beside it
// would: the gateway makes the data key locally, has a region node wrap it, and seals the record
// under it with AES-256-GCM; the ciphertext carries the wrapped key.
func (d *devRegion) demoGateway(ctx context.Context, step func(string, ...any), say func(string, ...any)) error {
	step("an application encrypts a record through the gateway beside it (Unix socket %s)", d.gw.UnixSocket())
	c, err := client.DialGatewayUnix(d.gw.UnixSocket())
	if err != nil {
		return err
	}
	defer c.Close()
	record, recCtx := []byte("card=4111111111111111;exp=12/29"), []byte("customer=42")
	ct, err := c.Encrypt(ctx, record, recCtx)
	if err != nil {
		return fmt.Errorf("dev: encrypt through the gateway: %w", err)
	}
	say("%d-byte record -> %d-byte ciphertext (wrapped data key + AES-256-GCM payload), under demo/app", len(record), len(ct))
	pt, err := c.Decrypt(ctx, ct, recCtx)
	if err != nil {
		return fmt.Errorf("dev: decrypt through the gateway: %w", err)
	}
	if !bytes.Equal(pt, record) {
		return fmt.Errorf("dev: the gateway decrypted other bytes")
	}
	say("decrypted: the same record")
	if _, err := c.Decrypt(ctx, ct, []byte("customer=43")); err == nil {
		return fmt.Errorf("dev: decrypt under another context succeeded")
	} else {
		say("under another context it does not decrypt: %s", status.Code(err))
	}
	return nil
}

// ownerConsent signs, with the demo owner key, the consent to set tenant's anchor to uri under rid.
func (d *devRegion) ownerConsent(tenant, uri, rid string) (string, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, devOwnerKey))
	if err != nil {
		return "", err
	}
	signer, err := owner.ParsePrivateKey(b)
	if err != nil {
		return "", err
	}
	now := time.Now()
	return signer.Sign(owner.Statement{Tenant: tenant, Op: owner.OpSetAnchor, Anchor: uri, RequestID: rid, Issued: now.Unix(), Expires: now.Add(time.Hour).Unix()})
}
