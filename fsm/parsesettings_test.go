package fsm_test

import (
	"testing"
	"time"

	"github.com/kryptonkms/krypton/fsm"
)

func TestParseSettings(t *testing.T) {
	s, err := fsm.ParseSettings("lease-duration=2s, anchor-check-period=500ms,anchor-grace-period=0s,dedupe-window=100")
	if err != nil {
		t.Fatal(err)
	}
	want := fsm.DefaultSettings()
	want.LeaseDuration, want.AnchorCheckPeriod, want.AnchorGracePeriod, want.DedupeWindow = 2*time.Second, 500*time.Millisecond, 0, 100
	if *s != want {
		t.Fatalf("got %+v, want %+v", *s, want)
	}
	if s, err := fsm.ParseSettings(" "); s != nil || err != nil {
		t.Fatalf("empty: got %v, %v; want none", s, err)
	}
	for _, bad := range []string{"lease-duration", "lease-duration=soon", "lease=2s", "lease-duration=0s", "dedupe-window=x", "dedupe-window=100x"} {
		if _, err := fsm.ParseSettings(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
