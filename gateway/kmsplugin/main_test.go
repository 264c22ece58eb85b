package kmsplugin_test

import (
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 10*time.Second) }
