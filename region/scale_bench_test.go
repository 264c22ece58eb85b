package region_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// BenchmarkScale loads a three-node region with many tenants (2 services of 5 key versions each,
// so 10 versions a tenant) and reports what that state costs a region: the operator snapshot's
// size, how long SnapshotRestore takes on the leader, how long until every node serves the
// restored state, how long SnapshotSave takes, how long a restarted follower takes to serve again,
// and the heap and resident memory per node. 10,000 and 100,000 tenants (100,000 and 1,000,000
// versions) show whether the figures grow linearly: compare the per-version metrics.
//
//	go test -run '^$' -bench Scale -benchtime 1x -timeout 30m ./region/
//
// The state is built in this process as a state machine would apply it, starting from the
// region's own snapshot (which holds a real tenant whose keys open), and restored through the
// admin API's SnapshotRestore, as an operator would restore a backup. The synthetic tenants' sealed
// keys are random bytes: they are never opened. Each sub-benchmark starts its own region.
func BenchmarkScale(b *testing.B) {
	for _, tenants := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("tenants=%d/versions=%d", tenants, tenants*10), func(b *testing.B) {
			for b.Loop() {
				benchmarkScale(b, tenants)
			}
		})
	}
}

func benchmarkScale(b *testing.B, tenants int) {
	const services, versions = 2, 5
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// The nodes' logs are dropped: the leader's L1 check of every tenant writes a line per tenant
	// for the file:// development anchor, which b.Log would hold in memory until the end.
	r := regiontest.Start(b, 3, regiontest.WithLogs(io.Discard))
	defer r.Close()
	leader := r.Leader()
	admin := r.AdminClient(leader)
	if _, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "k", Tenant: "acme", Service: "payments"}); err != nil {
		b.Fatal(err)
	}
	base := scaleSave(b, ctx, admin)
	heapBefore := scaleLiveHeap()

	// Build the large state from the region's own.
	t0 := time.Now()
	data, err := cluster.SnapshotFSMData(base)
	if err != nil {
		b.Fatal(err)
	}
	st := fsm.NewState(fsm.Options{})
	if err := st.Restore(bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	idx, at := st.AppliedIndex(), time.Now().UnixNano()
	apply := func(c fsm.Command) {
		if _, err := st.Apply(idx, fsm.Entry{At: at, Command: c}); err != nil {
			b.Fatal(err)
		}
	}
	sealed := bytes.Repeat([]byte{0xa5}, 93) // the size of a sealed 32-byte key with its header
	for t := range tenants {
		tn := "tenant-" + strconv.Itoa(t)
		apply(fsm.CreateTenant{Tenant: tn, Anchor: r.Anchor, SealedL2: sealed})
		for s := range services {
			sn := "service-" + strconv.Itoa(s)
			apply(fsm.CreateService{Tenant: tn, Service: sn, SealedL3: sealed, SealedBy: 1})
			for v := 2; v <= versions; v++ {
				apply(fsm.RotateServiceKey{Tenant: tn, Service: sn, Version: uint32(v), SealedL3: sealed, SealedBy: 1})
			}
		}
	}
	var fsmData bytes.Buffer
	if err := st.WriteSnapshot(&fsmData); err != nil {
		b.Fatal(err)
	}
	st = nil
	file := scaleFile(base, fsmData.Bytes())
	fsmData = bytes.Buffer{}
	build := time.Since(t0)

	// Restore it through the leader's admin API.
	// The leader may have changed while the state was built (two loaded cores).
	admin = r.AdminClient(r.WaitLeader())
	t1 := time.Now()
	if err := scaleRestore(ctx, admin, file); err != nil {
		b.Fatal(err)
	}
	restore := time.Since(t1)
	last := "tenant-" + strconv.Itoa(tenants-1)
	ref := &kv1.KeyRef{Tenant: "acme", Service: "payments"}
	progress(b, "built %d tenants in %s, restored in %s", tenants, build, restore)
	for i := range r.Nodes {
		c := r.WrapClient(i, "acme", "payments")
		waitServing(b, fmt.Sprintf("node %d serving the restored state", i), func() error {
			if _, err := r.Nodes[i].State().Tenant(last); err != nil {
				return err
			}
			_, err := c.Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{7}, 32)})
			return err
		})
	}
	serving := time.Since(t1)
	progress(b, "every node serving %s after the restore began", serving)

	t2 := time.Now()
	saved := scaleSave(b, ctx, admin)
	save := time.Since(t2)

	heap := scaleLiveHeap() - heapBefore
	rss := residentBytes()
	progress(b, "saved in %s; live heap +%d MiB, RSS %d MiB (three nodes)", save, heap>>20, rss>>20)

	// A follower restarted from its data directory: Raft restores its last snapshot, replays the
	// log after it, and the node serves once it holds a lease again. One write first: a node
	// restarted on a restored snapshot with no entry after it gets no lease (the state machine's
	// applied index is the snapshot's own, below the index Raft restored it at; docs/performance.md).
	if _, err := admin.CreateKey(ctx, &kv1.CreateKeyRequest{RequestId: "after", Tenant: "acme", Service: "after-restore"}); err != nil {
		b.Fatal(err)
	}
	f := r.Followers()[0]
	r.Kill(f)
	t3 := time.Now()
	r.Start(f)
	c := r.WrapClient(f, "acme", "payments")
	waitServing(b, "the restarted follower serving", func() error {
		_, err := c.Wrap(ctx, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Repeat([]byte{7}, 32)})
		return err
	})
	restart := time.Since(t3)
	progress(b, "restarted follower serving after %s", restart)

	v := float64(tenants * services * versions)
	b.ReportMetric(float64(len(saved))/(1<<20), "snapshot-MiB")
	b.ReportMetric(float64(len(saved))/v, "snapshot-B/version")
	b.ReportMetric(build.Seconds(), "build-s")
	b.ReportMetric(restore.Seconds(), "restore-s")
	b.ReportMetric(serving.Seconds(), "restored-serving-s")
	b.ReportMetric(save.Seconds(), "save-s")
	b.ReportMetric(restart.Seconds(), "restart-serving-s")
	b.ReportMetric(float64(heap)/3/(1<<20), "heap-MiB/node")
	b.ReportMetric(float64(heap)/3/v, "heap-B/version/node")
	b.ReportMetric(float64(rss)/3/(1<<20), "rss-MiB/node")
	b.ReportMetric(float64(restore.Nanoseconds())/v, "restore-ns/version")
}

// waitServing polls ok every 20 ms until it returns nil, for at most 10 minutes.
func waitServing(b *testing.B, what string, ok func() error) {
	b.Helper()
	deadline, report := time.Now().Add(10*time.Minute), time.Now().Add(10*time.Second)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: not within 10 minutes; last: %v", what, err)
		}
		if time.Now().After(report) {
			progress(b, "%s: still waiting; last: %v", what, err)
			report = time.Now().Add(10 * time.Second)
		}
		time.Sleep(20 * time.Millisecond) // a benchmark's poll, not a test's wait for a condition
	}
}

// progress reports a phase of a long benchmark on stderr as it happens (b.Logf shows only at the end).
func progress(b *testing.B, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s: %s\n", b.Name(), fmt.Sprintf(format, args...))
}

// scaleSave returns an operator snapshot file of the region (AdminService.SnapshotSave).
func scaleSave(b *testing.B, ctx context.Context, admin kv1.AdminServiceClient) []byte {
	b.Helper()
	stream, err := admin.SnapshotSave(ctx, &kv1.SnapshotSaveRequest{})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	for {
		c, err := stream.Recv()
		if err == io.EOF {
			return buf.Bytes()
		}
		if err != nil {
			b.Fatal(err)
		}
		buf.Write(c.GetData())
	}
}

// scaleFile frames a state machine snapshot as an operator snapshot file like base (see
// cluster/snapshot.go): base's header and the cluster's 8-byte prefix, the new data, its digest.
func scaleFile(base, data []byte) []byte {
	const hdr = 32
	out := make([]byte, 0, hdr+8+len(data)+sha256.Size)
	out = append(out, base[:hdr]...)
	binary.BigEndian.PutUint64(out[24:32], uint64(8+len(data)))
	out = append(out, base[hdr:hdr+8]...)
	out = append(out, data...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...)
}

// scaleRestore sends file to AdminService.SnapshotRestore in 1 MiB chunks.
func scaleRestore(ctx context.Context, admin kv1.AdminServiceClient, file []byte) error {
	stream, err := admin.SnapshotRestore(ctx)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(file)
	for off := 0; off < len(file); off += 1 << 20 {
		end := min(off+1<<20, len(file))
		chunk := &kv1.SnapshotChunk{Data: file[off:end]}
		if off == 0 {
			chunk.Meta = &kv1.SnapshotMeta{Region: "test", Size: uint64(len(file))}
		}
		if end == len(file) {
			chunk.Sha256 = sum[:]
		}
		if err := stream.Send(&kv1.SnapshotRestoreRequest{RequestId: "restore-" + strconv.Itoa(len(file)), Chunk: chunk}); err != nil {
			return err
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// scaleLiveHeap returns the bytes of live heap objects after a full collection.
func scaleLiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// residentBytes is the process's resident set (VmRSS), or 0 where /proc is not there.
func residentBytes() uint64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
