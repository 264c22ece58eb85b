package governance

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/transport"
)

// Replicated audit records (docs/audit.md, "Replicated records"): every governance node writes the
// record of each change from the Raft log, as its state machine applies the command
// (govfsm.FSM.OnApplied), with the caller the proposing node put in the command (Command.Actor), so
// a record exists on every node whether or not the node that took the call lived to answer it.
// Region reports (OpReport) are not recorded: they are a region's heartbeat, not a decision.
// Replays after a restart skip what the audit log already records (auditFloor, as in the region).

// kindStateInstalled is the record of a snapshot installed whole (from the leader, or an operator's
// restore): its commands were not applied here one by one.
const kindStateInstalled = "state.installed"

// caller names the identity of a call for a command's Actor, cut to what the command holds.
func caller(ctx context.Context) string {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return "node"
	}
	s := id.String()
	if len(s) > govfsm.MaxActor {
		s = strings.ToValidUTF8(s[:govfsm.MaxActor-len("...")], "") + "..."
	}
	return s
}

// auditApplied writes the record of a command that changed the state (not refused, not a retry).
func (n *Node) auditApplied(index uint64, c *govfsm.Command, r *govfsm.Result) {
	if r.Err != nil || r.Retry || c.Op == govfsm.OpReport || index <= n.auditFloor {
		return
	}
	e := auditEventOf(index, c, r)
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "index", index, "err", err)
	}
}

// auditInstalled records a snapshot installed whole, unless the audit log records its index.
func (n *Node) auditInstalled(index uint64) {
	if index <= n.auditFloor {
		return
	}
	e := audit.Event{Kind: kindStateInstalled, Actor: "node", Detail: map[string]string{
		audit.IndexKey: strconv.FormatUint(index, 10), "origin": "node",
		"not-recorded-here": fmt.Sprintf("%d-%d", n.auditFloor+1, index)}}
	n.auditFloor = index
	if err := n.audit.Record(e); err != nil {
		n.log.Error("audit log write failed", "kind", e.Kind, "index", index, "err", err)
	}
}

// auditEventOf is the record of an applied command: the same on every node that applies it.
func auditEventOf(index uint64, c *govfsm.Command, r *govfsm.Result) audit.Event {
	d := map[string]string{"origin": "api", audit.IndexKey: strconv.FormatUint(index, 10)}
	if c.Proposer != "" {
		d["proposer"] = c.Proposer
	}
	if ev := r.Event; ev != nil {
		d["cursor"], d["event-id"] = strconv.FormatUint(ev.Cursor, 10), ev.ID
	}
	e := audit.Event{Actor: c.Actor, Tenant: c.Tenant, RequestID: c.RequestID, Detail: d}
	if e.Actor == "" {
		d["origin"] = "unknown" // a command proposed by a node without actors
	}
	switch c.Op {
	case govfsm.OpCreateTenant:
		e.Kind = AuditTenantCreate
		d["anchor"] = detailText(anchor.Redact(c.AnchorURI))
		d["regions"] = detailText(fmt.Sprint(c.Regions))
		fp := ""
		if r.Tenant != nil {
			fp = r.Tenant.OwnerFingerprint()
		}
		d["owner-key"] = ownerKeyText(fp)
	case govfsm.OpCreateService:
		e.Kind, e.Service = AuditServiceCreate, c.Service
	case govfsm.OpSetAnchor:
		e.Kind = AuditAnchorSet
		d["anchor"] = detailText(anchor.Redact(c.AnchorURI))
		fp := ""
		if r.Event != nil {
			fp = r.Event.OwnerKey
		}
		d["owner-key"] = ownerKeyText(fp)
		// What the change replaced: the anchor in place, or the kill switch it lifts.
		d["old-anchor"] = "(deleted: this lifts the kill switch)"
		if r.Previous != "" {
			d["old-anchor"] = detailText(anchor.Redact(r.Previous))
		}
	case govfsm.OpSetOwnerKey:
		e.Kind = AuditOwnerSet
		fp := ""
		if k, err := owner.ParsePublicKey(c.OwnerKey); err == nil {
			fp = k.Fingerprint()
		}
		d["owner-key"] = ownerKeyText(fp)
		if r.Previous == "" {
			d["old-owner-key"] = "(none: registered on the operator's word)"
		} else {
			d["old-owner-key"], d["consented-by"] = r.Previous, r.Previous
		}
	case govfsm.OpDeleteAnchor:
		e.Kind, e.Reason = AuditAnchorDelete, c.Reason
	case govfsm.OpSetPolicy:
		e.Kind = AuditPolicySet
		d["rules"] = strconv.Itoa(len(c.Rules))
		if r.Policy != nil {
			d["revision"] = strconv.FormatUint(r.Policy.Revision, 10)
		}
	case govfsm.OpLockTenant:
		e.Kind, e.Reason = AuditTenantLock, c.Reason
	case govfsm.OpUnlockTenant:
		e.Kind, e.Reason = AuditTenantUnlock, c.Reason
	case govfsm.OpRevoke:
		e.Kind, e.Service, e.Version, e.Reason = AuditRevoke, c.Service, c.Version, c.Reason
		scope := c.Tenant
		if c.Service != "" {
			scope += "/" + c.Service
		}
		if c.Version != 0 {
			scope += "/" + strconv.FormatUint(uint64(c.Version), 10)
		}
		d["scope"] = scope
	case govfsm.OpResyncTenant:
		e.Kind = AuditTenantResync
		if r.Event != nil {
			d["regions"] = detailText(fmt.Sprint(r.Event.Regions))
			d["services"] = strconv.Itoa(len(r.Event.Services))
		}
	case govfsm.OpSetQuota:
		e.Kind, e.Service = AuditQuotaSet, c.Service
		d["quota"] = quotaText(c.Quota)
	case govfsm.OpSetRegions:
		e.Kind = AuditTenantSetRegions
		d["regions"] = detailText(fmt.Sprint(c.Regions))
		if r.Event != nil {
			d["removed"] = detailText(fmt.Sprint(r.Event.Removed))
		}
		if c.Home != "" { // makes a per-region tenant shared: this region makes its keys from now on
			d["home"] = c.Home
		}
		if r.Previous != "" {
			d["consented-by"] = r.Previous // the owner key that consented to a region added or a home
		}
	case govfsm.OpPublishKeys:
		e.Kind = AuditTenantKeys
		d["region"] = c.Region
		if c.Keys != nil {
			d["l2-blobs"], d["l3-blobs"] = strconv.Itoa(len(c.Keys.L2)), strconv.Itoa(len(c.Keys.L3))
		}
		if c.Floor != nil { // a region's own newest versions of a tenant made shared
			d["floor-l2"], d["floor-services"] = strconv.FormatUint(uint64(c.Floor.L2), 10), strconv.Itoa(len(c.Floor.Services))
		} else if r.Event == nil {
			d["event"] = "none: governance held them all"
		}
	case govfsm.OpResetVoters:
		e.Kind, e.Tenant, e.Reason = AuditRegionVotersReset, "", c.Reason
		idx, voters, _ := strings.Cut(r.Previous, " ")
		d["region"] = c.Region
		d["forgotten-configuration-index"] = idx
		d["forgotten-voters"] = detailText(voters)
	default:
		e.Kind = "governance." + string(c.Op)
	}
	return e
}
