package jepsen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The snapshot-restore nemesis (DESIGN.md, "Nemeses"): an operator's backup taken early in the
// run (AdminService.SnapshotSave, as `krypton operator snapshot save` calls it) is restored later
// (SnapshotRestore), once the history shows a revocation acknowledged after the backup was taken.
// The region must refuse it: the snapshot lacks that revocation (region/DESIGN.md, "Revocations
// survive every restore"). It is restored only then, because an old snapshot that lacks no
// revocation may rightly be applied, and an applied restore rightly loses every write
// acknowledged after the backup, which the checkers would count as lost.

// Restore outcomes, as Fault.Restore records them.
const (
	RestoreRefused       = "refused"       // FAILED_PRECONDITION naming revocations the snapshot lacks
	RestoreApplied       = "applied"       // the region took the old snapshot
	RestoreIndeterminate = "indeterminate" // no answer (a timeout, no leader): it may have been applied
	RestoreSkipped       = "skipped"       // no snapshot was saved, or no revocation since it
)

// savedSnapshot is the backup the nemesis took: the stream's metadata, data and checksum.
type savedSnapshot struct {
	meta  *kv1.SnapshotMeta
	data  []byte
	sum   []byte
	saved int64 // when SnapshotSave returned (ns since the start of the run)
}

// saveSnapshot takes the backup from the leader (any node answers SnapshotSave; the leader's is
// the freshest), retrying for up to 20 s.
func (nm *nemesis) saveSnapshot(ctx context.Context) error {
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for ctx.Err() == nil {
		var s *savedSnapshot
		if s, err = nm.trySave(ctx); err == nil {
			nm.mu.Lock()
			nm.snap = s
			nm.mu.Unlock()
			nm.logf("nemesis: saved a snapshot of index %d (%d bytes) to restore later", s.meta.GetIndex(), len(s.data))
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	return fmt.Errorf("jepsen: saving a snapshot: %w", err)
}

func (nm *nemesis) trySave(ctx context.Context) (*savedSnapshot, error) {
	l := nm.leader(ctx)
	if l < 0 {
		return nil, errors.New("no leader")
	}
	a, err := nm.cs.admin(l)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := a.SnapshotSave(cctx, &kv1.SnapshotSaveRequest{})
	if err != nil {
		return nil, err
	}
	s := &savedSnapshot{}
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if c.GetMeta() != nil {
			s.meta = c.GetMeta()
		}
		s.data = append(s.data, c.GetData()...)
		if len(c.GetSha256()) > 0 {
			s.sum = c.GetSha256()
		}
	}
	if s.meta == nil || s.sum == nil {
		return nil, errors.New("the snapshot stream had no metadata or no checksum")
	}
	s.saved = nm.h.now()
	return s, nil
}

// newRevocationSince returns an acknowledged revocation invoked after the snapshot was saved whose
// scope nothing before the snapshot may have revoked (no earlier revocation of the same version
// or of the whole service, whatever its outcome): the snapshot surely lacks it. Nil if none.
func newRevocationSince(ops []Op, saved int64) *Op {
	before := map[string]bool{} // key + "/" + version (0: the service), invoked before saved
	for _, op := range ops {
		if op.Type == OpRevoke && op.Outcome != Fail && op.Invoke <= saved {
			before[fmt.Sprintf("%s/%d", op.Key, op.Arg)] = true
		}
	}
	for i := range ops {
		op := &ops[i]
		if op.Type != OpRevoke || op.Outcome != OK || op.Invoke <= saved {
			continue
		}
		if before[op.Key+"/0"] || before[fmt.Sprintf("%s/%d", op.Key, op.Arg)] {
			continue
		}
		return op
	}
	return nil
}

// restore is the snapshot-restore fault: wait (up to 10 s) for a revocation the snapshot lacks,
// then restore the snapshot on the leader and record whether the region refused or applied it.
func (nm *nemesis) restore(ctx context.Context, f *Fault) error {
	nm.mu.Lock()
	s := nm.snap
	nm.mu.Unlock()
	if s == nil {
		f.Restore, f.Detail = RestoreSkipped, "no snapshot was saved"
		return nil
	}
	var rev *Op
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil {
		if rev = newRevocationSince(nm.h.snapshot(), s.saved); rev != nil || time.Now().After(deadline) {
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	if rev == nil {
		f.Restore, f.Detail = RestoreSkipped, "no revocation acknowledged since the snapshot: not restored"
		return nil
	}
	f.Revocation = rev.ID
	what := fmt.Sprintf("snapshot of index %d (saved at %.1fs), lacking revocation %d of %s v%d", s.meta.GetIndex(),
		time.Duration(s.saved).Seconds(), rev.ID, rev.Key, rev.Arg)
	nm.logf("nemesis: restoring the %s", what)
	id := fmt.Sprintf("jepsen-restore-%d", nm.h.now())
	var err error
	var idx uint64
	for try := 0; try < 40 && ctx.Err() == nil; try++ {
		idx, err = nm.tryRestore(ctx, id, s)
		if err == nil || !retryRestore(err) {
			break
		}
		sleep(ctx, 250*time.Millisecond)
	}
	switch {
	case err == nil:
		f.Restore = RestoreApplied
		f.Detail = fmt.Sprintf("%s: APPLIED (index %d)", what, idx)
	case status.Code(err) == codes.FailedPrecondition:
		f.Restore = RestoreRefused
		f.Detail = fmt.Sprintf("%s: refused: %s", what, errText(err))
	default:
		f.Restore = RestoreIndeterminate
		f.Detail = fmt.Sprintf("%s: no answer: %s %s", what, status.Code(err), errText(err))
	}
	return nil
}

// retryRestore: the call reached no leader (or none that knew it led), so nothing was restored;
// another try may reach one.
func retryRestore(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	case codes.FailedPrecondition:
		return strings.Contains(errText(err), "restore runs on the leader")
	}
	return errors.Is(err, errNoLeader)
}

var errNoLeader = errors.New("no leader")

// tryRestore streams the snapshot to the leader as `krypton operator snapshot restore` does.
func (nm *nemesis) tryRestore(ctx context.Context, requestID string, s *savedSnapshot) (uint64, error) {
	l := nm.leader(ctx)
	if l < 0 {
		return 0, errNoLeader
	}
	a, err := nm.cs.admin(l)
	if err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stream, err := a.SnapshotRestore(cctx)
	if err != nil {
		return 0, err
	}
	const chunk = 256 << 10
	for off := 0; ; off += chunk {
		end := min(off+chunk, len(s.data))
		c := &kv1.SnapshotChunk{Data: s.data[off:end]}
		req := &kv1.SnapshotRestoreRequest{Chunk: c}
		if off == 0 {
			c.Meta, req.RequestId = s.meta, requestID
		}
		if end == len(s.data) {
			c.Sha256 = s.sum
		}
		if err := stream.Send(req); err != nil {
			if err == io.EOF {
				break // the server answered early; CloseAndRecv has its answer
			}
			return 0, err
		}
		if end == len(s.data) {
			break
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return 0, err
	}
	return resp.GetIndex(), nil
}

// checkRestores: every restore of a snapshot that lacks an acknowledged revocation was refused,
// and the refusal names what it lacks. (The damage an applied one does, revoked keys usable
// again and acknowledged writes lost, is for revocation-fence and acked-writes-durable to see.)
func checkRestores(faults []Fault) (*Verdict, map[string]int) {
	v := newVerdict("restore-refused")
	counts := map[string]int{}
	for _, f := range faults {
		if f.Kind != SnapshotRestore {
			continue
		}
		counts[f.Restore]++
		switch f.Restore {
		case RestoreApplied:
			v.problem("a snapshot lacking acknowledged revocation %d was restored: %s", f.Revocation, f.Detail)
		case RestoreRefused:
			if !strings.Contains(f.Detail, "revocation") {
				v.problem("a restore was refused without naming the revocations the snapshot lacks: %s", f.Detail)
			}
		}
	}
	v.Detail = fmt.Sprintf("restores of an old snapshot: %d refused, %d applied, %d indeterminate, %d skipped",
		counts[RestoreRefused], counts[RestoreApplied], counts[RestoreIndeterminate], counts[RestoreSkipped])
	return v, counts
}
