// Package leaktest fails a test binary whose tests leave goroutines behind: every goroutine must
// have an owner that stops it. It runs go.uber.org/goleak's check again and again for a grace
// period, because some libraries' goroutines end a little after their Shutdown returns
// (memberlist's probes, gRPC's transports).
package leaktest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Ignored are goroutines that are not the tests' to stop.
var Ignored = []goleak.Option{
	// memguard starts one background goroutine when it loads; it lives as long as the process.
	goleak.IgnoreAnyFunction("github.com/awnumar/memguard/core.init.0.func1"),
	// glog/klog-style flush daemons and the testing framework's own.
	goleak.IgnoreTopFunction("testing.(*T).Run"),
}

// VerifyTestMain runs m and then, if the tests passed, fails the run when goroutines are still
// running after grace. Use it as TestMain: func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }.
func VerifyTestMain(m *testing.M, grace time.Duration, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := wait(grace, append(append([]goleak.Option{}, Ignored...), opts...)); err != nil {
			fmt.Fprintf(os.Stderr, "leaktest: goroutines left behind after %v:\n%v\n", grace, err)
			code = 1
		}
	}
	os.Exit(code)
}

// Check runs the same check as VerifyTestMain once the tests have run, for a TestMain that has
// more to do before it exits (release a module, remove a directory): it returns an error naming
// the goroutines still running after grace, or nil.
func Check(grace time.Duration, opts ...goleak.Option) error {
	return wait(grace, append(append([]goleak.Option{}, Ignored...), opts...))
}

func wait(grace time.Duration, opts []goleak.Option) error {
	deadline := time.Now().Add(grace)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
