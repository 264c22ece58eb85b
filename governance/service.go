// The governance API's common ground: who may call, proposing, waiting for regions; and Status.

package governance

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Audit event kinds of governance decisions.
const (
	AuditTenantCreate  = "governance.tenant.create"
	AuditServiceCreate = "governance.service.create"
	AuditAnchorSet     = "governance.anchor.set"
	AuditAnchorDelete  = "governance.anchor.delete"
	AuditOwnerSet      = "governance.owner.set"
	AuditPolicySet     = "governance.policy.set"
	AuditQuotaSet      = "governance.quota.set"
	AuditTenantLock    = "governance.tenant.lock"
	AuditTenantUnlock  = "governance.tenant.unlock"
	AuditRevoke        = "governance.revoke"
	AuditRevokeDryRun  = "governance.revoke.dry-run"
	AuditWatchStart    = "governance.watch.start"
	AuditTenantResync  = "governance.tenant.resync"
	// AuditTenantSetRegions: a shared tenant's region set changed; AuditTenantKeys: its home
	// region published sealed keys.
	AuditTenantSetRegions = "governance.tenant.set-regions"
	AuditTenantKeys       = "governance.tenant.keys"
	// AuditRegionVotersReset: ResetRegionVoters forgot a region's configuration.
	AuditRegionVotersReset = "governance.region.reset-voters"
)

// api implements kv1.GovernanceServiceServer over a Node.
type api struct {
	kv1.UnimplementedGovernanceServiceServer
	n      *Node
	limits reportLimits // ReportCursor's writes per region
}

// operator refuses callers that are not operators. transport's policy admits operators and nodes to
// the service; nodes may only follow the feed.
func operator(ctx context.Context) error {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	if id.Kind != pki.KindOperator {
		return ErrNotOperator
	}
	return nil
}

// regionNode refuses callers that are not a node of region.
func regionNode(ctx context.Context, region string) error {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	if id.Kind != pki.KindNode || id.Region == "" || id.Region != region {
		return ErrWrongRegion
	}
	return nil
}

// propose fills in what only the proposing node may choose (time, event id) and the request's
// fingerprint, commits the command, and returns the state machine's result or its error.
func (n *Node) propose(ctx context.Context, c *govfsm.Command) (*govfsm.Result, error) {
	if err := validateCommand(c); err != nil {
		return nil, err
	}
	if err := n.gate(c); err != nil {
		return nil, err
	}
	if c.Op != govfsm.OpReport && c.Op != govfsm.OpCompact {
		fp, err := json.Marshal(c) // the request's parameters: nothing chosen yet
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(fp)
		c.Fingerprint = hex.EncodeToString(sum[:16])
		var id [16]byte
		rand.Read(id[:])
		c.EventID = hex.EncodeToString(id[:])
		// Who asked, for every node's audit record (auditapply.go): set after the fingerprint, so
		// that a retry by another caller or through another node is still the same request.
		c.Actor, c.Proposer = caller(ctx), n.cfg.NodeID
	}
	c.Time = time.Now().UnixNano()
	b, err := c.Encode()
	if err != nil {
		return nil, err
	}
	// A write with a request id applies at most once (govfsm deduplicates it by request id and
	// fingerprint, answering a second copy with the first's result): the cluster may send it
	// again to a new leader when the one it went to changes or stops answering.
	apply := n.cl.Apply
	if c.RequestID != "" {
		apply = n.cl.ApplyIdempotent
	}
	resp, err := apply(ctx, b)
	if err != nil {
		return nil, n.clusterErr(err)
	}
	r, ok := resp.(*govfsm.Result)
	if !ok {
		return nil, fmt.Errorf("governance: unexpected apply response %T", resp)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	return r, nil
}

// clusterErr maps cluster errors to the API's. Ambiguous outcomes (leadership lost, forwarding
// failed) are UNAVAILABLE: the client retries with the same request_id and learns the outcome.
func (n *Node) clusterErr(err error) error {
	switch {
	case errors.Is(err, cluster.ErrShutdown):
		return ErrShutdown
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader),
		errors.Is(err, cluster.ErrLeadershipLost), errors.Is(err, cluster.ErrForward):
		return ErrUnavailable
	}
	n.log.Warn("cluster call failed", "err", err)
	return ErrUnavailable
}

// barrier makes the local state reflect every acknowledged write.
func (n *Node) barrier(ctx context.Context) error {
	if err := n.cl.Barrier(ctx); err != nil {
		return n.clusterErr(err)
	}
	return nil
}

// waitRegions blocks until every region has reported a cursor at or beyond cursor, waking on every
// state change (reports are replicated, so any node sees them).
func (n *Node) waitRegions(ctx context.Context, cursor uint64, regions []string) ([]*kv1.RegionCursor, error) {
	for {
		changed := n.fsm.Changed()
		out := make([]*kv1.RegionCursor, 0, len(regions))
		done := true
		for _, r := range regions {
			rep := n.fsm.Report(r)
			out = append(out, reportProto(&rep))
			if rep.Cursor < cursor {
				done = false
			}
		}
		if done {
			return out, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, ErrWaitTimeout
			}
			return nil, ctx.Err()
		case <-n.stop:
			return nil, ErrShutdown
		}
	}
}

// operatorEvent is an event as an operator's answer shows it: the anchor URI redacted
// (anchor.Redact). The feed to the regions (watch.go) sends it as set.
func operatorEvent(e *govfsm.Event) *kv1.RevocationEvent {
	pe := EventProto(e)
	if pe != nil {
		pe.AnchorUri = anchor.Redact(pe.AnchorUri)
		pe.Keys = nil // sealed blobs are for the regions
	}
	return pe
}

func eventDetail(e *govfsm.Event) map[string]string {
	if e == nil {
		return nil
	}
	return map[string]string{"cursor": strconv.FormatUint(e.Cursor, 10), "event-id": e.ID}
}

func (s *api) Status(ctx context.Context, _ *kv1.GovernanceStatusRequest) (*kv1.GovernanceStatusResponse, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	n := s.n
	leader, _ := n.cl.Leader()
	out := &kv1.GovernanceStatusResponse{
		NodeId:       n.cfg.NodeID,
		LeaderId:     leader,
		Term:         n.cl.Term(),
		CommitIndex:  n.cl.CommitIndex(),
		AppliedIndex: n.cl.AppliedIndex(),
		HeadCursor:   n.fsm.Head(),
		LogFormat:    LogFormat,
	}
	f, who := clusterFormat(n.cl)
	out.VotersLogFormat, out.OldestVoter = uint32(f), who
	now := time.Now()
	for _, l := range n.fsm.Lags() {
		rl := &kv1.RegionLag{Cursor: reportProto(&l.RegionReport), PendingEvents: l.Pending, Lag: durationpb.New(0)}
		if l.Pending > 0 {
			rl.Lag = durationpb.New(max(0, now.Sub(time.Unix(0, l.OldestPending))))
		}
		out.Regions = append(out.Regions, rl)
	}
	return out, nil
}
