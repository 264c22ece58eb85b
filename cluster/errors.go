package cluster

import (
	"errors"
	"fmt"
)

var (
	// ErrShutdown is returned when the cluster has been shut down (by
	// Shutdown, Leave, or Raft removing this node) and by every call made
	// after that.
	ErrShutdown = errors.New("cluster: shut down")
	// ErrNoLeader is returned when no leader is known before the context
	// ends.
	ErrNoLeader = errors.New("cluster: no leader")
	// ErrNotLeader is returned when an operation that only the leader can
	// perform reaches a node that is not (or no longer) the leader. The
	// operation was not performed; retrying is safe.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrLeadershipLost is returned when the leader lost its leadership
	// while an Apply was in flight. The outcome is unknown: the command may
	// still be committed and applied. Commands should carry a request id so
	// that a retry is idempotent.
	ErrLeadershipLost = errors.New("cluster: leadership lost, outcome unknown")
	// ErrForward is returned when a request forwarded to the leader got no
	// answer (connection lost, bad frame). For Apply the outcome is
	// unknown, as with ErrLeadershipLost.
	ErrForward = errors.New("cluster: forwarding to the leader failed")
	// ErrBadSnapshot is returned when a snapshot given to Restore is
	// malformed or fails its checksum.
	ErrBadSnapshot = errors.New("cluster: bad snapshot")
	// ErrRejected is returned when the leader refused a forwarded request
	// for a reason other than those above; the message says why. A join
	// whose node cannot be reached, or presents a certificate of another
	// node or region, is refused with it.
	ErrRejected = errors.New("cluster: request rejected")
	// ErrBadAddress is returned by Join for a Raft address that is not
	// host:port (a host and a port from 1 to 65535).
	ErrBadAddress = errors.New("cluster: malformed Raft address")
	// ErrUnknownServer is returned by Remove for a node that is not in the
	// Raft configuration; nothing was written to the log.
	ErrUnknownServer = errors.New("cluster: no such server in the Raft configuration")
	// ErrSnapshotRefused, wrapped in the error of an FSM's RestoreKind, says the FSM refuses
	// that snapshot for its content: the cluster then takes it out of the snapshot store
	// (moving it to DataDir/snapshots-refused), so that it is neither restored at the next
	// start nor sent to other nodes as this node's newest.
	ErrSnapshotRefused = errors.New("cluster: snapshot refused by the state machine")
)

// ConfigError names the Config field that Validate rejected.
type ConfigError struct {
	Field  string // e.g. "RaftAddr"
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("cluster: config %s: %s", e.Field, e.Reason)
}
