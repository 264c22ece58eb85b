// Package jepsen is Krypton's black-box chaos harness, after Jepsen and etcd's robustness tests:
// it runs real `krypton server` processes (as root, each in its own network namespace), drives
// concurrent clients through the public gRPC API (create, rotate and revoke keys; wrap and unwrap
// on every node), injects faults (kills, pauses, partitions, lossy links, membership changes,
// leadership transfers, a failing L1 anchor, a full, slow or corrupted disk, a wall clock stepped
// by hours), records every operation, and checks the history:
// linearizability of each key with porcupine, the revocation fence (once RevokeKey returns no
// node uses the key), durability of every acknowledged write on every node, and no data key on
// disk. A scenario may run the region fed by real governance nodes and revoke there
// (Scenario.Governance). Each run writes a report directory. DESIGN.md says what is checked and why.
//
//	res, err := jepsen.Run(ctx, jepsen.ShortSchedule()[0], jepsen.Options{Binary: "bin/krypton", Dir: dir, Seed: 1})
//	if err == nil && !res.OK() {
//		fmt.Print(res.Text())
//	}
//
// `make test` runs ShortSchedule; `make jepsen` runs LongSchedule.
package jepsen
