//go:build !krypton_unsafe_restore_ungated

package region

// unsafeRestoreUngated is false in every real build. The chaos suite (jepsen/) builds a broken
// binary with -tags krypton_unsafe_restore_ungated, in which a restored snapshot may lack
// revocations the region holds (DESIGN.md, "Revocations survive every restore": the gate, the
// followers' check and the durable set on the wrap path are all off), to show that its
// snapshot-restore nemesis and checkers catch a revoked key used again. A build tag rather than
// a flag, so that no production binary can be started in this mode by mistake.
const unsafeRestoreUngated = false
