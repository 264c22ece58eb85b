package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestScheduledSnapshots: a region node's scheduled snapshots are `krypton snapshot save` files
// (snapfile.Check accepts them), mode 0600 in a 0700 directory, holding no plaintext data key;
// beyond -snapshot-retain the oldest of the schedule's own files are removed, and nothing else in
// the directory (another region's files, an operator's) is touched. The loop itself takes them
// every interval and stops with its context. Bad flags are refused before the node starts.
func TestScheduledSnapshots(t *testing.T) {
	r := regiontest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := r.AdminClient(0)
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "k", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	dk, err := r.ServingWrapClient(0, "acme", "payments").GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}})
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "backups")
	f := snapshotFlags{dir: dir, interval: time.Hour, retain: 2}
	s, err := f.schedule("server", r.Dir, "region-dev", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.take = r.Nodes[0].Snapshot
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("snapshot dir: %v %v, want mode 0700", st, err)
	}
	others := []string{"notes.txt", "region-dev-west-20000101T000000Z-1.snap"}
	for _, o := range others {
		if err := os.WriteFile(filepath.Join(dir, o), []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clock := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { clock = clock.Add(time.Minute); return clock }
	var saved []string
	for range 4 {
		p, err := s.saveOnce(ctx)
		if err != nil {
			t.Fatalf("saveOnce: %v", err)
		}
		saved = append(saved, filepath.Base(p))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := append(slices.Clone(others), saved[2:]...)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("after 4 snapshots with -snapshot-retain 2 the directory holds %v, want %v", names, want)
	}
	for _, n := range saved[2:] {
		p := filepath.Join(dir, n)
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", n, st, err)
		}
		meta, _, err := readSnapshotFile(p)
		if err != nil || meta.GetRegion() != r.Cfgs[0].Region || meta.GetIndex() == 0 {
			t.Fatalf("%s is not a snapshot file of the region: %v %v", n, meta, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, dk.GetPlaintext()) {
			t.Fatalf("%s holds a plaintext data key", n)
		}
	}

	// The loop: a snapshot every interval until its context ends.
	loopDir := filepath.Join(t.TempDir(), "loop")
	if err := os.Mkdir(loopDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ls := *s
	ls.dir, ls.interval, ls.retain = loopDir, 10*time.Millisecond, 1
	lctx, lcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ls.run(lctx) }()
	clustertest.Eventually(t, 30*time.Second, "the schedule saves a snapshot", func() bool {
		e, _ := os.ReadDir(loopDir)
		return len(e) == 1 && filepath.Ext(e[0].Name()) == ".snap"
	})
	lcancel()
	<-done

	for _, bad := range []snapshotFlags{{interval: -time.Second, retain: 1}, {interval: time.Millisecond, retain: 1}, {interval: time.Hour, retain: 0}} {
		if _, err := bad.schedule("server", t.TempDir(), "region-dev", nil); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if s, err := (&snapshotFlags{retain: 0}).schedule("server", t.TempDir(), "x", nil); s != nil || err != nil {
		t.Errorf("-snapshot-interval 0 = %v, %v; want no schedule", s, err)
	}
}

// TestScheduledGovernanceSnapshot: a governance node's scheduled snapshot is a snapshot file whose
// metadata carries the Raft index and no region, so that no region's restore accepts it.
func TestScheduledGovernanceSnapshot(t *testing.T) {
	g := governancetest.Start(t, 1)
	s, err := (&snapshotFlags{dir: t.TempDir(), interval: time.Hour, retain: 1}).schedule("governance server", "", "governance", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.take = governanceSnapshot(g.Nodes[0])
	p, err := s.saveOnce(g.Context(30 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	meta, _, err := readSnapshotFile(p)
	if err != nil || meta.GetRegion() != "" || meta.GetIndex() == 0 || meta.GetTerm() == 0 {
		t.Fatalf("governance snapshot %s: %v %v", p, meta, err)
	}
	if _, err := governanceSnapshotMeta([]byte("not a snapshot at all, not one bit")); err == nil {
		t.Error("governanceSnapshotMeta accepted garbage")
	}
}
