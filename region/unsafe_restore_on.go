//go:build krypton_unsafe_restore_ungated

package region

// unsafeRestoreUngated: this is the chaos suite's second deliberately broken build
// (jepsen/broken_test.go, TestBrokenBuildCaught with -long). Never ship it: revocations do not
// survive a restore. The leader restores any snapshot of its region whatever revocations it
// lacks, followers install it from the leader unchecked, and the wrap path does not consult the
// durable revocation set, so an old snapshot makes keys revoked since usable again.
const unsafeRestoreUngated = true
