package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Recover rewrites the Raft state of a stopped node so that it starts as the only voter of its
// region, with every write it holds (docs/operations.md, "A region lost its quorum"). It is
// hashicorp/raft's RecoverCluster, the library's manual-recovery path (its peers.json), run
// offline on the node's DataDir: the state is the newest snapshot and every log entry after it,
// committed or not, replayed through fsm (a fresh state machine, discarded afterwards: the node
// restores the snapshot Recover writes when it starts), stored as a new snapshot that carries the
// one-voter configuration; the log is then emptied.
//
// Only for a region that has lost its quorum for good: writes the lost voters held and this node
// did not are gone, and if a lost voter comes back it must be reset (krypton operator
// reset-node) and joined, never started on its old state.
func Recover(dataDir, nodeID, raftAddr string, fsm raft.FSM) error {
	if nodeID == "" || raftAddr == "" {
		return errors.New("cluster: recover: the node's id and Raft address are needed")
	}
	path := filepath.Join(dataDir, "raft", "raft.db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("cluster: recover: %w (give the node's -data-dir)", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("cluster: recover: %s is in use: the node still runs; stop it first", path)
		}
		return fmt.Errorf("cluster: recover: open raft store: %w", DamagedState(path, dataDir, err))
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, newHCLogger(discardLogger(), "raft"))
	if err != nil {
		return fmt.Errorf("cluster: recover: snapshot store: %w", err)
	}
	is := &indexingStore{SnapshotStore: snaps}
	tf := newTrackingFSM(fsm)
	tf.store = is
	tf.starting.Store(true) // the node's own snapshot, then its log: as at a start
	// The transport only encodes the configuration's addresses into the new snapshot (an
	// in-memory one encodes them as the network transport does: the address's bytes).
	_, trans := raft.NewInmemTransport(raft.ServerAddress(raftAddr))
	defer trans.Close()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(nodeID)
	rc.Logger = newHCLogger(discardLogger(), "raft")
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(nodeID), Address: raft.ServerAddress(raftAddr)}}}
	if err := raft.RecoverCluster(rc, tf, store, store, is, trans, conf); err != nil {
		return fmt.Errorf("cluster: recover: %w", err)
	}
	return nil
}
