package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/kryptonkms/krypton/cmd/krypton/internal/snapfile"
	"github.com/kryptonkms/krypton/governance"
	"google.golang.org/protobuf/types/known/timestamppb"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Scheduled backups (krypton server and krypton governance server -snapshot-interval): every
// interval the node takes a consistent snapshot of its state in-process, the one `krypton
// snapshot save` streams, and writes it to -snapshot-dir in the same file format
// (cmd/krypton/internal/snapfile; docs/operations.md, "Backups: the snapshot file"), mode 0600,
// atomically. The state holds sealed blobs only, never an unsealed key. It then removes the oldest
// of its own files beyond -snapshot-retain; other files in the directory are never touched.

// snapshotFlags are a node's scheduled-backup flags.
type snapshotFlags struct {
	dir      string
	interval time.Duration
	retain   int
}

func (f *snapshotFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "snapshot-dir", "", "directory for scheduled snapshots (created mode 0700; default DATA-DIR/snapshots; put it on another disk, and copy the files off the machine)")
	fs.DurationVar(&f.interval, "snapshot-interval", 0, "take a snapshot into -snapshot-dir this often (e.g. 1h); 0 (the default) takes none")
	fs.IntVar(&f.retain, "snapshot-retain", 24, "how many scheduled snapshots to keep: older ones are removed after each new one")
}

// snapshotSchedule is a running schedule's settings.
type snapshotSchedule struct {
	dir      string
	prefix   string // "region-<name>" or "governance": names the files, and the only ones pruned
	interval time.Duration
	retain   int
	take     func(ctx context.Context) (*kv1.SnapshotMeta, []byte, error)
	log      *slog.Logger
	now      func() time.Time // time.Now; tests step it
}

// schedule checks the flags and returns the schedule, or nil when -snapshot-interval is 0.
// The caller sets take once the node runs.
func (f *snapshotFlags) schedule(cmd, dataDir, prefix string, log *slog.Logger) (*snapshotSchedule, error) {
	switch {
	case f.interval < 0:
		return nil, usagef("%s: -snapshot-interval %v is negative; give 0 to take no scheduled snapshots", cmd, f.interval)
	case f.interval == 0:
		return nil, nil
	case f.interval < time.Second:
		return nil, usagef("%s: -snapshot-interval %v is under a second; give e.g. 1h", cmd, f.interval)
	case f.retain < 1:
		return nil, usagef("%s: -snapshot-retain %d: keep at least 1 snapshot", cmd, f.retain)
	}
	dir := f.dir
	if dir == "" {
		dir = filepath.Join(dataDir, "snapshots")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, usagef("%s: -snapshot-dir: %v", cmd, err)
	}
	return &snapshotSchedule{dir: dir, prefix: prefix, interval: f.interval, retain: f.retain, log: log, now: time.Now}, nil
}

// run takes a snapshot every interval until ctx ends. A failure is logged and the next round
// tries again; a node without a leader cannot take one (the snapshot starts with a read barrier).
func (s *snapshotSchedule) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, max(s.interval, time.Minute))
		path, err := s.saveOnce(tctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("scheduled snapshot failed; trying again at the next interval", "dir", s.dir, "err", err)
			}
			continue
		}
		s.log.Info("scheduled snapshot saved", "file", path)
	}
}

// fileName is a scheduled snapshot's name: the prefix, the UTC time to the second and the index,
// so that names sort oldest first.
func (s *snapshotSchedule) fileName(now time.Time, index uint64) string {
	return fmt.Sprintf("%s-%s-%d.snap", s.prefix, now.UTC().Format("20060102T150405Z"), index)
}

// saveOnce takes one snapshot, writes it and prunes the old ones; it returns the file's path.
func (s *snapshotSchedule) saveOnce(ctx context.Context) (string, error) {
	meta, data, err := s.take(ctx)
	if err != nil {
		return "", err
	}
	defer clear(data)
	now := s.now()
	path := filepath.Join(s.dir, s.fileName(now, meta.GetIndex()))
	err = writeFileAtomic(path, false, func(f *os.File) error {
		w, err := snapfile.NewWriter(f, meta, now)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		return w.Close()
	})
	if err != nil {
		return "", err
	}
	return path, s.prune()
}

// prune removes the oldest of the schedule's own files beyond retain.
func (s *snapshotSchedule) prune() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	// Only names fileName makes: region "eu" must not prune region "eu-west"'s files.
	own := regexp.MustCompile(`^` + regexp.QuoteMeta(s.prefix) + `-[0-9]{8}T[0-9]{6}Z-[0-9]+\.snap$`)
	var mine []string
	for _, e := range ents {
		if n := e.Name(); e.Type().IsRegular() && own.MatchString(n) {
			mine = append(mine, n)
		}
	}
	slices.Sort(mine)
	var errs []error
	for len(mine) > s.retain {
		if err := os.Remove(filepath.Join(s.dir, mine[0])); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		mine = mine[1:]
	}
	return errors.Join(errs...)
}

// governanceSnapshot takes n's snapshot (governance.Node.Snapshot) with its metadata.
func governanceSnapshot(n *governance.Node) func(ctx context.Context) (*kv1.SnapshotMeta, []byte, error) {
	return func(ctx context.Context) (*kv1.SnapshotMeta, []byte, error) {
		var buf bytes.Buffer
		if err := n.Snapshot(ctx, &buf); err != nil {
			return nil, nil, err
		}
		meta, err := governanceSnapshotMeta(buf.Bytes())
		return meta, buf.Bytes(), err
	}
}

// governanceSnapshotMeta is the metadata of a governance snapshot (cluster.Snapshot's format):
// the Raft index and term from its header (docs/operations.md, "The file format"), and no region,
// so that no region's restore accepts it.
func governanceSnapshotMeta(data []byte) (*kv1.SnapshotMeta, error) {
	if len(data) < 32 || string(data[:8]) != "KRYSNAP1" {
		return nil, errors.New("governance snapshot: not a cluster snapshot")
	}
	return &kv1.SnapshotMeta{Index: binary.BigEndian.Uint64(data[8:16]), Term: binary.BigEndian.Uint64(data[16:24]), Size: uint64(len(data)), CreatedAt: timestamppb.Now()}, nil
}
