// Package wrap is the cryptography of Krypton's key hierarchy: key
// identities, key types that cannot leak, and the sealed and wrapped blob
// format.
//
// A tenant key (L2, TenantKey) seals service keys (L3, ServiceKey); a
// service key wraps data keys (L4, DataKey). Every seal or wrap derives a
// one-time AES-256-GCM key from the parent key and 32 random salt bytes,
// and binds the blob to the parent's identity (tenant, service, version)
// and to the caller's context, so that a blob made for one tenant, service,
// version or context never opens under another.
//
// The L2 handoff from a region's leader to a follower is here too (handoff.go): SealHandoff
// seals a TenantKey with HPKE to a one-time key pair of the follower, HandoffRecipient.Open opens
// it straight into a TenantKey.
//
// Names: ValidateName is the one definition of a tenant or service name
// in Krypton; KeyID names one key version.
//
// It is also where the process's locked memory is counted (locked.go): every
// memguard buffer is made here, against a budget of RLIMIT_MEMLOCK, so that
// an mlock never fails (memguard would purge every key and panic).
//
// wrap imports only the standard library, memguard and x/sys/unix (for
// getrlimit and capget). It never logs, and
// none of its errors carries key bytes or echoes the bytes of a blob. See
// DESIGN.md next to this file for why it is built the way it is, and
// docs/format.md for the blob format.
package wrap
