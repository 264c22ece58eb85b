// Package region runs one node of a region: the keyring of unsealed L2 and L3 keys (RAM only,
// in memguard), the leader's duties (unsealing each tenant's L2 through its anchor, checking L1 every
// period, following the governance feed, handing key material to followers), serving leases, the
// access policy governance sets per tenant, and the wrap service that every node serves. It builds
// on cluster (Raft and gossip) and fsm (the state). See docs/architecture.md for where it sits
// among the planes, and DESIGN.md here for why it is built this way.
package region
