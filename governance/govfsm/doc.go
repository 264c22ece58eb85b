// Package govfsm is governance's deterministic state machine, as package fsm is the region's:
// tenants with their anchor pointer, regions, owner key and consents used, services, each tenant's
// access policy, the event log every region follows, the regions' reports and a request-id dedupe
// table. It holds no key material.
//
// FSM applies Commands (Op: create-tenant, create-service, set-anchor, delete-anchor, set-policy,
// set-owner, revoke, lock, unlock, resync, report). Everything a command needs that is not
// deterministic (the time, the event id) is chosen by the node that proposes it, so Apply does no
// I/O and reads no clock or randomness: every node that applies the same log reaches the same
// state. Apply returns a *Result whose Err, if set, is one of this package's sentinels; a refused
// command changes nothing. Codec carries a Result between nodes, its error as the sentinel's stable
// key.
//
// The errors carry no gRPC code: governance's API maps each to one (governance/errors.go,
// fsmCodes), as transport's table does for package fsm; those the region's state machine makes too
// (tenant not found, revoked, ...) are defined once in internal/staterr and mapped by transport's
// table for both planes. The package links no RPC, cluster or API
// code (internal/deptest holds it to that); governance wraps FSM for the cluster's restore kinds
// (governance.StateMachine) and turns its values into API messages (governance/proto.go).
// governance/DESIGN.md says why the state is what it is.
package govfsm
