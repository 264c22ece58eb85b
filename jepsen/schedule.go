package jepsen

import "time"

// ShortSchedule is what `make test` runs on every submission: two scenarios of about half a minute
// that between them cover crashes, pauses, partitions, membership, leadership transfer, the
// anchor and the restore of an old backup (which runs once in every scenario that lists it), a
// rolling upgrade, and two regions under one governance node — a smoke test of the fence, not a
// search.
func ShortSchedule() []Scenario {
	return []Scenario{
		{Name: "short-partition-kill", Nodes: 3, Duration: 30 * time.Second,
			Nemeses: []string{PartitionLeader, PartitionFollower, PauseFollower, KillLeader, SnapshotRestore}},
		{Name: "short-member-anchor", Nodes: 3, Duration: 30 * time.Second,
			Nemeses: []string{Member, AnchorDead, Transfer, OneWay}},
		// A rolling upgrade from the previous release (upgrade.go): a node replaced every slot.
		{Name: "short-upgrade", Nodes: 3, Duration: 40 * time.Second, Nemeses: []string{Upgrade}},
		// Two regions under one governance node, a shared and a resident tenant (multiregion.go):
		// a region's feed cut, leaders killed and partitioned in either region. Nine processes
		// on two cores: the rate cap keeps the history small enough to check in a second or two
		// and leaves the machine to the rest of make test.
		{Name: "short-multi-region", Nodes: 3, Governance: 1, Regions: 2, Duration: 15 * time.Second, Rate: 1000,
			Nemeses: []string{RegionGovernancePartition, KillLeader, PartitionLeader}},
	}
}

// LongSchedule is `make jepsen`: fifteen scenarios of d each (about a minute), every nemesis
// alone (the disk faults together, the clock jump on its own) and then all of them mixed (but the
// clock jump), on three and five nodes, a rolling upgrade, the governance-fed region with its
// revocations issued at governance, and two regions fed by one governance plane.
func LongSchedule(d time.Duration) []Scenario {
	return []Scenario{
		{Name: "kill-restore", Nodes: 3, Duration: d, Nemeses: []string{KillLeader, KillFollower, KillAll, SnapshotRestore}},
		{Name: "pause", Nodes: 3, Duration: d, Nemeses: []string{PauseLeader, PauseFollower}},
		{Name: "partition-5", Nodes: 5, Duration: d, Nemeses: []string{PartitionLeader, PartitionFollower}},
		{Name: "bridge-one-way-5", Nodes: 5, Duration: d, Nemeses: []string{Bridge, OneWay}},
		{Name: "slow", Nodes: 3, Duration: d, Nemeses: []string{Slow}},
		{Name: "member", Nodes: 3, Duration: d, Nemeses: []string{Member}},
		{Name: "transfer-5", Nodes: 5, Duration: d, Nemeses: []string{Transfer, KillLeader}},
		{Name: "anchor", Nodes: 3, Duration: d, Nemeses: []string{AnchorFlaky, AnchorDead, AnchorHung}},
		{Name: "disk", Nodes: 3, Duration: d, Nemeses: []string{DiskFull, SlowFsync, CorruptRestart}},
		// The wall clock of the whole machine (every process, the harness's and the lead's
		// other tests alike) is stepped: make jepsen only.
		{Name: "clock", Nodes: 3, Duration: d, Nemeses: []string{ClockJump}},
		{Name: "mixed-3", Nodes: 3, Duration: d, Nemeses: AllNemeses},
		{Name: "mixed-5", Nodes: 5, Duration: d, Nemeses: AllNemeses},
		// A rolling upgrade from the previous release under load, with kills and partitions
		// of the mixed region between the replacements.
		{Name: "upgrade", Nodes: 3, Duration: d, Nemeses: []string{Upgrade, KillFollower, PartitionLeader, KillLeader}},
		{Name: "governance", Nodes: 3, Governance: 3, Duration: d,
			Nemeses: []string{KillLeader, PartitionFollower, GovernanceKill, GovernancePartition, GovernanceIsolate, GovernanceKillSwitch}},
		// Two regions fed by one governance plane, a tenant shared by both and one resident in
		// the first: the feed cut to a region or its leader, the regions cut from each other,
		// leaders killed and partitioned in either region (multiregion.go).
		{Name: "multi-region", Nodes: 3, Governance: 3, Regions: 2, Duration: d, Nemeses: MultiRegionNemeses},
	}
}

// BrokenScenario is run against the deliberately broken build (a node serves without a lease):
// one follower is cut off for longer than the lease while revocations continue, so the broken
// node keeps using revoked keys.
func BrokenScenario() Scenario {
	return Scenario{Name: "broken-no-lease", Nodes: 3, Duration: 25 * time.Second, Nemeses: []string{PartitionFollower}}
}

// BrokenRestoreScenario is run against the second broken build (-tags
// krypton_unsafe_restore_ungated: revocations do not survive a restore): the backup saved after
// the warm-up is restored again and again once revocations it lacks were acknowledged, so keys
// revoked since are usable again and writes acknowledged since are lost.
func BrokenRestoreScenario() Scenario {
	return Scenario{Name: "broken-restore-ungated", Nodes: 3, Duration: 20 * time.Second, Nemeses: []string{SnapshotRestore}}
}

// BrokenMultiRegionScenario is BrokenScenario in multi-region mode (one governance node): the
// follower cut off is in either region, so a node of the region that does not make the shared
// tenant's keys keeps using versions revoked at governance just as well.
func BrokenMultiRegionScenario() Scenario {
	sc := BrokenScenario()
	sc.Name, sc.Governance, sc.Regions = "broken-no-lease-multi-region", 1, 2
	return sc
}

// BrokenGovernanceScenario is BrokenScenario with the region fed by a one-node governance plane
// and every revocation issued there (governanceRevoker): a region reports a governance event only
// after its fence, which a node serving without a lease defeats just the same.
func BrokenGovernanceScenario() Scenario {
	sc := BrokenScenario()
	sc.Name, sc.Governance = "broken-no-lease-governance", 1
	return sc
}
