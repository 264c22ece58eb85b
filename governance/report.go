// The ReportCursor RPC, by which a region reports its position, and its per-region write limits.

package governance

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// reportRefresh is how often a region's unchanged cursor report is written again (ReportCursor).
const reportRefresh = time.Minute

// Report writes that do not advance a region's cursor (a new inventory or configuration, a refresh)
// are limited per region on each governance node to a burst of reportBurst, then one per
// reportEvery: a voter of the region cannot grow governance's log faster than that. Writes that
// advance the cursor are not limited: there is at most one per event of the log.
const (
	reportEvery = time.Second
	reportBurst = 20
	// maxReportLimiters bounds the limiters kept (one per region that reported lately); beyond it
	// they start afresh. Region names come from certificates the CA issued.
	maxReportLimiters = 4096
)

// reportLimits holds the per-region limiters of ReportCursor. golang.org/x/time/rate is the token
// bucket (transport's OIDC limiter uses it too).
type reportLimits struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func (l *reportLimits) allow(region string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) >= maxReportLimiters {
		l.m = map[string]*rate.Limiter{}
	}
	lim := l.m[region]
	if lim == nil {
		lim = rate.NewLimiter(rate.Every(reportEvery), reportBurst)
		l.m[region] = lim
	}
	return lim.Allow()
}

// ReportCursor records a region's position (DESIGN.md, "Who may report"). Everything that can be
// refused is refused here, before the log: the caller must be a node of the region and, once
// governance has learned the region's Raft configuration, one of its voters; the report must be
// well formed and not beyond the head; a report that changes nothing is answered from the state;
// one that changes something without advancing the cursor is rate-limited.
func (s *api) ReportCursor(ctx context.Context, req *kv1.ReportCursorRequest) (*kv1.ReportCursorResponse, error) {
	if err := checkName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if err := regionNode(ctx, req.GetRegion()); err != nil {
		return nil, err
	}
	id, _ := transport.IdentityFromContext(ctx)
	if len(req.GetInventory()) > govfsm.MaxInventory {
		return nil, invalid(fmt.Sprintf("more than %d inventory entries", govfsm.MaxInventory))
	}
	voters := slices.Sorted(slices.Values(req.GetVoters()))
	if len(voters) > govfsm.MaxVoters {
		return nil, invalid(fmt.Sprintf("more than %d voters", govfsm.MaxVoters))
	}
	if !govfsm.ValidConfig(req.GetConfigurationIndex(), voters) {
		return nil, invalid("the reported configuration needs both configuration_index and voters, each voter a valid node name, none twice")
	}
	// A configuration takes effect at a position of the region's log the node has: an unbounded
	// index (2^64-1) would outrank every later report and pin the voter list for good.
	if req.GetConfigurationIndex() > req.GetCommitIndex() {
		return nil, invalid("configuration_index is beyond commit_index: a configuration takes effect at a log index the node has; report the node's Raft commit index with it")
	}
	c := &govfsm.Command{Op: govfsm.OpReport, Region: req.GetRegion(), Cursor: req.GetAppliedCursor(), HasInventory: req.GetHasInventory(),
		Node: id.NodeID, ConfigIndex: req.GetConfigurationIndex(), Voters: voters, CommitIndex: req.GetCommitIndex()}
	if c.HasInventory {
		c.Inventory = make([]govfsm.KeyRef, 0, len(req.GetInventory()))
		for _, k := range req.GetInventory() {
			if checkName("inventory tenant", k.GetTenant()) != nil || checkName("inventory service", k.GetService()) != nil || k.GetVersion() == 0 {
				return nil, invalid("inventory holds a malformed key reference")
			}
			c.Inventory = append(c.Inventory, govfsm.KeyRef{Tenant: k.GetTenant(), Service: k.GetService(), Version: k.GetVersion()})
		}
	}
	changes, last, err := s.n.fsm.CheckReport(c)
	if err != nil {
		return nil, err
	}
	if c.Cursor > s.n.fsm.Head() {
		return nil, govfsm.ErrCursorAhead
	}
	if !changes && c.HasInventory {
		// Cursors and configuration indexes only grow, so this node's state can say they change
		// nothing; an inventory can change back and forth, so "the same as mine" needs this node's
		// state to include every acknowledged write first.
		if err := s.n.barrier(ctx); err != nil {
			return nil, err
		}
		if changes, last, err = s.n.fsm.CheckReport(c); err != nil {
			return nil, err
		}
	}
	// A region reports after every feed message, heartbeats included. A report that changes nothing
	// is written at most once per reportRefresh, so that a quiet region costs a Raft write a minute
	// rather than one a heartbeat; its reported-at time is then up to reportRefresh old.
	if !changes && last.ReportedAt != 0 && time.Since(time.Unix(0, last.ReportedAt)) < reportRefresh {
		return &kv1.ReportCursorResponse{RecordedCursor: last.Cursor}, nil
	}
	if c.Cursor <= last.Cursor && !s.limits.allow(c.Region) {
		return nil, ErrReportRate
	}
	r, err := s.n.propose(ctx, c)
	if err != nil {
		return nil, err
	}
	return &kv1.ReportCursorResponse{RecordedCursor: r.Recorded}, nil
}

// ResetRegionVoters forgets the region's Raft configuration governance learned from its reports, so
// that the next report teaches it again (DESIGN.md, "Who may report"): the operator's way out when
// a node reported a configuration that is not the region's. Audited with the operator and reason.
func (s *api) ResetRegionVoters(ctx context.Context, req *kv1.ResetRegionVotersRequest) (*kv1.RegionCursor, error) {
	if err := operator(ctx); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := checkName("region", req.GetRegion()); err != nil {
		return nil, err
	}
	if err := requireReason(req.GetReason()); err != nil {
		return nil, err
	}
	// What is forgotten is in every node's audit record, from the state machine (auditapply.go).
	_, err := s.n.propose(ctx, &govfsm.Command{Op: govfsm.OpResetVoters, RequestID: req.GetRequestId(), Region: req.GetRegion(), Reason: req.GetReason()})
	if err != nil {
		return nil, err
	}
	// This node's state may lag the leader that applied the command.
	if err := s.n.barrier(ctx); err != nil {
		return nil, err
	}
	rep := s.n.fsm.Report(req.GetRegion())
	return reportProto(&rep), nil
}

// detailText cuts s to what an audit detail value holds (audit.MaxDetailValue bytes; up to 100
// voter names may not fit), marking the cut.
func detailText(s string) string {
	if len(s) <= audit.MaxDetailValue {
		return s
	}
	return strings.ToValidUTF8(s[:audit.MaxDetailValue-len("...")], "") + "..."
}
