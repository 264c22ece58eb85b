package cluster_test

import (
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/leaktest"
)

// TestMain fails the run if goroutines outlive the tests: every goroutine must have an owner that
// stops it. memberlist's probe goroutines end up to a probe timeout after Shutdown, hence the grace.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }
