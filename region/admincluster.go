package region

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/version"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The AdminService's cluster half: membership, status and snapshots (adminsvc.go holds tenants
// and keys).

func (s *adminService) Members(context.Context, *kv1.MembersRequest) (*kv1.MembersResponse, error) {
	members, err := s.n.cl.Members()
	if err != nil {
		return nil, err
	}
	removed, err := s.n.cl.Removed()
	if err != nil {
		return nil, err
	}
	out := &kv1.MembersResponse{}
	listed := make(map[string]bool, len(members))
	for _, m := range members {
		st := kv1.MemberStatus_MEMBER_STATUS_UNSPECIFIED
		// A node that left gracefully (krypton leave) was removed too: LEFT says more about it.
		switch {
		case m.Removed && m.Status != cluster.StatusLeft:
			st = kv1.MemberStatus_MEMBER_STATUS_REMOVED
		case m.Status == cluster.StatusAlive:
			st = kv1.MemberStatus_MEMBER_STATUS_ALIVE
		case m.Status == cluster.StatusDead:
			st = kv1.MemberStatus_MEMBER_STATUS_DEAD
		case m.Status == cluster.StatusLeft:
			st = kv1.MemberStatus_MEMBER_STATUS_LEFT
		}
		listed[m.ID] = true
		out.Members = append(out.Members, &kv1.Member{
			NodeId: m.ID, GossipAddress: m.GossipAddr, RaftAddress: m.RaftAddr, ApiAddress: m.Meta[metaRPC],
			Status: st, Region: m.Meta[metaRegion], Version: m.Meta[metaVersion],
		})
	}
	// A removed node gossip never saw (or has forgotten) is listed too: its tombstone is part of
	// the region's state.
	for _, t := range removed {
		if !listed[t.ID] {
			out.Members = append(out.Members, &kv1.Member{NodeId: t.ID, Status: kv1.MemberStatus_MEMBER_STATUS_REMOVED, Region: s.n.cfg.Region})
		}
	}
	slices.SortFunc(out.Members, func(a, b *kv1.Member) int { return strings.Compare(a.GetNodeId(), b.GetNodeId()) })
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
	// Whether the join lifts a removal, for the audit record: read once caught up with the leader.
	if err := s.n.cl.Barrier(ctx); err != nil {
		return nil, clusterErr(err)
	}
	wasRemoved := false
	if removed, err := s.n.cl.Removed(); err == nil {
		wasRemoved = slices.ContainsFunc(removed, func(t cluster.Tombstone) bool { return t.ID == req.GetNodeId() })
	}
	if err := s.n.cl.Join(ctx, req.GetNodeId(), req.GetRaftAddress()); err != nil {
		return nil, clusterErr(err)
	}
	detail := map[string]string{"node": req.GetNodeId()}
	if wasRemoved {
		detail["readmitted"] = "true" // the join lifted the node's removal tombstone
	}
	s.n.record(ctx, audit.Event{Kind: audit.KindOperatorJoin, RequestID: req.GetRequestId(), Detail: detail})
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

// Snapshot takes a consistent snapshot of the node's state (sealed blobs only, never an unsealed
// key) as AdminService's SnapshotSave streams it: the data and its metadata. The process's
// scheduled backups (krypton server -snapshot-interval) call it in-process.
func (n *Node) Snapshot(ctx context.Context) (*kv1.SnapshotMeta, []byte, error) {
	var buf bytes.Buffer
	if err := n.cl.Snapshot(ctx, &buf); err != nil {
		return nil, nil, err
	}
	data := buf.Bytes()
	meta := &kv1.SnapshotMeta{Region: n.cfg.Region, Index: n.state.AppliedIndex(), Term: n.raftStat("term"), Size: uint64(len(data)), CreatedAt: timestamppb.Now()}
	return meta, data, nil
}

func (s *adminService) SnapshotSave(_ *kv1.SnapshotSaveRequest, stream kv1.AdminService_SnapshotSaveServer) error {
	meta, data, err := s.n.Snapshot(stream.Context())
	if err != nil {
		return clusterErr(err)
	}
	sum := sha256.Sum256(data)
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
	return n.checkRestoreKeepsOwnerKeys(scratch)
}

// inForce returns the revocations of log that still stand (fsm.InForce).
func inForce(log []fsm.Revocation) []fsm.Revocation { return fsm.InForce(log) }

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
