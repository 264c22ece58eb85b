package governance

import (
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/transport"
)

// Rolling upgrades of governance, as of a region (region/upgrade.go; docs/operations.md,
// "Upgrades and compatibility"): govfsm.DecodeCommand refuses unknown fields, so a governance
// node that cannot decode an entry stops applying. Each node advertises in gossip (metaFormat)
// the log format it reads, and a node proposes a command of a newer format only once every voter
// advertises at least that format. A node of a release from before the tag advertises nothing,
// which counts as format 0.
//
// Hand-written rather than a library's, as the region's: it reads this cluster's gossip tags and
// Raft configuration.

// LogFormat is the newest log format this release reads (and writes, once every voter reads it):
//
//	0: the release before the tag.
//	1: set-regions under the tenant owner's rule (govfsm.Command.OwnerRule, with the consent).
const LogFormat = 1

// metaFormat is the gossip tag holding a node's LogFormat.
const metaFormat = "log-format"

// formatOf returns the log format c needs to be decoded.
func formatOf(c *govfsm.Command) int {
	if c.OwnerRule {
		return 1
	}
	return 0
}

// upgradeInProgress refuses a command that voter, of an older release, could not decode.
func upgradeInProgress(voter string, reads int, op govfsm.Op, needs int) error {
	return transport.Coded(codes.FailedPrecondition, fmt.Sprintf("governance: voter %s runs an older release that reads log format %d, "+
		"and %s needs %d: upgrade every governance node first (`krypton governance status` names the oldest voter)", voter, reads, op, needs))
}

// clusterFormat returns the lowest log format the voters advertise, and the first voter that
// advertises it ("" when all read LogFormat). A voter not in gossip counts as format 0.
func clusterFormat(cl *cluster.Cluster) (int, string) {
	_, ids, err := cl.Configuration()
	if err != nil {
		return 0, ""
	}
	return cl.LowestTag(ids, metaFormat, LogFormat)
}

// gate refuses c if a voter could not decode it.
func (n *Node) gate(c *govfsm.Command) error {
	need := formatOf(c)
	if need == 0 {
		return nil
	}
	if f, who := clusterFormat(n.cl); need > f {
		return upgradeInProgress(who, f, c.Op, need)
	}
	return nil
}

// ClusterFormat is clusterFormat of this node's cluster, for tests.
func (n *Node) ClusterFormat() (int, string) { return clusterFormat(n.cl) }
