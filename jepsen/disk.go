package jepsen

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// The disk nemeses (DESIGN.md, "Disks"): in a scenario that lists one, every region node's data
// directory lives on a filesystem of its own, an ext4 image loop-mounted at nodes/<id>/disk, so
// that one node's disk can fill up (disk-full) or turn slow (slow-fsync) while the others' do not.
// The harness needs root for mount and losetup; without it (or where the kernel refuses), the
// disk nemeses are skipped, or the run fails when KRYPTON_REQUIRE_PEERS is set (CI runs as root).

// diskSizeMB is the size of each node's filesystem: a run writes a few MiB of Raft log,
// snapshots and revocations; filling the rest is what disk-full does.
const diskSizeMB = 64

// diskKinds are the nemeses that need each node on a disk of its own (corrupt-restart does not:
// it runs wherever the nodes' files are, as root or not).
var diskKinds = map[string]bool{DiskFull: true, SlowFsync: true}

// nodeDisk is one node's filesystem.
type nodeDisk struct {
	img    string // the image file, nodes/<id>/disk.img
	mnt    string // where it is mounted, nodes/<id>/disk
	dev    string // the loop device
	majmin string // the loop device's major:minor, for the I/O throttle

	mu        sync.Mutex
	mounted   bool
	throttled bool
}

// newDisk makes an ext4 image of diskSizeMB beside mnt, loop-mounts it at mnt, and returns it.
// No reserved blocks (-m 0): the nodes run as root and would otherwise write into them.
func newDisk(img, mnt string) (_ *nodeDisk, err error) {
	d := &nodeDisk{img: img, mnt: mnt}
	defer func() {
		if err != nil {
			d.close(false)
		}
	}()
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(diskSizeMB << 20)
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := diskRun("mkfs.ext4", "-q", "-F", "-m", "0", img); err != nil {
		return nil, err
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("jepsen: losetup %s: %v: %s", img, err, strings.TrimSpace(string(out)))
	}
	d.dev = strings.TrimSpace(string(out))
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(d.dev), "dev"))
	if err != nil {
		return nil, err
	}
	d.majmin = strings.TrimSpace(string(b))
	if canThrottle() == nil {
		// A throttle left on this device number by a harness killed mid-fault goes now.
		if err := d.throttle(0); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return nil, err
	}
	if err := diskRun("mount", "-t", "ext4", d.dev, mnt); err != nil {
		return nil, err
	}
	d.mounted = true
	return d, nil
}

// fillPath is the filler disk-full writes, beside the data directory on the same filesystem.
func (d *nodeDisk) fillPath() string { return filepath.Join(d.mnt, "jepsen-fill") }

// fill writes zeros to the filler until the filesystem refuses with ENOSPC, and returns how many
// bytes it wrote. Large writes first, then single blocks, so that no block is left free.
func (d *nodeDisk) fill() (int64, error) {
	f, err := os.OpenFile(d.fillPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for _, size := range []int{1 << 20, 4096, 1024} {
		buf := make([]byte, size)
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return n, err
			}
		}
	}
	// Push it to the device, so that the filesystem's free count is final.
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		return n, err
	}
	return n, nil
}

// unfill deletes the filler.
func (d *nodeDisk) unfill() error {
	if err := os.Remove(d.fillPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// blkioThrottle is cgroup v1's per-device write throttle of the root cgroup: a rule on the loop
// device slows every write to it, whoever issues it (the node, ext4's journal thread, writeback),
// so that each fsync waits for its writes and the journal commit to trickle through.
const blkioThrottle = "/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device"

// canThrottle says whether the kernel offers the throttle, and if not why.
func canThrottle() error {
	if _, err := os.Stat(blkioThrottle); err != nil {
		return fmt.Errorf("no cgroup v1 blkio write throttle (%s): %w; cgroup v2's io.max would need the node in a child cgroup, not built", blkioThrottle, err)
	}
	return nil
}

// throttle limits writes to the disk to iops a second (0 lifts the limit).
func (d *nodeDisk) throttle(iops int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.WriteFile(blkioThrottle, []byte(fmt.Sprintf("%s %d\n", d.majmin, iops)), 0o644); err != nil {
		return fmt.Errorf("jepsen: throttling %s: %w", d.dev, err)
	}
	d.throttled = iops > 0
	return nil
}

// heal lifts the throttle and deletes the filler.
func (d *nodeDisk) heal() {
	d.mu.Lock()
	throttled := d.throttled
	d.mu.Unlock()
	if throttled {
		_ = d.throttle(0)
	}
	_ = d.unfill()
}

// close heals, unmounts and detaches the disk; keep keeps the image (a failed run's evidence:
// `mount -o loop nodes/<id>/disk.img /mnt`), otherwise it is deleted.
func (d *nodeDisk) close(keep bool) error {
	d.heal()
	var first error
	d.mu.Lock()
	mounted := d.mounted
	d.mounted = false
	d.mu.Unlock()
	if mounted {
		if err := diskRun("umount", d.mnt); err != nil {
			// A straggler holding a file: detach lazily rather than leave the mount behind.
			first = err
			_ = diskRun("umount", "-l", d.mnt)
		}
		_ = os.Remove(d.mnt)
	}
	if d.dev != "" {
		if err := diskRun("losetup", "-d", d.dev); err != nil && first == nil {
			first = err
		}
		d.dev = ""
	}
	if !keep {
		_ = os.Remove(d.img)
	}
	return first
}

// diskRun runs a command, its output in the error.
func diskRun(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("jepsen: %s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
