package region_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor/pkcs11/pkcs11test"
	"github.com/kryptonkms/krypton/internal/leaktest"
)

// softHSM is SoftHSM2, set up before the process's one C_Initialize, for the tests that put a
// tenant on a PKCS#11 anchor (anchors_test.go); nil, with softHSMMissing saying why, when SoftHSM2
// is not installed and KRYPTON_REQUIRE_PEERS is not "1".
var (
	softHSM        *pkcs11test.HSM
	softHSMMissing string
)

// TestMain sets up SoftHSM2 and fails the run if the region's tests leave goroutines behind.
func TestMain(m *testing.M) {
	if err := pkcs11test.Missing(); err != nil {
		if pkcs11test.Required() {
			fmt.Fprintf(os.Stderr, "region: SoftHSM2 is required (KRYPTON_REQUIRE_PEERS=1): %v\n", err)
			os.Exit(1)
		}
		softHSMMissing = err.Error()
		leaktest.VerifyTestMain(m, 10*time.Second)
		return
	}
	dir, err := os.MkdirTemp("", "krypton-region-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if softHSM, err = pkcs11test.Setup(dir); err != nil {
			fmt.Fprintln(os.Stderr, "region: SoftHSM2 setup:", err)
			return 1
		}
		code := m.Run()
		softHSM.Close()
		if code == 0 {
			if err := leaktest.Check(10 * time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "leaktest: goroutines left behind after 10s:\n%v\n", err)
				code = 1
			}
		}
		return code
	}()
	os.Exit(code)
}
