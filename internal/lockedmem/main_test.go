package lockedmem

import (
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/leaktest"
)

// TestMain fails the run if the tests leave goroutines behind.
func TestMain(m *testing.M) {
	leaktest.VerifyTestMain(m, 10*time.Second)
}
