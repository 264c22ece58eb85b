package main

import (
	"flag"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/internal/gcfloor"
)

func TestRaftTuning(t *testing.T) {
	c := cluster.DefaultConfig()
	(&raftTuning{}).apply(&c)
	d := cluster.DefaultConfig()
	if c.HeartbeatTimeout != d.HeartbeatTimeout || c.ElectionTimeout != d.ElectionTimeout || c.LeaderLeaseTimeout != d.LeaderLeaseTimeout ||
		c.SnapshotThreshold != d.SnapshotThreshold || c.SnapshotInterval != d.SnapshotInterval || c.TrailingLogs != d.TrailingLogs {
		t.Fatal("zero tuning changed the defaults")
	}
	tu := raftTuning{heartbeat: 200 * time.Millisecond, election: 300 * time.Millisecond, snapshotThreshold: 16, trailingLogs: 8, snapshotInterval: time.Second}
	tu.apply(&c)
	if c.HeartbeatTimeout != 200*time.Millisecond || c.ElectionTimeout != 300*time.Millisecond || c.SnapshotThreshold != 16 || c.TrailingLogs != 8 || c.SnapshotInterval != time.Second {
		t.Fatalf("tuning not applied: %+v", c)
	}
	// The default leader lease (500 ms) would exceed a 200 ms heartbeat and fail validation.
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		t.Fatalf("leader lease %s exceeds the heartbeat %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
}

func TestGCTuning(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	var g gcTuning
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.declare(fs)
	apply := func(args ...string) error {
		t.Helper()
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		stop, err := g.apply("server", log)
		if err == nil {
			t.Cleanup(stop)
			stop() // the checks below read GOGC as the flags set it, without the floor
		}
		return err
	}
	if g.headroomMiB != 64 {
		t.Fatalf("-gc-headroom-mib defaults to %d, want 64", g.headroomMiB)
	}
	if err := apply(); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("no -gc-percent changed GOGC to %d", got)
	}
	if err := apply("-gc-percent", "250"); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(100); got != 250 {
		t.Fatalf("-gc-percent 250 set GOGC to %d", got)
	}
	for _, bad := range [][]string{{"-gc-percent", "-1"}, {"-gc-percent", "0", "-gc-headroom-mib", "-1"}} {
		if err := apply(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
		if got := debug.SetGCPercent(100); got != 100 {
			t.Fatalf("a refused %v changed GOGC to %d", bad, got)
		}
	}
	// The floor itself: a headroom larger than any test's heap raises GOGC past -gc-percent.
	if err := fs.Parse([]string{"-gc-percent", "0", "-gc-headroom-mib", "4096"}); err != nil {
		t.Fatal(err)
	}
	stop, err := g.apply("server", log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	runtime.GC()
	clustertest.Eventually(t, 10*time.Second, "GOGC raised by the floor", func() bool {
		runtime.GC()
		return gcfloor.Percent() > 100
	})
	stop()
	if got := gcfloor.Percent(); got != 100 {
		t.Fatalf("stopping the floor left GOGC at %d", got)
	}
}
