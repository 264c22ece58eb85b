// The API's anchor and owner-key RPCs, and the owner's consent that moving either needs.

package governance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func (s *api) SetAnchor(ctx context.Context, req *kv1.SetAnchorRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := checkAnchor(req.GetAnchorUri(), s.n.cfg.AllowDevAnchor); err != nil {
		return nil, err
	}
	region := req.GetRegion()
	regionFlag := ""
	if region != "" {
		if err := checkName("region", region); err != nil {
			return nil, err
		}
		regionFlag = " -region " + region
	}
	st := owner.Statement{Tenant: req.GetTenant(), Op: owner.OpSetAnchor, Anchor: req.GetAnchorUri(), Region: region, RequestID: req.GetRequestId()}
	how := fmt.Sprintf("krypton owner consent -key <owner.key> -op set-anchor -anchor <uri>%s -request-id <id> -out consent.jws %s", regionFlag, req.GetTenant())
	if err := s.checkConsent(ctx, req.GetConsent(), st, how, true); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetAnchor, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), AnchorURI: req.GetAnchorUri(), Region: region, Consent: req.GetConsent()})
	if err != nil {
		return nil, err
	}
	return TenantProto(r.Tenant), nil
}

// SetOwnerKey registers a tenant's owner key, or replaces it with the current key's consent.
func (s *api) SetOwnerKey(ctx context.Context, req *kv1.SetOwnerKeyRequest) (*kv1.GovernanceTenant, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if req.GetOwnerPublicKey() == "" {
		return nil, invalid("owner_public_key is required (krypton owner keygen makes one)")
	}
	nk, err := owner.ParsePublicKey(req.GetOwnerPublicKey())
	if err != nil {
		return nil, checkOwnerKey(req.GetOwnerPublicKey())
	}
	st := owner.Statement{Tenant: req.GetTenant(), Op: owner.OpSetOwner, OwnerKey: nk.Fingerprint(), RequestID: req.GetRequestId()}
	how := fmt.Sprintf("krypton owner consent -key <current-owner.key> -op set-owner -owner-pub <new-owner.pub> -request-id <id> -out consent.jws %s", req.GetTenant())
	if err := s.checkConsent(ctx, req.GetConsent(), st, how, false); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpSetOwnerKey, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), OwnerKey: req.GetOwnerPublicKey(), Consent: req.GetConsent()})
	if err != nil {
		return nil, err
	}
	return TenantProto(r.Tenant), nil
}

func ownerKeyText(fp string) string {
	if fp == "" {
		return "(none)"
	}
	return fp
}

// checkConsent verifies a consent against the tenant's owner key as governance holds it, before
// anything is proposed, with an error that says what is wrong and how to make a consent (how); the
// state machine verifies it again where it applies. needKey refuses a tenant without an owner key
// (ErrNoOwnerKey); otherwise such a tenant takes no consent (the first owner key).
func (s *api) checkConsent(ctx context.Context, consent string, st owner.Statement, how string, needKey bool) error {
	if err := s.n.barrier(ctx); err != nil {
		return err
	}
	t, err := s.n.fsm.Tenant(st.Tenant)
	if err != nil {
		return err
	}
	if t.Revoked {
		return govfsm.ErrRevoked
	}
	if t.OwnerKey == "" {
		if needKey {
			return govfsm.ErrNoOwnerKey
		}
		if consent != "" {
			return invalid("the tenant has no owner key yet: registering its first takes no consent")
		}
		return nil
	}
	key, err := owner.ParsePublicKey(t.OwnerKey)
	if err != nil {
		return govfsm.ErrConsentDenied
	}
	_, err = owner.Verify(consent, key, st, time.Now())
	switch {
	case err == nil:
		return nil
	case errors.Is(err, owner.ErrMalformed):
		return invalid(strings.TrimPrefix(err.Error(), "owner: malformed: ") + "; the tenant's owner makes a consent with `" + how + "`, and the operator gives it with -consent consent.jws")
	}
	return status.Error(codes.PermissionDenied, "governance: "+strings.TrimPrefix(err.Error(), "owner: ")+
		"; the tenant's owner (key "+key.Fingerprint()+") makes a consent with `"+how+"`, and the operator gives it with -consent consent.jws")
}

func (s *api) DeleteAnchor(ctx context.Context, req *kv1.DeleteAnchorRequest) (*kv1.DeleteAnchorResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if err := requireReason(req.GetReason()); err != nil {
		return nil, err
	}
	r, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpDeleteAnchor, RequestID: req.GetRequestId(), Tenant: req.GetTenant(), Reason: req.GetReason()})
	if err != nil {
		return nil, err
	}
	out := &kv1.DeleteAnchorResponse{Event: operatorEvent(r.Event)}
	if req.GetWait() {
		if out.Regions, err = s.n.waitRegions(ctx, r.Event.Cursor, r.Tenant.Regions); err != nil {
			return nil, err
		}
	}
	return out, nil
}
