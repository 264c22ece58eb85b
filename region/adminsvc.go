package region

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/version"
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

func (s *adminService) Members(context.Context, *kv1.MembersRequest) (*kv1.MembersResponse, error) {
	members, err := s.n.cl.Members()
	if err != nil {
		return nil, err
	}
	out := &kv1.MembersResponse{}
	for _, m := range members {
		st := kv1.MemberStatus_MEMBER_STATUS_UNSPECIFIED
		switch m.Status {
		case cluster.StatusAlive:
			st = kv1.MemberStatus_MEMBER_STATUS_ALIVE
		case cluster.StatusDead:
			st = kv1.MemberStatus_MEMBER_STATUS_DEAD
		case cluster.StatusLeft:
			st = kv1.MemberStatus_MEMBER_STATUS_LEFT
		}
		out.Members = append(out.Members, &kv1.Member{
			NodeId: m.ID, GossipAddress: m.GossipAddr, RaftAddress: m.RaftAddr, ApiAddress: m.Meta[metaRPC],
			Status: st, Region: m.Meta[metaRegion], Version: m.Meta[metaVersion],
		})
	}
	return out, nil
}

func (s *adminService) ListPeers(context.Context, *kv1.ListPeersRequest) (*kv1.ListPeersResponse, error) {
	peers, err := s.n.cl.Peers()
	if err != nil {
		return nil, err
	}
	out := &kv1.ListPeersResponse{}
	for _, p := range peers {
		suffrage := kv1.Suffrage_SUFFRAGE_VOTER
		switch p.Suffrage {
		case "Nonvoter":
			suffrage = kv1.Suffrage_SUFFRAGE_NONVOTER
		case "Staging":
			suffrage = kv1.Suffrage_SUFFRAGE_STAGING
		}
		out.Peers = append(out.Peers, &kv1.Peer{NodeId: p.ID, RaftAddress: p.Address, Suffrage: suffrage, Leader: p.Leader})
	}
	return out, nil
}

// clusterErr gives the cluster layer's refusals their codes; the rest go through transport's table.
func clusterErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrNoLeader):
		return ErrNoLeader
	case errors.Is(err, cluster.ErrShutdown):
		return ErrShutdown
	case errors.Is(err, cluster.ErrBadAddress):
		return status.Error(codes.InvalidArgument, "region: "+err.Error())
	case errors.Is(err, cluster.ErrUnknownServer):
		return status.Error(codes.NotFound, "region: "+err.Error())
	case errors.Is(err, cluster.ErrRejected):
		return status.Error(codes.FailedPrecondition, "region: "+err.Error())
	case errors.Is(err, cluster.ErrBadSnapshot):
		return status.Error(codes.InvalidArgument, "region: malformed snapshot")
	}
	return err
}

func (s *adminService) Join(ctx context.Context, req *kv1.JoinRequest) (*kv1.JoinResponse, error) {
	if err := transport.CheckName("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if req.GetNonvoter() {
		return nil, status.Error(codes.InvalidArgument, "region: non-voting members are not supported")
	}
	if err := s.n.cl.Join(ctx, req.GetNodeId(), req.GetRaftAddress()); err != nil {
		return nil, clusterErr(err)
	}
	s.n.record(ctx, audit.Event{Kind: audit.KindOperatorJoin, RequestID: req.GetRequestId(), Detail: map[string]string{"node": req.GetNodeId()}})
	return &kv1.JoinResponse{Index: s.n.raftStat("last_log_index")}, nil
}

// Leave takes this node out of the region. The Raft removal happens within the call; the rest of
// the shutdown (the gRPC server among it) after the answer is sent.
func (s *adminService) Leave(ctx context.Context, req *kv1.LeaveRequest) (*kv1.LeaveResponse, error) {
	n := s.n
	n.record(ctx, audit.Event{Kind: audit.KindOperatorLeave, RequestID: req.GetRequestId(), Detail: map[string]string{"node": n.cfg.NodeID}})
	index := n.raftStat("last_log_index")
	if err := n.cl.Leave(ctx); err != nil {
		return nil, clusterErr(err)
	}
	go n.Shutdown() // the cluster is already stopped; this stops the rest and wipes the keys
	return &kv1.LeaveResponse{Index: index}, nil
}

func (s *adminService) RemovePeer(ctx context.Context, req *kv1.RemovePeerRequest) (*kv1.RemovePeerResponse, error) {
	if err := transport.CheckName("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := s.n.cl.Remove(ctx, req.GetNodeId()); err != nil {
		return nil, clusterErr(err)
	}
	s.n.record(ctx, audit.Event{Kind: audit.KindOperatorLeave, RequestID: req.GetRequestId(), Detail: map[string]string{"node": req.GetNodeId(), "removed-by": "operator"}})
	return &kv1.RemovePeerResponse{Index: s.n.raftStat("last_log_index")}, nil
}

func (s *adminService) TransferLeadership(ctx context.Context, req *kv1.TransferLeadershipRequest) (*kv1.TransferLeadershipResponse, error) {
	if err := s.n.cl.TransferLeadership(ctx, req.GetTargetId()); err != nil {
		return nil, clusterErr(err)
	}
	id, _ := s.n.cl.Leader()
	return &kv1.TransferLeadershipResponse{LeaderId: id, Term: s.n.raftStat("term")}, nil
}

func (s *adminService) Status(context.Context, *kv1.StatusRequest) (*kv1.StatusResponse, error) {
	return s.n.Status(), nil
}

// Status describes this node: Raft state and indexes, leader, lease and keyring.
func (n *Node) Status() *kv1.StatusResponse {
	leaderID, _ := n.cl.Leader()
	leaderAddr, _ := n.peers.apiAddr(leaderID)
	rs := kv1.RaftState_RAFT_STATE_UNSPECIFIED
	switch n.cl.State() {
	case raft.Follower:
		rs = kv1.RaftState_RAFT_STATE_FOLLOWER
	case raft.Candidate:
		rs = kv1.RaftState_RAFT_STATE_CANDIDATE
	case raft.Leader:
		rs = kv1.RaftState_RAFT_STATE_LEADER
	case raft.Shutdown:
		rs = kv1.RaftState_RAFT_STATE_SHUTDOWN
	}
	ls := kv1.LeaseState_LEASE_STATE_SERVING
	if n.Serving() != nil {
		ls = kv1.LeaseState_LEASE_STATE_EXPIRED
	}
	st := &kv1.StatusResponse{
		NodeId: n.cfg.NodeID, Region: n.cfg.Region, RaftState: rs,
		Term: n.raftStat("term"), LastLogIndex: n.raftStat("last_log_index"),
		CommitIndex: n.raftStat("commit_index"), AppliedIndex: n.state.AppliedIndex(),
		LeaderId: leaderID, LeaderAddress: leaderAddr, LeaseState: ls,
		GovernanceCursor: n.state.GovernanceCursor(),
		Version:          version.Version,
		Uptime:           durationpb.New(time.Since(n.started)),
	}
	if d := n.lease.expiresIn(); d > 0 {
		st.LeaseExpiresAt = timestamppb.New(time.Now().Add(d))
	}
	tk, sk := n.keys.counts()
	st.KeyringTenantKeys, st.KeyringServiceKeys = uint32(tk), uint32(sk)
	return st
}

func (s *adminService) SnapshotSave(_ *kv1.SnapshotSaveRequest, stream kv1.AdminService_SnapshotSaveServer) error {
	var buf bytes.Buffer
	if err := s.n.cl.Snapshot(stream.Context(), &buf); err != nil {
		return clusterErr(err)
	}
	data := buf.Bytes()
	sum := sha256.Sum256(data)
	meta := &kv1.SnapshotMeta{Region: s.n.cfg.Region, Index: s.n.state.AppliedIndex(), Term: s.n.raftStat("term"), Size: uint64(len(data)), CreatedAt: timestamppb.Now()}
	for off := 0; ; off += snapshotChunkSize {
		end := min(off+snapshotChunkSize, len(data))
		chunk := &kv1.SnapshotChunk{Data: data[off:end]}
		if off == 0 {
			chunk.Meta = meta
		}
		if end == len(data) {
			chunk.Sha256 = sum[:]
		}
		if err := stream.Send(chunk); err != nil {
			return err
		}
		if end == len(data) {
			return nil
		}
	}
}

func (s *adminService) SnapshotRestore(stream kv1.AdminService_SnapshotRestoreServer) error {
	var (
		buf       bytes.Buffer
		meta      *kv1.SnapshotMeta
		requestID string
		sum       []byte
	)
	for first := true; ; first = false {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		c := req.GetChunk()
		if first {
			meta, requestID = c.GetMeta(), req.GetRequestId()
			if meta == nil {
				return status.Error(codes.InvalidArgument, "region: the first snapshot chunk carries no metadata")
			}
			// Grow once to the announced size rather than by doubling (a fifth of the
			// leader's CPU in a restore of 1,000,000 key versions, BenchmarkScale).
			buf.Grow(int(min(meta.GetSize(), maxSnapshotSize)))
		}
		if sum != nil {
			return status.Error(codes.InvalidArgument, "region: data after the snapshot's last chunk")
		}
		if buf.Len()+len(c.GetData()) > maxSnapshotSize {
			return status.Error(codes.InvalidArgument, "region: snapshot too large")
		}
		buf.Write(c.GetData())
		sum = c.GetSha256()
	}
	switch got := sha256.Sum256(buf.Bytes()); {
	case meta == nil:
		return status.Error(codes.InvalidArgument, "region: empty snapshot stream")
	case sum == nil || !bytes.Equal(sum, got[:]):
		return status.Error(codes.InvalidArgument, "region: snapshot checksum does not match")
	case meta.GetRegion() != s.n.cfg.Region:
		return status.Error(codes.InvalidArgument, "region: snapshot of another region ("+strconv.Quote(meta.GetRegion())+")")
	}
	if _, err := cluster.SnapshotFSMData(buf.Bytes()); err != nil {
		return status.Error(codes.InvalidArgument, "region: malformed snapshot")
	}
	// The check runs under the cluster's apply gate: no revocation can be applied between it and
	// the restore.
	if err := s.n.cl.RestoreChecked(stream.Context(), &buf, s.n.checkRestoreKeepsRevocations); err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		if errors.Is(err, cluster.ErrNotLeader) {
			return status.Error(codes.FailedPrecondition, "region: restore runs on the leader; call the leader's API")
		}
		return clusterErr(err)
	}
	// The restored state's applied index is the one in the snapshot, below the index Raft
	// installed it at; a node serves only once its state has applied a lease grant's commit
	// index, so without a later entry no node (nor a follower restarted on the installed
	// snapshot) would serve again. Re-proposing the current settings is that entry, and changes
	// nothing else.
	if err := s.n.SetSettings(stream.Context(), s.n.state.Settings()); err != nil {
		return err
	}
	s.n.record(stream.Context(), audit.Event{Kind: "snapshot.restore", RequestID: requestID})
	return stream.SendAndClose(&kv1.SnapshotRestoreResponse{Index: s.n.state.AppliedIndex()})
}

// maxReason bounds an operator's reason in bytes (the state machine's own limit).
const maxReason = 1024

// checkReason requires the reason every revocation and lockout carries for the audit log (the CLI
// asks for -reason): 1 to 1024 bytes of UTF-8 without control characters, not only blanks. It
// runs before anything is proposed: a refused reason never reaches the Raft log.
func checkReason(r string) error {
	switch {
	case strings.TrimSpace(r) == "":
		return &codedErrorInvalid{"region: a reason is required (it goes to the audit log)"}
	case len(r) > maxReason:
		return &codedErrorInvalid{"region: the reason is longer than 1024 bytes"}
	case !utf8.ValidString(r):
		return &codedErrorInvalid{"region: the reason is not UTF-8"}
	}
	for _, c := range r {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return &codedErrorInvalid{"region: the reason holds control characters"}
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
	if err := s.n.governedCreateTenant(req.GetTenant(), req.GetAnchorUri()); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	t, err := s.n.CreateTenant(ctx, req.GetRequestId(), req.GetTenant(), req.GetAnchorUri())
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
	t, err := s.n.RekeyTenant(ctx, req.GetRequestId(), req.GetTenant(), req.GetAnchorUri())
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

// checkRestoreKeepsRevocations refuses a snapshot that would make a revoked key usable again: one
// taken before revocations this region has since made. Revocation is forever; a backup must not
// undo it. The snapshot is restored into a scratch state machine and every revocation in this
// region's log is looked up there: it must be revoked there too, or absent.
//
// It also refuses a snapshot that lacks any revocation of this node's durable set (revset.go), in
// which a revocation stays after a restore emptied the log: otherwise restoring a snapshot from
// before a tenant existed, then one from before its revocation, would undo it.
func (n *Node) checkRestoreKeepsRevocations(data io.Reader) error {
	if unsafeRestoreUngated {
		return nil // the chaos suite's broken build only (unsafe_restore_on.go)
	}
	scratch := fsm.NewState(fsm.Options{})
	if err := scratch.Restore(data); err != nil {
		return status.Error(codes.InvalidArgument, "region: malformed snapshot state")
	}
	if missing := n.revs.missingFrom(scratch); len(missing) > 0 {
		return status.Errorf(codes.FailedPrecondition, "region: the snapshot lacks %d revocation(s) this node has applied (%s); restoring it would make revoked keys usable again, and revocation is final: restore a snapshot taken after them", len(missing), describeMissing(missing))
	}
	undone := 0
	for _, r := range inForce(n.state.RevocationLog(0)) {
		if !revokedIn(scratch, r) {
			undone++
		}
	}
	if undone > 0 {
		return status.Errorf(codes.FailedPrecondition, "region: the snapshot predates %d revocation(s) made since; restoring it would make revoked keys usable again", undone)
	}
	return nil
}

// inForce returns the revocations of log that still stand: the log also records governance events
// that revoke nothing, refused ones, and anchor deletions that a later SetAnchor lifted (the kill
// switch is reversible; revocation is not).
func inForce(log []fsm.Revocation) []fsm.Revocation {
	var out []fsm.Revocation
	for i, r := range log {
		if r.Error != "" || !r.Kind.IsRevocation() {
			continue
		}
		if r.Kind == fsm.RevokedAnchor && slices.ContainsFunc(log[i+1:], func(l fsm.Revocation) bool {
			return l.Kind == fsm.EventAnchorSet && l.Error == "" && l.Tenant == r.Tenant
		}) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// revokedIn reports whether state s keeps revocation r in force (or does not hold the key at all).
func revokedIn(s *fsm.State, r fsm.Revocation) bool {
	t, err := s.Tenant(r.Tenant)
	if err != nil {
		return true // no such tenant: nothing of it can be used
	}
	if t.Status == fsm.StatusRevoked {
		return true
	}
	switch r.Kind {
	case fsm.RevokedTenant:
		return false
	case fsm.RevokedAnchor:
		return t.AnchorDeleted
	case fsm.RevokedService:
		svc, err := s.Service(r.Tenant, r.Service)
		return err != nil || svc.Status == fsm.StatusRevoked
	case fsm.RevokedKeyVersion:
		svc, err := s.Service(r.Tenant, r.Service)
		if err != nil || svc.Status == fsm.StatusRevoked {
			return true
		}
		kv, err := s.KeyVersion(r.Tenant, r.Service, r.Version)
		return err != nil || kv.Status == fsm.StatusRevoked
	}
	return false
}
