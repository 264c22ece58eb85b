package gateway

import "github.com/kryptonkms/krypton/wrap"

// SetFramedMaxPending lowers framedMaxPending for a test and puts it back after.
func SetFramedMaxPending(n int) (restore func()) {
	old := framedMaxPending
	framedMaxPending = n
	return func() { framedMaxPending = old }
}

// RotatedForTest hands the delegated keys a ROTATED key event naming id.
func (g *Gateway) RotatedForTest(id wrap.KeyID) { g.delegated.rotated(id) }

// ResetForTest hands the cache and the delegated keys what a FLUSH or a new stream's snapshot
// does: everything wiped, nothing denied.
func (g *Gateway) ResetForTest() { g.watch.reset(nil) }
