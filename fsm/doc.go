// Package fsm is the region's deterministic state machine: tenants, their L1
// anchors and sealed L2 versions, services and their sealed L3 key versions,
// each tenant's access policy and owner key, the revocation log with the governance
// cursor, replicated region settings
// and a request-id dedupe table. It holds sealed blobs only; no plaintext
// key ever enters it.
//
// State applies Entries: a Command (CreateTenant, RotateTenantKey,
// CreateService, RotateServiceKey, RevokeTenant, RevokeService,
// RevokeKeyVersion, LockTenant, UnlockTenant, SetAnchor, DeleteAnchor,
// SetPolicy, ResyncTenant, ApplyGovernanceEvent, SetSettings, SetOwnerKey, CompactRevocations) with a request id and the leader's
// clock. Everything a command needs (sealed blobs, versions, the time) is
// chosen by the leader before it proposes, so Apply does no I/O and reads
// no clock or randomness: every node that applies the same log reaches the
// same state and the same Hash. Apply returns a Result or a refusal, an
// *Error wrapping one of the sentinels (ErrRevoked, ErrLocked, ...); a
// refused command changes nothing.
//
// FSM wraps a State as a raft.FSM: it decodes log entries (panicking on one
// it cannot decode, rather than diverging), takes copy-on-write snapshots
// and restores them. EncodeResponse and DecodeResponse carry its responses
// between nodes, errors as stable codes.
//
// The serving path asks Usable before every wrap or unwrap; it is safe to
// call concurrently with Apply and costs a read lock and three lookups.
// Options.OnChange tells the region, synchronously and in log order, about
// every change, so that it can wipe its keyring on a revocation or lockout
// before AppliedIndex says the revocation was applied.
//
// A region wires it up roughly so:
//
//	f := fsm.New(fsm.Options{OnChange: keyring.OnChange}) // must not block
//	r, err := raft.NewRaft(conf, f, logs, stable, snaps, trans)
//	...
//	// On the leader: seal a new L3 under the current L2, then propose.
//	cur, _ := f.State().CurrentVersion("acme", "payments")
//	data, _ := fsm.Encode(fsm.Entry{
//		RequestID: reqID, // retries with the same id apply once
//		At:        time.Now().UnixNano(),
//		Command: fsm.RotateServiceKey{Tenant: "acme", Service: "payments",
//			Version: cur + 1, SealedL3: sealed, SealedBy: l2Version},
//	})
//	resp := r.Apply(data, timeout).Response() // fsm.Result or error
//
//	// On any node, per request:
//	v, err := f.State().Usable("acme", "payments", 0, fsm.OpWrap)
//
// See DESIGN.md for why it is built this way.
package fsm
