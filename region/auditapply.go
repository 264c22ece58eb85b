package region

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/transport"
)

// Replicated audit records (docs/audit.md, "Replicated records"): every node writes the record of
// each state change from the Raft log, as its state machine applies the entry (fsm.Options.
// OnApplied), so a record exists on every node where the change took effect, whichever node took
// the call and whether or not the leader lived to answer it. The record's actor, origin and detail
// come from the entry (fsm.Origin), which the proposing node fills in before it proposes.
//
// Replays: a restarted node replays the log after its last snapshot; the node skips every entry at
// or below auditFloor, the highest log index its audit log already records (audit.LastIndex at
// start), so nothing is recorded twice and a record lost to a crash before its fsync is written
// again. A snapshot taken by Raft first fsyncs the audit log (regionFSM.Snapshot), so a record of
// an entry a snapshot covers, which a replay would not bring back, is never lost to a crash.

// kindSettingsSet is the record of a SetSettings entry.
const kindSettingsSet = "settings.set"

// kindStateInstalled is the record of a snapshot the leader sent: the entries it covers were not
// applied here one by one, so this node has no record of them (the nodes that applied them do).
const kindStateInstalled = "state.installed"

// origin is the fsm.Origin of a command proposed for a call that came through ctx: the API
// caller (origin "api"), or the node's own work (origin "node").
func (n *Node) origin(ctx context.Context) fsm.Origin {
	o := fsm.Origin{Kind: fsm.OriginNode, Actor: "node", Node: n.cfg.NodeID}
	if id, ok := transport.IdentityFromContext(ctx); ok {
		o.Kind, o.Actor = fsm.OriginAPI, originText(id.String())
	}
	return o
}

// originText cuts s to what an fsm.Origin value holds.
func originText(s string) string {
	if len(s) <= fsm.MaxOriginValue {
		return s
	}
	return strings.ToValidUTF8(s[:fsm.MaxOriginValue-len("...")], "") + "..."
}

// detailText cuts s to what an audit detail value holds.
func detailText(s string) string {
	if len(s) <= audit.MaxDetailValue {
		return s
	}
	return strings.ToValidUTF8(s[:audit.MaxDetailValue-len("...")], "") + "..."
}

// auditApplied runs inside FSM.Apply (fsm.Options.OnApplied), on every node, in log order: it
// writes the record of an entry that changed the state. A refused entry, a retry of an applied
// request id and a governance event below the cursor changed nothing and are not recorded here
// (a refusal is the answer to the call, on the node that took it).
func (n *Node) auditApplied(a fsm.Applied) {
	if !a.Changed() || a.Index <= n.auditFloor {
		return
	}
	e, ok := auditEventOf(a)
	if !ok {
		return
	}
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "index", a.Index, "err", err)
	}
}

// auditInstalled records a snapshot the leader sent, whose entries this node did not apply one
// by one: from the first index it has no record of, to the snapshot's.
func (n *Node) auditInstalled(index uint64) {
	if index <= n.auditFloor {
		return
	}
	e := audit.Event{Kind: kindStateInstalled, Actor: "node", Detail: map[string]string{
		audit.IndexKey: strconv.FormatUint(index, 10), "origin": fsm.OriginNode,
		"not-recorded-here": fmt.Sprintf("%d-%d", n.auditFloor+1, index)}}
	n.auditFloor = index
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "index", index, "err", err)
	}
}

// auditEventOf is the record of an applied entry: the same on every node that applies it.
func auditEventOf(a fsm.Applied) (audit.Event, bool) {
	o := a.Entry.Origin
	e := audit.Event{Actor: o.Actor, RequestID: a.Entry.RequestID, Detail: map[string]string{}}
	for k, v := range o.Detail {
		e.Detail[k] = detailText(v)
	}
	e.Detail["origin"] = o.Kind
	if o.Kind == "" {
		e.Detail["origin"] = "unknown" // an entry proposed by a node without origins
	}
	if o.Node != "" {
		e.Detail["proposer"] = o.Node
	}
	e.Detail[audit.IndexKey] = strconv.FormatUint(a.Index, 10)
	cmd := a.Entry.Command
	if g, ok := cmd.(fsm.ApplyGovernanceEvent); ok {
		e.Detail["cursor"] = strconv.FormatUint(g.Cursor, 10)
		e.Detail["event-id"] = validOrEmpty(g.EventID)
		cmd = g.Event
		if a.Result.EventErr != nil {
			describeCommand(&e, cmd, a)
			e.Kind = auditGovRefused
			e.Code = status.Code(transport.ToStatus(a.Result.EventErr)).String()
			e.Detail["refusal"] = detailText(a.Result.EventErr.Error())
			return e, true
		}
	}
	describeCommand(&e, cmd, a)
	return e, e.Kind != ""
}

// reasonFromOrigin moves the reason a governance event gave into the record's Reason, unless its
// command carries one.
func reasonFromOrigin(e *audit.Event) {
	if r, ok := e.Detail["reason"]; ok {
		if e.Reason == "" {
			e.Reason = r
		}
		delete(e.Detail, "reason")
	}
}

// describeCommand sets the kind, key and command-specific detail of a record.
func describeCommand(e *audit.Event, cmd fsm.Command, a fsm.Applied) {
	feed := a.Entry.Origin.Kind == fsm.OriginFeed
	defer reasonFromOrigin(e)
	switch c := cmd.(type) {
	case fsm.CreateTenant:
		e.Kind, e.Tenant, e.Version = audit.KindKeyCreate, c.Tenant, 1
		if feed {
			e.Kind = auditGovTenant
		}
		e.Detail["layer"] = "L2"
		e.Detail["anchor"] = detailText(anchor.Redact(c.Anchor))
		fp := ""
		if k, err := ownerKeyPEM(c.OwnerKey); err == nil && k != nil {
			fp = k.Fingerprint()
		}
		e.Detail["owner-key"] = ownerKeyText(fp)
	case fsm.RotateTenantKey:
		e.Kind, e.Tenant, e.Version = audit.KindKeyRotate, c.Tenant, c.Version
		e.Detail["layer"] = "L2"
	case fsm.CreateService:
		e.Kind, e.Tenant, e.Service, e.Version = audit.KindKeyCreate, c.Tenant, c.Service, 1
	case fsm.RotateServiceKey:
		e.Kind, e.Tenant, e.Service, e.Version = audit.KindKeyRotate, c.Tenant, c.Service, c.Version
	case fsm.RevokeTenant:
		e.Kind, e.Tenant, e.Reason = audit.KindKeyRevoke, c.Tenant, c.Reason
	case fsm.RevokeService:
		e.Kind, e.Tenant, e.Service, e.Reason = audit.KindKeyRevoke, c.Tenant, c.Service, c.Reason
	case fsm.RevokeKeyVersion:
		e.Kind, e.Tenant, e.Service, e.Version, e.Reason = audit.KindKeyRevoke, c.Tenant, c.Service, c.Version, c.Reason
	case fsm.LockTenant:
		e.Kind, e.Tenant, e.Reason = audit.KindTenantLock, c.Tenant, c.Reason
	case fsm.UnlockTenant:
		e.Kind, e.Tenant = audit.KindTenantUnlock, c.Tenant
	case fsm.SetAnchor:
		e.Kind, e.Tenant = "tenant.rekey", c.Tenant
		if feed {
			e.Kind = auditGovAnchorSet
		}
		e.Detail["anchor"] = detailText(anchor.Redact(c.Anchor))
		e.Detail["old-anchor"] = detailText(anchor.Redact(a.OldAnchor))
		if a.OldAnchor == "" {
			e.Detail["old-anchor"] = "(deleted: this lifts the kill switch)"
		}
		if _, ok := e.Detail["owner-key"]; !ok {
			e.Detail["owner-key"] = "(none)"
		}
		if len(c.Resealed) > 0 {
			e.Detail["resealed"] = strconv.Itoa(len(c.Resealed))
		}
	case fsm.DeleteAnchor:
		e.Kind, e.Tenant, e.Reason = auditGovAnchorDelete, c.Tenant, c.Reason
		e.Detail["kill-switch"] = "on"
	case fsm.SetPolicy:
		e.Kind, e.Tenant = auditGovPolicy, c.Tenant
		e.Detail["revision"] = strconv.FormatUint(uint64(c.Policy.Revision), 10)
		e.Detail["rules"] = strconv.Itoa(len(c.Policy.Rules))
	case fsm.ResyncTenant:
		e.Kind, e.Tenant = auditGovResync, c.Tenant
		e.Detail["tenant-created"] = strconv.FormatBool(c.Create != nil)
		e.Detail["services-created"] = strconv.Itoa(len(c.Services))
		e.Detail["policy-set"] = strconv.FormatBool(c.Policy != nil)
		e.Detail["locked"] = strconv.FormatBool(c.Lock != "")
		if c.Import != nil { // a shared tenant's versions from its home region (TENANT_KEYS)
			e.Detail["imported-l2"] = strconv.Itoa(len(c.Import.L2))
			e.Detail["imported-l3"] = strconv.Itoa(len(c.Import.L3))
		}
	case fsm.SetTenantRegions:
		e.Kind, e.Tenant = auditGovSetRegions, c.Tenant
		e.Detail["regions"] = detailText(fmt.Sprint(c.Regions))
		if c.Home != "" {
			e.Detail["home"] = c.Home
		}
	case fsm.RemoveTenant:
		// The region left the tenant's residency: every sealed version of it is deleted here.
		e.Kind, e.Tenant, e.Reason = auditGovRemoveTenant, c.Tenant, c.Reason
		e.Detail["wiped"] = "true"
	case fsm.SetOwnerKey:
		e.Kind, e.Tenant = AuditOwnerSet, c.Tenant
		if k, err := ownerKeyPEM(c.OwnerKey); err == nil && k != nil {
			e.Detail["owner-key"] = k.Fingerprint()
		}
	case fsm.SetSettings:
		e.Kind = kindSettingsSet
	case fsm.SetQuota:
		e.Kind, e.Tenant, e.Service = auditQuotaSet, c.Tenant, c.Service
		e.Detail["quota"] = c.Quota.String()
	default:
		e.Kind = "state." + cmd.Type()
	}
}
