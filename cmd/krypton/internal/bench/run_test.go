package bench

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/leaktest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }

// fakeWrap is a WrapService client that answers at once, so that these tests check what Run
// counts, exactly, without a region (TestRunRegion runs against a real one). Every failEvery-th
// unary call fails with Unavailable; the first item of every batch with NotFound. In the packed
// form (after the one-item probes): every other PackedWrap fails whole with NotFound, each
// PackedUnwrap fails its first item with PermissionDenied and answers its last with nothing
// (Internal), and each PackedGenerateDataKey answers one key short (Internal). With noPacked the
// packed RPCs are Unimplemented, as on a region of an older version.
type fakeWrap struct {
	kv1.WrapServiceClient // nil: a method not overridden panics
	failEvery             int64
	wrapErr               error // returned by every Wrap when set
	calls                 atomic.Int64
	badBlobs              atomic.Int64
	onCall                func(n int64) // called with each call's number, when set
	noPacked              bool
	packedWraps           atomic.Int64
}

var fakeBlob = []byte("fake-blob")

func (f *fakeWrap) unary() error {
	n := f.calls.Add(1)
	if f.onCall != nil {
		f.onCall(n)
	}
	if f.failEvery > 0 && n%f.failEvery == 0 {
		return status.Error(codes.Unavailable, "fake: no lease")
	}
	return nil
}

func (f *fakeWrap) checkBlob(b []byte) {
	if !bytes.Equal(b, fakeBlob) {
		f.badBlobs.Add(1)
	}
}

func (f *fakeWrap) Wrap(ctx context.Context, in *kv1.WrapRequest, _ ...grpc.CallOption) (*kv1.WrapResponse, error) {
	if f.wrapErr != nil {
		return nil, f.wrapErr
	}
	if err := f.unary(); err != nil {
		return nil, err
	}
	return &kv1.WrapResponse{Blob: fakeBlob, Key: in.GetKey()}, nil
}

func (f *fakeWrap) Unwrap(ctx context.Context, in *kv1.UnwrapRequest, _ ...grpc.CallOption) (*kv1.UnwrapResponse, error) {
	f.checkBlob(in.GetBlob())
	if err := f.unary(); err != nil {
		return nil, err
	}
	return &kv1.UnwrapResponse{Plaintext: make([]byte, 32)}, nil
}

func (f *fakeWrap) GenerateDataKey(ctx context.Context, in *kv1.GenerateDataKeyRequest, _ ...grpc.CallOption) (*kv1.GenerateDataKeyResponse, error) {
	if err := f.unary(); err != nil {
		return nil, err
	}
	return &kv1.GenerateDataKeyResponse{Plaintext: make([]byte, 32), Blob: fakeBlob}, nil
}

func (f *fakeWrap) Rewrap(ctx context.Context, in *kv1.RewrapRequest, _ ...grpc.CallOption) (*kv1.RewrapResponse, error) {
	f.checkBlob(in.GetBlob())
	if err := f.unary(); err != nil {
		return nil, err
	}
	return &kv1.RewrapResponse{Blob: fakeBlob}, nil
}

func (f *fakeWrap) BatchWrap(ctx context.Context, in *kv1.BatchWrapRequest, _ ...grpc.CallOption) (*kv1.BatchWrapResponse, error) {
	resp := &kv1.BatchWrapResponse{}
	for i := range in.GetItems() {
		r := &kv1.WrapResult{Result: &kv1.WrapResult_Value{Value: &kv1.WrapResponse{Blob: fakeBlob}}}
		// The blobs Run makes for unwrap before the load are all good; later batches fail their first item.
		if i == 0 && len(in.GetItems()) != blobPool {
			r.Result = &kv1.WrapResult_Error{Error: &kv1.ItemError{Code: uint32(codes.NotFound)}}
		}
		resp.Results = append(resp.Results, r)
	}
	return resp, nil
}

func (f *fakeWrap) BatchUnwrap(ctx context.Context, in *kv1.BatchUnwrapRequest, _ ...grpc.CallOption) (*kv1.BatchUnwrapResponse, error) {
	resp := &kv1.BatchUnwrapResponse{}
	for _, it := range in.GetItems() {
		f.checkBlob(it.GetBlob())
		resp.Results = append(resp.Results, &kv1.UnwrapResult{Result: &kv1.UnwrapResult_Value{Value: &kv1.UnwrapResponse{Plaintext: make([]byte, 32)}}})
	}
	return resp, nil
}

func (f *fakeWrap) BatchGenerateDataKey(ctx context.Context, in *kv1.BatchGenerateDataKeyRequest, _ ...grpc.CallOption) (*kv1.BatchGenerateDataKeyResponse, error) {
	resp := &kv1.BatchGenerateDataKeyResponse{}
	for range in.GetItems() {
		resp.Results = append(resp.Results, &kv1.GenerateDataKeyResult{Result: &kv1.GenerateDataKeyResult_Value{Value: &kv1.GenerateDataKeyResponse{Plaintext: make([]byte, 32), Blob: fakeBlob}}})
	}
	return resp, nil
}

func (f *fakeWrap) BatchRewrap(ctx context.Context, in *kv1.BatchRewrapRequest, _ ...grpc.CallOption) (*kv1.BatchRewrapResponse, error) {
	resp := &kv1.BatchRewrapResponse{}
	for _, it := range in.GetItems() {
		f.checkBlob(it.GetBlob())
		resp.Results = append(resp.Results, &kv1.RewrapResult{Result: &kv1.RewrapResult_Value{Value: &kv1.RewrapResponse{Blob: fakeBlob}}})
	}
	return resp, nil
}

var errOldRegion = status.Error(codes.Unimplemented, "unknown method PackedWrap for service krypton.v1.WrapService")

func (f *fakeWrap) PackedWrap(ctx context.Context, in *kv1.PackedWrapRequest, _ ...grpc.CallOption) (*kv1.PackedWrapResponse, error) {
	if f.noPacked {
		return nil, errOldRegion
	}
	if len(in.GetPlaintexts()) > 1 && f.packedWraps.Add(1)%2 == 0 {
		return nil, status.Error(codes.NotFound, "fake: no such key")
	}
	resp := &kv1.PackedWrapResponse{Key: in.GetKey()}
	for range in.GetPlaintexts() {
		resp.Blobs = append(resp.Blobs, fakeBlob)
	}
	return resp, nil
}

func (f *fakeWrap) PackedUnwrap(ctx context.Context, in *kv1.PackedUnwrapRequest, _ ...grpc.CallOption) (*kv1.PackedUnwrapResponse, error) {
	if f.noPacked {
		return nil, errOldRegion
	}
	n := len(in.GetBlobs())
	resp := &kv1.PackedUnwrapResponse{Plaintexts: make([][]byte, n), KeyIndex: make([]uint32, n), Keys: []*kv1.KeyRef{{Tenant: "acme", Service: "payments", Version: 1}}}
	for i, b := range in.GetBlobs() {
		f.checkBlob(b)
		resp.Plaintexts[i] = make([]byte, 32)
	}
	if n > 1 {
		resp.Plaintexts[0], resp.Plaintexts[n-1] = nil, nil
		resp.Errors = []*kv1.PackedItemError{{Index: 0, Error: &kv1.ItemError{Code: uint32(codes.PermissionDenied)}}}
	}
	return resp, nil
}

func (f *fakeWrap) PackedGenerateDataKey(ctx context.Context, in *kv1.PackedGenerateDataKeyRequest, _ ...grpc.CallOption) (*kv1.PackedGenerateDataKeyResponse, error) {
	if f.noPacked {
		return nil, errOldRegion
	}
	n := int(in.GetCount())
	if n > 1 {
		n--
	}
	resp := &kv1.PackedGenerateDataKeyResponse{Key: in.GetKey()}
	for range n {
		resp.Plaintexts = append(resp.Plaintexts, make([]byte, 32))
		resp.Blobs = append(resp.Blobs, fakeBlob)
	}
	return resp, nil
}

func testConfig(op Op) Config {
	cfg := DefaultConfig()
	cfg.Op, cfg.Tenant, cfg.Service = op, "acme", "payments"
	cfg.Callers, cfg.Duration, cfg.Warmup = 4, 300*time.Millisecond, 100*time.Millisecond
	return cfg
}

func checkBalanced(t *testing.T, s Summary) {
	t.Helper()
	var errs int64
	for _, n := range s.Errors {
		errs += n
	}
	if s.OK+errs != s.Ops {
		t.Errorf("%s: ok %d + errors %d != ops %d", s.Op, s.OK, errs, s.Ops)
	}
}

func TestRunClosedLoopMixed(t *testing.T) {
	f := &fakeWrap{failEvery: 5}
	f2 := &fakeWrap{failEvery: 5}
	res, err := Run(context.Background(), testConfig(OpMixed), []Target{{"a", f}, {"b", f2}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.OK == 0 || res.Total.Errors["Unavailable"] == 0 || len(res.Total.Errors) != 1 {
		t.Errorf("ok %d, errors %v: want successes and Unavailable errors only", res.Total.OK, res.Total.Errors)
	}
	checkBalanced(t, res.Total)
	if len(res.ByOp) != 4 {
		t.Fatalf("%d operations in a mixed run, want 4", len(res.ByOp))
	}
	var sum int64
	for i, s := range res.ByOp {
		if s.Op != mixedOps[i] || s.Calls == 0 {
			t.Errorf("operation %d: %s with %d calls", i, s.Op, s.Calls)
		}
		checkBalanced(t, s)
		sum += s.Calls
	}
	if sum != res.Total.Calls || res.Total.Calls != res.Total.Ops {
		t.Errorf("unary calls: per operation %d, total calls %d, ops %d", sum, res.Total.Calls, res.Total.Ops)
	}
	if f2.calls.Load() == 0 {
		t.Error("the second target got no calls")
	}
	if f.badBlobs.Load()+f2.badBlobs.Load() != 0 {
		t.Error("unwrap or rewrap sent a blob that Run had not made")
	}
	// Failed calls are counted, not timed: the histogram holds the answered ones.
	if res.Total.Latency.Count != res.Total.OK {
		t.Errorf("latency count %d, want the %d successful calls", res.Total.Latency.Count, res.Total.OK)
	}
	if res.Config.Load != "closed-loop" || res.Interrupted || res.Unsent != 0 {
		t.Errorf("config %+v, interrupted %v, unsent %d", res.Config, res.Interrupted, res.Unsent)
	}
}

func TestRunBatchItemErrors(t *testing.T) {
	cfg := testConfig(OpWrap)
	cfg.Batch, cfg.BatchForm = 8, FormItems
	res, err := Run(context.Background(), cfg, []Target{{"a", &fakeWrap{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Total
	if s.Calls == 0 || s.Ops != 8*s.Calls || s.OK != 7*s.Calls || s.Errors["NotFound"] != s.Calls {
		t.Errorf("calls %d, ops %d, ok %d, errors %v: want 8 items a call, the first NotFound", s.Calls, s.Ops, s.OK, s.Errors)
	}
	if s.Latency.Count != s.Calls {
		t.Errorf("latency count %d, want one per answered call (%d)", s.Latency.Count, s.Calls)
	}

	cfg.Op = OpUnwrap
	f := &fakeWrap{}
	res, err = Run(context.Background(), cfg, []Target{{"a", f}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Total.OK != 8*res.Total.Calls || res.Total.OK == 0 || f.badBlobs.Load() != 0 {
		t.Errorf("batch unwrap: ok %d of %d calls, %d bad blobs", res.Total.OK, res.Total.Calls, f.badBlobs.Load())
	}
}

func TestRunPackedErrors(t *testing.T) {
	cfg := testConfig(OpWrap)
	cfg.Batch = 8 // packed by default
	if cfg.BatchForm != FormPacked {
		t.Fatalf("default form %q, want packed", cfg.BatchForm)
	}
	res, err := Run(context.Background(), cfg, []Target{{"a", &fakeWrap{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Total
	// Every other call fails whole (the callers interleave, so about half).
	if s.Calls < 2 || s.Ops != 8*s.Calls || s.OK%8 != 0 || s.OK == 0 || s.Errors["NotFound"] == 0 || s.Errors["NotFound"]%8 != 0 || len(s.Errors) != 1 {
		t.Errorf("packed wrap: calls %d, ops %d, ok %d, errors %v: want whole calls of 8 failing NotFound", s.Calls, s.Ops, s.OK, s.Errors)
	}
	checkBalanced(t, s)
	if res.Config.BatchForm != "packed" || !strings.Contains(res.Description(), "PackedWrap") {
		t.Errorf("form %q, description %q", res.Config.BatchForm, res.Description())
	}

	cfg.Op = OpUnwrap
	f := &fakeWrap{}
	res, err = Run(context.Background(), cfg, []Target{{"a", f}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s = res.Total
	if s.Calls == 0 || s.OK != 6*s.Calls || s.Errors["PermissionDenied"] != s.Calls || s.Errors["Internal"] != s.Calls || f.badBlobs.Load() != 0 {
		t.Errorf("packed unwrap: calls %d, ok %d, errors %v, %d bad blobs: want per call 6 ok, 1 PermissionDenied, 1 Internal", s.Calls, s.OK, s.Errors, f.badBlobs.Load())
	}
	if s.Latency.Count != s.Calls {
		t.Errorf("latency count %d, want one per answered call (%d)", s.Latency.Count, s.Calls)
	}

	cfg.Op = OpDataKey
	res, err = Run(context.Background(), cfg, []Target{{"a", &fakeWrap{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s = res.Total
	if s.Calls == 0 || s.OK != 7*s.Calls || s.Errors["Internal"] != s.Calls {
		t.Errorf("packed datakey: calls %d, ok %d, errors %v: want per call 7 ok and one missing (Internal)", s.Calls, s.OK, s.Errors)
	}
}

// A node that does not serve the packed RPCs fails the run before the load, naming the method;
// the per-item form still runs against it, and so does rewrap, which has no packed form.
func TestRunPackedOnAnOldRegion(t *testing.T) {
	for _, op := range []Op{OpWrap, OpUnwrap, OpDataKey, OpMixed} {
		cfg := testConfig(op)
		cfg.Batch = 8
		_, err := Run(context.Background(), cfg, []Target{{"node-1", &fakeWrap{noPacked: true}}}, nil)
		if err == nil || !strings.Contains(err.Error(), "node-1 does not serve Packed") || !strings.Contains(err.Error(), "-batch-form items") {
			t.Errorf("%s: Run = %v, want node-1 named as not serving the packed form", op, err)
		}
	}
	for _, c := range []struct {
		op   Op
		form BatchForm
	}{{OpMixed, FormItems}, {OpRewrap, FormPacked}} {
		cfg := testConfig(c.op)
		cfg.Batch, cfg.BatchForm = 8, c.form
		res, err := Run(context.Background(), cfg, []Target{{"node-1", &fakeWrap{noPacked: true}}}, nil)
		if err != nil {
			t.Fatalf("%s in the %s form: %v", c.op, c.form, err)
		}
		if res.Total.OK == 0 || res.Config.BatchForm != "items" {
			t.Errorf("%s in the %s form: ok %d, recorded form %q (want items)", c.op, c.form, res.Total.OK, res.Config.BatchForm)
		}
	}
}

func TestRunOpenLoop(t *testing.T) {
	cfg := testConfig(OpDataKey)
	cfg.Rate, cfg.Warmup, cfg.Duration = 200, 0, 500*time.Millisecond
	res, err := Run(context.Background(), cfg, []Target{{"a", &fakeWrap{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 100 calls are due in 500 ms at 200/s: each was sent and measured, or counted as unsent.
	if res.Total.Calls+res.Unsent != 100 || res.Total.Calls == 0 {
		t.Errorf("calls %d + unsent %d, want 100", res.Total.Calls, res.Unsent)
	}
	if res.Config.Load != "open-loop" || res.Config.LatencyFrom != "intended-send" {
		t.Errorf("config %+v", res.Config)
	}
}

func TestRunRefusesABadKeyAtOnce(t *testing.T) {
	f := &fakeWrap{wrapErr: status.Error(codes.PermissionDenied, "fake: not yours")}
	_, err := Run(context.Background(), testConfig(OpWrap), []Target{{"node-1", f}}, nil)
	if err == nil || !strings.Contains(err.Error(), "node-1") || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("Run = %v, want PermissionDenied from node-1", err)
	}
	if _, err := Run(context.Background(), testConfig(OpWrap), nil, nil); err == nil {
		t.Error("Run without targets did not fail")
	}
	bad := testConfig(OpWrap)
	bad.Callers = 0
	if _, err := Run(context.Background(), bad, []Target{{"a", &fakeWrap{}}}, nil); err == nil {
		t.Error("Run with 0 callers did not fail")
	}
}

func TestRunInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := testConfig(OpWrap)
	cfg.Warmup, cfg.Duration = 0, time.Hour
	f := &fakeWrap{}
	f.onCall = func(n int64) {
		if n == 500 {
			cancel()
		}
	}
	res, err := Run(ctx, cfg, []Target{{"a", f}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Total.OK == 0 || res.MeasuredSeconds >= time.Hour.Seconds() {
		t.Errorf("interrupted %v, ok %d, measured %vs", res.Interrupted, res.Total.OK, res.MeasuredSeconds)
	}
	if len(res.Total.Errors) != 0 {
		t.Errorf("errors %v: calls cut short by the interruption are not the server's errors", res.Total.Errors)
	}
	if res.ProcessCPUSeconds != 0 || res.CPUMicrosPerOp != 0 {
		t.Errorf("an interrupted run reports process CPU %.3fs (%.2f µs/op) for a window it did not finish", res.ProcessCPUSeconds, res.CPUMicrosPerOp)
	}
}

// TestKeysSpread: a run over several keys names them Service, Service-1, ...; refuses ops that
// open one key's blobs; and a caller's draws cover the keys, Zipf's favouring the first.
func TestKeysSpread(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Tenant, cfg.Service, cfg.Keys = "t", "s", 50
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if refs := cfg.keyRefs(); len(refs) != 50 || refs[0].GetService() != "s" || refs[49].GetService() != "s-49" {
		t.Fatalf("keyRefs: %d, first %s, last %s", len(refs), refs[0].GetService(), refs[len(refs)-1].GetService())
	}
	bad := cfg
	bad.Op = OpUnwrap
	if err := bad.Validate(); err == nil {
		t.Fatal("Keys with unwrap validated")
	}
	for _, dist := range []KeyDist{DistZipf, DistUniform} {
		cfg.KeyDist = dist
		c := newCaller(cfg, nil, nil, cfg.keyRefs(), 0)
		counts := map[string]int{}
		for range 5000 {
			c.nextKey()
			counts[c.wrap.GetKey().GetService()]++
		}
		if len(counts) < 20 {
			t.Errorf("%s: 5000 draws hit %d of 50 keys", dist, len(counts))
		}
		if dist == DistZipf && counts["s"] < 5000/10 {
			t.Errorf("zipf: the first key drawn %d of 5000 times", counts["s"])
		}
	}
}

// TestRunServerCPU: a ServerCPU reader (here a counter that grows with every read) is sampled when
// the measured time starts and ends, and reported per successful operation in the JSON and the
// table; the end sample is taken even when the run is over before its timer fires.
func TestRunServerCPU(t *testing.T) {
	var reads atomic.Int64
	cfg := testConfig(OpWrap)
	cfg.ServerCPU = func() (time.Duration, bool) { return time.Duration(reads.Add(1)) * time.Second, true }
	res, err := Run(context.Background(), cfg, []Target{{"a", &fakeWrap{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reads.Load() != 2 || res.ServerCPUSeconds != 1 || res.Total.OK == 0 {
		t.Fatalf("%d reads, server CPU %v s over %d ok ops: want 2 reads 1 s apart", reads.Load(), res.ServerCPUSeconds, res.Total.OK)
	}
	if want := 1e6 / float64(res.Total.OK); res.ServerCPUMicrosPerOp != want {
		t.Errorf("server CPU %v µs per op, want %v", res.ServerCPUMicrosPerOp, want)
	}
	var b strings.Builder
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "server CPU: ") {
		t.Errorf("the table has no server CPU line:\n%s", b.String())
	}

	w := newCPUWindow(time.Hour, 2*time.Hour, cfg.ServerCPU) // timers that never fire in the test
	w.finish()
	if _, ok := cpuUsed(w); ok {
		t.Error("a window whose start was never sampled reported CPU")
	}
	w.stop()
}

// TestCallContext: a caller's calls share one deadline context, which gives each call at least
// half of CallTimeout and at most all of it, is made again once half has passed or it ended, and
// is released when the caller is done.
func TestCallContext(t *testing.T) {
	const timeout = 10 * time.Second
	c := &caller{cfg: Config{CallTimeout: timeout}}
	now := time.Now()
	first := c.callContext(t.Context(), now)
	dl, ok := first.Deadline()
	if !ok || dl.Before(now.Add(timeout-time.Second)) || dl.After(time.Now().Add(timeout)) {
		t.Fatalf("first deadline %v, want about %v", dl, now.Add(timeout))
	}
	if got := c.callContext(t.Context(), now.Add(timeout/2-time.Millisecond)); got != first {
		t.Fatal("a call before half of the timeout got a new context")
	}
	later := now.Add(timeout / 2)
	second := c.callContext(t.Context(), later)
	if second == first {
		t.Fatal("a call at half of the timeout kept the old context: it would have less than half")
	}
	if first.Err() == nil {
		t.Fatal("the replaced context was not released")
	}
	c.ccancel() // as if its deadline had fired
	if third := c.callContext(t.Context(), later); third == second || third.Err() != nil {
		t.Fatal("a context that ended was used again")
	}
	c.endContext()
	if c.cctx != nil {
		t.Fatal("endContext left the context")
	}
}
