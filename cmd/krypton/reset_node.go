package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// resetNodeCommand moves a stopped node's damaged state aside, so that the node starts empty and
// rejoins from the leader's snapshot (docs/operations.md, "A node's state is damaged"). It runs on
// the node's machine, on its data directory, without a server: a node whose Raft store or
// revocation set is corrupted does not start, so nothing could answer a call.
func resetNodeCommand() *command {
	var dataDir string
	return &command{
		name: "reset-node", synopsis: "move a stopped node's damaged state aside so that it rejoins from the leader's snapshot",
		help: "Moves the data directory of a stopped node (-data-dir) aside to <dir>.damaged-<time>, kept as evidence (its audit log\n" +
			"among it). Refused while a process holds the node's files. The procedure: remove the node from the region on a healthy node\n" +
			"(`krypton operator raft remove-peer <node-id>`), run this on the node's machine, start the node with its usual flags\n" +
			"(-bootstrap-expect 0), then `krypton operator raft join <node-id> <raft-addr>`: it receives the leader's snapshot and serves.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&dataDir, "data-dir", "", "the stopped node's -data-dir")
		},
		run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() != 0 || dataDir == "" {
				return usagef("operator reset-node: want -data-dir <dir> and no arguments")
			}
			moved, err := resetNode(dataDir, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "Moved the state of %s aside to %s.\n"+
				"Next: if not done yet, `krypton operator raft remove-peer <node-id>` on a healthy node; then start this node\n"+
				"with its usual flags (-bootstrap-expect 0) and `krypton operator raft join <node-id> <raft-addr>`:\n"+
				"it rejoins from the leader's snapshot.\n", dataDir, moved)
			return nil
		},
	}
}

// nodeFiles are the files of a node's data directory that a running node holds locked (bbolt
// takes an exclusive flock on each).
var nodeFiles = []string{filepath.Join("raft", "raft.db"), "revocations.db"}

// resetNode renames dataDir to dataDir.damaged-<now>, after checking that it is a node's data
// directory and that no process holds its files.
func resetNode(dataDir string, now time.Time) (string, error) {
	dataDir = filepath.Clean(dataDir)
	st, err := os.Stat(dataDir)
	if err != nil {
		return "", fmt.Errorf("operator reset-node: %w (give the node's -data-dir)", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("operator reset-node: %s is not a directory (give the node's -data-dir)", dataDir)
	}
	found := false
	for _, name := range nodeFiles {
		path := filepath.Join(dataDir, name)
		held, err := lockedByOther(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("operator reset-node: %w", err)
		}
		found = true
		if held {
			return "", fmt.Errorf("operator reset-node: %s is in use: the node still runs on %s; stop it first", path, dataDir)
		}
	}
	if !found {
		return "", fmt.Errorf("operator reset-node: %s holds neither raft/raft.db nor revocations.db: not a node's data directory (give the node's -data-dir)", dataDir)
	}
	moved := fmt.Sprintf("%s.damaged-%s", dataDir, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(dataDir, moved); err != nil {
		return "", fmt.Errorf("operator reset-node: moving %s aside: %w (a mount point cannot be renamed: move its contents elsewhere by hand)", dataDir, err)
	}
	return moved, nil
}

// lockedByOther reports whether another process holds path's flock, as a running node's bbolt
// does. (A shared flock probe taken and dropped at once: bbolt's exclusive lock refuses it.)
func lockedByOther(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return true, nil
		}
		return false, fmt.Errorf("checking whether %s is in use: %w", path, err)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false, nil
}
