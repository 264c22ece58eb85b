//go:build krypton_unsafe_no_lease

package region

// unsafeServeWithoutLease: this is the deliberately broken build of the chaos suite's own test
// (jepsen/broken_test.go). Never ship it: a node serves wraps whether or not it holds a lease, so a
// partitioned node keeps using keys revoked after it was cut off.
const unsafeServeWithoutLease = true
