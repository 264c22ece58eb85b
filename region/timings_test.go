package region_test

import (
	"testing"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
)

// TestDefaultTimingsOrderLeasesAndElections (issue 16) holds the production defaults to the order
// the serving leases rely on (cluster/DESIGN.md, "Timings"):
//
//   - Raft's leader lease is shorter than the heartbeat timeout: a leader cut off from its quorum
//     gives up before any follower can call an election (a follower waits at least one heartbeat
//     timeout);
//   - a crashed leader is replaced before a follower's serving lease runs out: a follower renews
//     every third of a lease, so it holds at least two thirds of one when the leader dies, and a
//     follower calls the election within two heartbeat timeouts.
//
// Raising the Raft timings to ride out longer stalls must keep both, or raise the lease too.
func TestDefaultTimingsOrderLeasesAndElections(t *testing.T) {
	c := cluster.DefaultConfig()
	if c.ElectionTimeout < c.HeartbeatTimeout {
		t.Errorf("election timeout %s is below the heartbeat timeout %s", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout >= c.HeartbeatTimeout {
		t.Errorf("leader lease %s is not shorter than the heartbeat timeout %s: a deposed leader may still count itself leader when a follower calls an election", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	lease := fsm.DefaultSettings().LeaseDuration
	if held := lease * 2 / 3; 2*c.HeartbeatTimeout >= held {
		t.Errorf("a follower may wait %s for a new leader, but holds only %s of its %s serving lease when the leader crashes: it would stop serving", 2*c.HeartbeatTimeout, held, lease)
	}
}
