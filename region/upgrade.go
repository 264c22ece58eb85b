package region

import (
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/transport"
)

// Rolling upgrades (docs/operations.md, "Upgrades and compatibility"). A region runs two
// releases side by side while its nodes are replaced one at a time, so a node never writes to
// the replicated log what another voter cannot decode: fsm.Decode refuses unknown fields and
// types, and a follower that cannot decode an entry stops applying.
//
// Each node advertises in gossip (metaFormat) the log format it reads. A release that adds to the
// log format raises LogFormat and writes the addition only once every voter advertises at least
// the format that holds it (regionFormat). A node of a release from before the tag advertises
// nothing, which counts as format 0.
//
// Hand-written rather than a library's: the gate reads this region's gossip tags and Raft
// configuration; no library knows either.

// LogFormat is the newest log format this release reads (and writes, once every voter reads it):
//
//	0: the release before the tag: entries without an origin; no compact-revocations or
//	   set-quota commands.
//	1: entries carry their origin (fsm.Entry.Origin); the compact-revocations and set-quota
//	   commands.
//	2: shared (multi-region) tenants: create-tenant with a home region, resync-tenant with a
//	   key import, and the set-tenant-regions and remove-tenant commands.
//	3: set-tenant-regions with a home (a tenant of each region made shared).
const LogFormat = 3

// metaFormat is the gossip tag holding a node's LogFormat.
const metaFormat = "log-format"

// formatOf returns the log format command needs to be decoded, above 0.
func formatOf(cmd fsm.Command) int {
	switch c := cmd.(type) {
	case fsm.SetTenantRegions:
		if c.Home != "" {
			return 3
		}
		return 2
	case *fsm.SetTenantRegions:
		if c != nil && c.Home != "" {
			return 3
		}
		return 2
	case fsm.RemoveTenant, *fsm.RemoveTenant:
		return 2
	case fsm.CreateTenant:
		if c.Home != "" || len(c.Regions) > 0 {
			return 2
		}
	case *fsm.CreateTenant:
		if c != nil && (c.Home != "" || len(c.Regions) > 0) {
			return 2
		}
	case fsm.ResyncTenant:
		return resyncFormat(&c)
	case *fsm.ResyncTenant:
		if c != nil {
			return resyncFormat(c)
		}
	case fsm.CompactRevocations, *fsm.CompactRevocations, fsm.SetQuota, *fsm.SetQuota:
		return 1
	case fsm.ApplyGovernanceEvent:
		// A governance event holds a command of its own (the feed waits, retrying, until the
		// region is upgraded).
		if c.Event != nil {
			return formatOf(c.Event)
		}
	case *fsm.ApplyGovernanceEvent:
		if c != nil && c.Event != nil {
			return formatOf(c.Event)
		}
	}
	return 0
}

// resyncFormat returns the log format a resync-tenant command needs: 2 with a key import or a
// shared tenant's creation, 1 with quotas.
func resyncFormat(c *fsm.ResyncTenant) int {
	switch {
	case c.Import != nil || (c.Create != nil && (c.Create.Home != "" || len(c.Create.Regions) > 0)):
		return 2
	case len(c.Quotas) > 0:
		return 1
	}
	return 0
}

// ErrUpgradeInProgress refuses a command that a voter of an older release could not decode.
var ErrUpgradeInProgress = transport.Coded(codes.FailedPrecondition,
	"region: a voter runs an older release that cannot decode this command; upgrade every node first (`krypton members` shows each node's version)")

// regionFormat returns the lowest log format the region's voters advertise, and the first voter
// that advertises it. A voter that is down counts with the tags it last gossiped (cluster keeps
// them); one gossip has not told this node of since it started might be of any release, so it
// counts as 0. It never exceeds this node's own LogFormat.
func (n *Node) regionFormat() (int, string) {
	ids, err := n.voterIDs()
	if err != nil {
		return 0, ""
	}
	return n.cl.LowestTag(ids, metaFormat, LogFormat)
}

// gateEntry adapts an entry to the region's log format: it drops the origin when a voter reads
// format 0 (the origin feeds only the audit records, which then name no caller), and refuses a
// command such a voter could not decode.
func (n *Node) gateEntry(e *fsm.Entry) error {
	need := formatOf(e.Command)
	hasOrigin := e.Origin.Kind != "" || e.Origin.Actor != "" || e.Origin.Node != "" || len(e.Origin.Detail) > 0
	if need == 0 && !hasOrigin {
		return nil
	}
	f, who := n.regionFormat()
	if need > f {
		return fmt.Errorf("%w (voter %s reads log format %d, %s needs %d)", ErrUpgradeInProgress, who, f, e.Command.Type(), need)
	}
	if f < 1 {
		e.Origin = fsm.Origin{}
	}
	return nil
}
