package cluster

import (
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// DamagedState names the fix when a bbolt file of a node's state (path, in dataDir) cannot be
// opened because it is corrupted: bbolt's own checks (meta page magic, version and checksum)
// refused it. Any other error (a lock held by another process, a permission) is returned as is.
// A damaged node does not repair its state: it is removed from the region, its state is moved
// aside, and it rejoins from the leader's snapshot (docs/operations.md, "A node's state is
// damaged").
func DamagedState(path, dataDir string, err error) error {
	if !errors.Is(err, bbolt.ErrInvalid) && !errors.Is(err, bbolt.ErrChecksum) && !errors.Is(err, bbolt.ErrVersionMismatch) {
		return err
	}
	return fmt.Errorf("%s is damaged (%w); this node's state cannot be used. To rejoin it from the leader's snapshot: "+
		"`krypton operator raft remove-peer <node-id>` on a healthy node, then `krypton operator reset-node -data-dir %s` here "+
		"(moves the state aside, kept as evidence), start the node again and `krypton operator raft join <node-id> <raft-addr>` "+
		"(docs/operations.md, \"A node's state is damaged\")", path, err, dataDir)
}
