package gateway

// SetFramedMaxPending lowers framedMaxPending for a test and puts it back after.
func SetFramedMaxPending(n int) (restore func()) {
	old := framedMaxPending
	framedMaxPending = n
	return func() { framedMaxPending = old }
}
