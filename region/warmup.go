package region

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/wrap"
)

// Key warm-up (DESIGN.md, "Key warm-up"). A restarted node starts with an empty keyring: without
// warm-up its first calls on every key each pay an open (an L3 from its sealed blob, and the L2
// from the leader or the anchor first), all at once. So a node writes the IDs of the L3 versions
// its keyring holds — names, never key bytes: the state machine's bbolt file on the same disk
// already holds every ID — to <DataDir>/recent-keys every recentKeysInterval and at shutdown, and
// after a restart, once it holds a serving lease (it has caught up with the log), opens them again
// in the background. It does the same when it becomes leader, in case its keyring was emptied
// meanwhile (keys already held are skipped at the cost of a lookup). Config.NoKeyWarmup turns it off.

// recentKeysFile is the list of recently used key IDs in the data directory, one a line.
const recentKeysFile = "recent-keys"

// recentKeysInterval is how often the list is written while the node runs (a crash loses at most
// that much of it).
const recentKeysInterval = 30 * time.Second

// warmupOpenTimeout bounds one key's open during warm-up.
const warmupOpenTimeout = 5 * time.Second

// recentServiceKeys returns the IDs of the L3 versions held, those looked up since the last
// eviction sweep first, at most max.
func (r *keyring) recentServiceKeys(max int) []wrap.KeyID {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var used, rest []wrap.KeyID
	for id, h := range r.svc.m {
		if h.used.Load() {
			used = append(used, id)
		} else {
			rest = append(rest, id)
		}
	}
	out := append(used, rest...)
	return out[:min(len(out), max)]
}

// writeRecentKeys writes the list of the keyring's L3 versions, atomically (a new file renamed
// over the old one), readable by the node's user only.
func (n *Node) writeRecentKeys() error {
	var b bytes.Buffer
	for _, id := range n.keys.recentServiceKeys(n.keys.svc.max) {
		b.WriteString(id.String())
		b.WriteByte('\n')
	}
	path := filepath.Join(n.cfg.DataDir, recentKeysFile)
	f, err := os.CreateTemp(n.cfg.DataDir, recentKeysFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// readRecentKeys reads the list written by writeRecentKeys, at most max IDs; lines that do not
// parse are skipped (the list is a hint: a bad line costs a cold key, nothing else).
func readRecentKeys(dir string, max int) ([]wrap.KeyID, error) {
	f, err := os.Open(filepath.Join(dir, recentKeysFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []wrap.KeyID
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(ids) < max {
		id, err := wrap.ParseKeyID(sc.Text())
		if err != nil || id.IsTenant() {
			continue
		}
		ids = append(ids, id)
	}
	return ids, sc.Err()
}

// warmupLoop runs the warm-up (it is started by New unless Config.NoKeyWarmup, and returns on
// shutdown): the recent keys after the start, once the node serves, and again on every leadership
// this node gains; the list written every recentKeysInterval.
func (n *Node) warmupLoop() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // ends ctx on shutdown, so that an open in progress stops; owned by this loop
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	lead := make(chan struct{}, 1)
	stopObs := n.cl.OnLeaderChange(func(c cluster.LeaderChange) {
		if n.cl.IsLeader() {
			select {
			case lead <- struct{}{}:
			default:
			}
		}
	})
	defer stopObs()
	ids, err := readRecentKeys(n.cfg.DataDir, n.keys.svc.max)
	if err != nil {
		n.log.Warn("key warm-up: the list of recent keys does not read; starting cold", "err", err)
	}
	pending := len(ids) > 0 // the start's warm-up, done once the node serves
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	save := time.NewTicker(recentKeysInterval)
	defer save.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-save.C:
			if err := n.writeRecentKeys(); err != nil {
				n.log.Warn("key warm-up: writing the list of recent keys", "err", err)
			}
		case <-lead:
			if l, err := readRecentKeys(n.cfg.DataDir, n.keys.svc.max); err == nil && len(l) > 0 {
				ids, pending = l, true
			}
		case <-poll.C:
		}
		if pending && n.lease.check() == nil {
			pending = false
			n.warm(ctx, ids)
		}
	}
}

// warm opens the keys of ids that are usable and not held, one at a time (warm-up must not crowd
// out the calls it is there to spare), and logs how many it opened.
func (n *Node) warm(ctx context.Context, ids []wrap.KeyID) {
	start := time.Now()
	opened := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		if k, release := n.keys.acquireServiceKey(id); k != nil {
			release()
			continue
		}
		// The state machine decides, as on every call: a key revoked since is not opened.
		if _, err := n.state.Usable(id.Tenant, id.Service, id.Version, fsm.OpUnwrap); err != nil {
			continue
		}
		octx, cancel := context.WithTimeout(ctx, warmupOpenTimeout)
		_, release, err := n.serviceKey(octx, id)
		cancel()
		if err != nil {
			n.log.Debug("key warm-up: a key did not open", "key", id.String(), "err", err)
			continue
		}
		release()
		n.keys.warmed.Add(1)
		opened++
	}
	n.log.Info("key warm-up done", "keys_listed", len(ids), "keys_opened", opened, "took", time.Since(start).Round(time.Millisecond))
}
