package logtest_test

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/kryptonkms/krypton/internal/logtest"
)

// TestLateLineDropped: a line written after its test and every parent have completed is dropped,
// where t.Log would panic and fail the package with no test named. The inner test runs in its own
// testing.RunTests, so that its parents complete as TestMain's do once m.Run returns.
func TestLateLineDropped(t *testing.T) {
	var w *logtest.Writer
	tests := []testing.InternalTest{{Name: "Inner", F: func(t *testing.T) {
		w = logtest.New(t)
		fmt.Fprintln(w, "during the test")
	}}}
	if !testing.RunTests(func(string, string) (bool, error) { return true, nil }, tests) {
		t.Fatal("the inner test failed")
	}
	// The inner test and its parents are done: t.Log would panic here.
	slog.New(slog.NewTextHandler(w, nil)).Warn("after the test")
	if n, err := w.Write([]byte("again\n")); n != 6 || err != nil {
		t.Fatalf("late Write = %d, %v; want 6, nil", n, err)
	}
}
