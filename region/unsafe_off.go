//go:build !krypton_unsafe_no_lease

package region

// unsafeServeWithoutLease is false in every real build. The chaos suite (jepsen/) builds a broken
// binary with -tags krypton_unsafe_no_lease, in which a node serves wraps without a serving lease,
// to show that its checkers catch a revoked key being used. A build tag rather than a flag, so
// that no production binary can be started in this mode by mistake.
const unsafeServeWithoutLease = false
