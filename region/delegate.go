package region

import (
	"context"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/policy"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// auditKeyDelegate is the kind of the record of a delegated wrapping key handed out.
const auditKeyDelegate = "key.delegate"

// DefaultDelegateTTL is Config.DelegateTTL's default.
const DefaultDelegateTTL = 30 * time.Second

// errDelegationOff answers DelegateWrap on a node whose Config.DelegateTTL is negative.
var errDelegationOff = status.Error(codes.FailedPrecondition,
	"region: this node hands out no delegated wrapping keys (its Config.DelegateTTL is negative); wrap with PackedWrap instead")

// errDelegationQuota answers DelegateWrap for a key whose tenant or service has a quota: a
// delegated key seals up to wrap.ItemsPerDerivedKey data keys that no node sees, so one call would
// count as one request where the wraps it stands for are thousands; those keys are wrapped here,
// each counted.
var errDelegationQuota = status.Error(codes.FailedPrecondition,
	"region: no delegated wrapping keys for a key under a quota (each data key counts against it); wrap with PackedWrap instead")

// DelegateWrap hands the caller one delegated wrapping key of a service key (wrap.DeriveWrapKey):
// checked exactly as a Wrap of that key is — serving lease, policy (WRAP), quota (one request),
// state, durable revocation set — since what the key lets its holder do is seal data keys under
// that version, which a Wrap does. See docs/gateway.md, "Delegated data keys".
func (s *wrapService) DelegateWrap(ctx context.Context, req *kv1.DelegateWrapRequest) (*kv1.DelegateWrapResponse, error) {
	n := s.n
	defer n.observe("delegate-wrap", time.Now())
	ttl := n.cfg.DelegateTTL
	switch {
	case ttl < 0:
		if err := n.Serving(); err != nil {
			return nil, err
		}
		return nil, errDelegationOff
	case ttl == 0:
		ttl = DefaultDelegateTTL
	}
	ctx, qc := n.quotaStart(ctx, 1)
	defer qc.end()
	l3, release, err := n.usableKey(ctx, req.GetKey(), fsm.OpWrap, policy.Wrap)
	if err != nil {
		return nil, err
	}
	// After the policy (usableKey), so that no caller learns whether another's key has a quota.
	if n.quotas.any.Load() && (n.quotas.get(req.GetKey().GetTenant(), "") != nil || n.quotas.get(req.GetKey().GetTenant(), req.GetKey().GetService()) != nil) {
		release()
		return nil, errDelegationQuota
	}
	// The derived key goes into the answer, whose bytes are gRPC's once it is marshalled (as a
	// GenerateDataKey's plaintext is); this copy is the answer's own.
	key := new([wrap.KeySize]byte)
	kdf, salt, err := l3.DeriveWrapKey(key)
	if errors.Is(err, wrap.ErrDestroyed) {
		if l3, release, err = n.lookAgain(ctx, req.GetKey(), fsm.OpWrap, policy.Wrap, release); err != nil {
			return nil, err
		}
		kdf, salt, err = l3.DeriveWrapKey(key)
	}
	id := l3.ID()
	release()
	if err != nil {
		return nil, err
	}
	// Audited as an L2 hand-out is: who holds a delegated key of which version, and its salt,
	// which every blob sealed under it carries in the clear, so that the blobs a leaked delegated
	// key could have made can be found.
	n.record(ctx, audit.Event{Kind: auditKeyDelegate, Tenant: id.Tenant, Service: id.Service, Version: id.Version,
		RequestID: req.GetRequestId(), Detail: map[string]string{"salt": hex.EncodeToString(salt[:]),
			"ttl": ttl.String(), "max-items": strconv.Itoa(wrap.ItemsPerDerivedKey)}})
	return &kv1.DelegateWrapResponse{
		Key:        keyRef(id),
		Kdf:        uint32(kdf),
		Salt:       salt[:],
		DerivedKey: key[:],
		MaxItems:   wrap.ItemsPerDerivedKey,
		Ttl:        durationpb.New(ttl),
	}, nil
}
