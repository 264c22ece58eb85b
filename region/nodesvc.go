package region

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// nodeService serves krypton.v1.NodeService: node-to-node calls. transport admits node
// certificates only; each handler also checks that the caller is a voter of this region.
type nodeService struct {
	kv1.UnimplementedNodeServiceServer
	n *Node
}

// authorizeVoter checks that the caller's certificate names nodeID (when given) and a voter.
func (n *Node) authorizeVoter(ctx context.Context, nodeID string) error {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return ErrNotVoter
	}
	if nodeID != "" {
		if err := transport.AuthorizeNode(ctx, nodeID); err != nil {
			return err
		}
	}
	if !n.isVoter(id.NodeID) {
		return ErrNotVoter
	}
	return nil
}

func (s *nodeService) FetchTenantKey(ctx context.Context, req *kv1.FetchTenantKeyRequest) (*kv1.FetchTenantKeyResponse, error) {
	n := s.n
	if err := n.authorizeVoter(ctx, req.GetNodeId()); err != nil {
		return nil, err
	}
	if !n.cl.IsLeader() {
		return nil, ErrNotLeader
	}
	if req.GetSuite() != kv1.HpkeSuite_HPKE_SUITE_X25519_SHA256_AES256GCM {
		return nil, transport.Invalid("region: unsupported HPKE suite")
	}
	if err := transport.CheckName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	// A tenant that may not be used is not handed out either.
	t, err := n.state.Tenant(req.GetTenant())
	if err != nil {
		return nil, err
	}
	switch {
	case t.Status == fsm.StatusRevoked:
		return nil, &fsm.Error{Err: fsm.ErrRevoked, Tenant: t.Name}
	case t.AnchorDeleted:
		return nil, &fsm.Error{Err: fsm.ErrAnchorDeleted, Tenant: t.Name}
	case t.Status == fsm.StatusLocked:
		return nil, &fsm.Error{Err: fsm.ErrLocked, Tenant: t.Name}
	}
	// Nor one the durable revocation set revokes, whatever snapshot the state was restored from
	// since (DESIGN.md, "Revocations survive every restore"): the wrap path checks it, and the
	// hand-out of the tenant key to a follower must not be the way around it.
	if n.revs.revoked(t.Name, "", 0) {
		return nil, status.Errorf(codes.FailedPrecondition, "region: tenant %s was revoked (this node's durable revocation set); revocation is final, its tenant key is not handed out", t.Name)
	}
	k, err := n.tenantKey(ctx, req.GetTenant(), req.GetTenantKeyVersion())
	if err != nil {
		return nil, err
	}
	enc, ct, err := wrap.SealHandoff(n.cfg.Region, req.GetNodeId(), k, req.GetRecipientPublicKey())
	if err != nil {
		return nil, transport.Invalid(err.Error())
	}
	n.auditHandout(ctx, req.GetNodeId(), req.GetTenant(), req.GetTenantKeyVersion())
	return &kv1.FetchTenantKeyResponse{
		TenantKeyVersion: req.GetTenantKeyVersion(),
		Suite:            kv1.HpkeSuite_HPKE_SUITE_X25519_SHA256_AES256GCM,
		EncapsulatedKey:  enc,
		Ciphertext:       ct,
	}, nil
}

// auditKeyHandout is the kind of the record of an L2 handed to a follower.
const auditKeyHandout = "key.hand-out"

// auditHandout records an L2 the leader sealed to a follower (FetchTenantKey): which node (as its
// certificate names it; authorizeVoter made it the request's node id), which tenant, which version.
func (n *Node) auditHandout(ctx context.Context, node, tenant string, version uint32) {
	e := audit.Event{Kind: auditKeyHandout, Tenant: tenant, Version: version,
		Detail: map[string]string{"layer": "L2", "node": node, "origin": originPeer}}
	e.Actor = actor(ctx)
	n.recordAs(e)
}
