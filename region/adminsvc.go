package region

import (
	"context"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/quota"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// adminService serves krypton.v1.AdminService to operators (transport admits operator
// certificates only).
type adminService struct {
	kv1.UnimplementedAdminServiceServer
	n *Node
}

const (
	snapshotChunkSize = 1 << 20
	maxSnapshotSize   = 4 << 30
)

// maxReason bounds an operator's reason in bytes (the state machine's own limit).
const maxReason = 1024

// checkReason requires the reason every revocation and lockout carries for the audit log (the CLI
// asks for -reason): 1 to 1024 bytes of UTF-8 without control characters, not only blanks. It
// runs before anything is proposed: a refused reason never reaches the Raft log.
func checkReason(r string) error {
	switch {
	case strings.TrimSpace(r) == "":
		return transport.Invalid("region: a reason is required (it goes to the audit log)")
	case len(r) > maxReason:
		return transport.Invalid("region: the reason is longer than 1024 bytes")
	case !utf8.ValidString(r):
		return transport.Invalid("region: the reason is not UTF-8")
	}
	for _, c := range r {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return transport.Invalid("region: the reason holds control characters")
		}
	}
	return nil
}

func tenantState(t fsm.Tenant) kv1.TenantState {
	switch {
	case t.Status == fsm.StatusRevoked:
		return kv1.TenantState_TENANT_STATE_REVOKED
	case t.Status == fsm.StatusLocked || t.AnchorDeleted:
		return kv1.TenantState_TENANT_STATE_LOCKED
	}
	return kv1.TenantState_TENANT_STATE_ACTIVE
}

func ts(nanos int64) *timestamppb.Timestamp {
	if nanos == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, nanos))
}

func (n *Node) tenantProto(t fsm.Tenant) *kv1.Tenant {
	out := &kv1.Tenant{Name: t.Name, AnchorUri: anchor.Redact(t.Anchor), State: tenantState(t), TenantKeyVersion: t.CurrentL2, CreatedAt: ts(t.CreatedAt)}
	if t.Status == fsm.StatusLocked {
		out.LockedReason, out.LockedAt = t.LockReason, ts(t.LockedAt)
	}
	if t.AnchorDeleted {
		out.LockedReason = "the tenant's L1 anchor pointer was deleted (the kill switch); it serves again once governance sets an anchor"
	}
	if svcs, err := n.state.ListServices(t.Name); err == nil {
		out.ServiceCount = uint32(len(svcs))
	}
	_, out.OwnerKeyFingerprint, _ = n.state.OwnerKey(t.Name)
	out.Quota = quota.ToProto(limitsOf(t.Quota))
	return out
}

func keyState(s fsm.Status) kv1.KeyState {
	switch s {
	case fsm.StatusActive:
		return kv1.KeyState_KEY_STATE_ACTIVE
	case fsm.StatusDecryptOnly:
		return kv1.KeyState_KEY_STATE_DECRYPT_ONLY
	case fsm.StatusRevoked:
		return kv1.KeyState_KEY_STATE_REVOKED
	}
	return kv1.KeyState_KEY_STATE_UNSPECIFIED
}

func (n *Node) keyProto(svc fsm.Service) (*kv1.Key, error) {
	// A revoked service, or any of a revoked tenant, reports current version 0 and every version
	// REVOKED (admin.proto, Key).
	now, versions, err := n.state.DescribeService(svc.Tenant, svc.Name)
	if err != nil {
		return nil, err
	}
	k := &kv1.Key{Tenant: svc.Tenant, Service: svc.Name, CurrentVersion: svc.Current}
	if now.Status == fsm.StatusRevoked {
		k.CurrentVersion = 0
	}
	for _, v := range versions {
		if v.Version > svc.Current {
			// svc describes the key as a write left it (CreateKey, RotateKey): later versions
			// are another call's.
			break
		}
		k.Versions = append(k.Versions, &kv1.KeyVersion{Version: v.Version, State: keyState(v.Status), CreatedAt: ts(v.CreatedAt), RotatedAt: ts(v.RotatedAt), RevokedAt: ts(v.RevokedAt)})
	}
	return k, nil
}

// writtenKeyProto is keyProto for the answer of a write that made svc.Current (CreateKey,
// RotateKey, or a retry of one, which returns the first result): current_version is the version
// the write made even if the service has been revoked since — the write was acknowledged before
// the revocation, and its answer must say what it did (jepsen finding 6). The versions' states are
// as they are now.
func (n *Node) writtenKeyProto(svc fsm.Service) (*kv1.Key, error) {
	k, err := n.keyProto(svc)
	if err != nil {
		return nil, err
	}
	k.CurrentVersion = svc.Current
	return k, nil
}

func (s *adminService) CreateTenant(ctx context.Context, req *kv1.CreateTenantRequest) (*kv1.Tenant, error) {
	if err := s.n.governedCreateTenant(req.GetTenant(), req.GetAnchorUri(), req.GetOwnerPublicKey() != ""); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	t, err := s.n.CreateOwnedTenant(ctx, req.GetRequestId(), req.GetTenant(), req.GetAnchorUri(), req.GetOwnerPublicKey())
	if err != nil {
		return nil, err
	}
	return s.n.tenantProto(t), nil
}

// page cuts a sorted list of names at the page token (transport.Page: the name the previous page
// ended with) and returns the next page's token.
func page[T any](items []T, name func(T) string, size int32, token string) ([]T, string, error) {
	n, after, err := transport.Page(size, token)
	if err != nil {
		return nil, "", err
	}
	start := sort.Search(len(items), func(i int) bool { return name(items[i]) > after })
	end := min(start+n, len(items))
	next := ""
	if end < len(items) {
		next = transport.NextPageToken(name(items[end-1]))
	}
	return items[start:end], next, nil
}

func (s *adminService) ListTenants(_ context.Context, req *kv1.ListTenantsRequest) (*kv1.ListTenantsResponse, error) {
	all := s.n.state.ListTenants()
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	items, next, err := page(all, func(t fsm.Tenant) string { return t.Name }, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &kv1.ListTenantsResponse{NextPageToken: next}
	for _, t := range items {
		out.Tenants = append(out.Tenants, s.n.tenantProto(t))
	}
	return out, nil
}

func (s *adminService) DescribeTenant(_ context.Context, req *kv1.DescribeTenantRequest) (*kv1.DescribeTenantResponse, error) {
	t, err := s.n.state.Tenant(req.GetTenant())
	if err != nil {
		return nil, err
	}
	out := &kv1.DescribeTenantResponse{Tenant: s.n.tenantProto(t)}
	svcs, err := s.n.state.ListServices(t.Name)
	if err != nil {
		return nil, err
	}
	for _, svc := range svcs {
		k, err := s.n.keyProto(svc)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, k)
	}
	return out, nil
}

func (s *adminService) CreateKey(ctx context.Context, req *kv1.CreateKeyRequest) (*kv1.Key, error) {
	if err := s.n.governedCreateKey(req.GetTenant(), req.GetService()); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	svc, err := s.n.CreateKey(ctx, req.GetRequestId(), req.GetTenant(), req.GetService())
	if err != nil {
		return nil, err
	}
	return s.n.writtenKeyProto(svc)
}

func (s *adminService) RotateKey(ctx context.Context, req *kv1.RotateKeyRequest) (*kv1.Key, error) {
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	svc, err := s.n.RotateKey(ctx, req.GetRequestId(), req.GetTenant(), req.GetService())
	if err != nil {
		return nil, err
	}
	return s.n.writtenKeyProto(svc)
}

func (s *adminService) ListKeys(_ context.Context, req *kv1.ListKeysRequest) (*kv1.ListKeysResponse, error) {
	svcs, err := s.n.state.ListServices(req.GetTenant())
	if err != nil {
		return nil, err
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	items, next, err := page(svcs, func(s fsm.Service) string { return s.Name }, req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &kv1.ListKeysResponse{NextPageToken: next}
	for _, svc := range items {
		k, err := s.n.keyProto(svc)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, k)
	}
	return out, nil
}

func (s *adminService) DescribeKey(_ context.Context, req *kv1.DescribeKeyRequest) (*kv1.Key, error) {
	svc, err := s.n.state.Service(req.GetTenant(), req.GetService())
	if err != nil {
		return nil, err
	}
	return s.n.keyProto(svc)
}

func (s *adminService) RevokeKey(ctx context.Context, req *kv1.RevokeKeyRequest) (*kv1.RevokeKeyResponse, error) {
	if err := s.n.governedRevoke(Scope{Tenant: req.GetScope().GetTenant(), Service: req.GetScope().GetService(), Version: req.GetScope().GetVersion()}, req.GetReason()); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	sc := req.GetScope()
	scope, fence, err := s.n.revoke(ctx, req.GetRequestId(), Scope{Tenant: sc.GetTenant(), Service: sc.GetService(), Version: sc.GetVersion()}, req.GetReason())
	if err != nil {
		return nil, err
	}
	out := &kv1.RevokeKeyResponse{Fence: fence}
	// Name what the revocation covers (the one applied under this request id), as the state now
	// records it.
	if svcs, err := s.n.state.ListServices(scope.Tenant); err == nil {
		for _, svc := range svcs {
			if scope.Service != "" && svc.Name != scope.Service {
				continue
			}
			versions, _ := s.n.state.ListKeyVersions(svc.Tenant, svc.Name)
			for _, v := range versions {
				if scope.Version == 0 || v.Version == scope.Version {
					out.Revoked = append(out.Revoked, &kv1.KeyRef{Tenant: v.Tenant, Service: v.Service, Version: v.Version})
				}
			}
		}
	}
	return out, nil
}

func (s *adminService) LockTenant(ctx context.Context, req *kv1.LockTenantRequest) (*kv1.LockTenantResponse, error) {
	if err := s.n.governedLock(req.GetTenant(), req.GetReason()); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkReason(req.GetReason()); err != nil {
		return nil, err
	}
	tenant, fence, err := s.n.lockTenantResult(ctx, req.GetRequestId(), req.GetTenant(), req.GetReason())
	if err != nil {
		return nil, err
	}
	t, err := s.n.state.Tenant(tenant)
	if err != nil {
		return nil, err
	}
	return &kv1.LockTenantResponse{Tenant: s.n.tenantProto(t), Fence: fence}, nil
}

func (s *adminService) RekeyTenant(ctx context.Context, req *kv1.RekeyTenantRequest) (*kv1.Tenant, error) {
	if err := s.n.governedRekey(req.GetTenant(), req.GetAnchorUri()); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	t, err := s.n.RekeyTenant(ctx, req.GetRequestId(), req.GetTenant(), req.GetAnchorUri(), req.GetConsent())
	if err != nil {
		return nil, err
	}
	return s.n.tenantProto(t), nil
}

func (s *adminService) UnlockTenant(ctx context.Context, req *kv1.UnlockTenantRequest) (*kv1.Tenant, error) {
	if err := s.n.governedUnlock(req.GetTenant()); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	t, err := s.n.UnlockTenant(ctx, req.GetRequestId(), req.GetTenant())
	if err != nil {
		return nil, err
	}
	return s.n.tenantProto(t), nil
}
