package main

import (
	"flag"
	"io"
	"log/slog"
	"runtime/debug"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
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
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := g.apply(log); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("no -gc-percent changed GOGC to %d", got)
	}
	if err := fs.Parse([]string{"-gc-percent", "250"}); err != nil {
		t.Fatal(err)
	}
	if err := g.apply(log); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetGCPercent(100); got != 250 {
		t.Fatalf("-gc-percent 250 set GOGC to %d", got)
	}
	if err := fs.Parse([]string{"-gc-percent", "-1"}); err != nil {
		t.Fatal(err)
	}
	if err := g.apply(log); err == nil {
		t.Error("-gc-percent -1 accepted")
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("a refused -gc-percent changed GOGC to %d", got)
	}
}
