package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// Target is one region node the load goes to.
type Target struct {
	Name   string // its address, for the report
	Client kv1.WrapServiceClient
}

// blobPool is the number of blobs made before a run for unwrap and rewrap to open.
const blobPool = 256

// Run drives cfg's load against the targets (callers are spread over them round robin) and
// returns the measured figures. progress, if not nil, is called once a second from a goroutine of
// Run's, never concurrently with itself.
//
// Before the load starts, each target must answer one wrap (Unavailable is retried for up to
// Config.ReadyTimeout; any other error ends Run): a wrong key, certificate or address fails at once
// rather than as a run of errors; so does a target that answers Unimplemented to a packed RPC the
// run sends (Config.BatchForm). During the run, errors are counted by gRPC code and never stop
// it. When ctx ends early the run stops and the result, marked Interrupted, covers the measured
// time so far.
func Run(ctx context.Context, cfg Config, targets []Target, progress func(Tick)) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, errors.New("bench: no targets")
	}
	blobs, err := prepare(ctx, cfg, targets)
	if err != nil {
		return nil, err
	}

	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	rec := newRecorder(cfg.ops(), start, measureFrom, end)
	cpu := newCPUWindow(cfg.Warmup, cfg.Warmup+cfg.Duration, processCPU)
	defer cpu.stop()
	var gwCPU *cpuWindow
	if cfg.GatewayCPU != nil {
		gwCPU = newCPUWindow(cfg.Warmup, cfg.Warmup+cfg.Duration, cfg.GatewayCPU)
		defer gwCPU.stop()
	}
	var gwBatches *window[BatchCount]
	if cfg.GatewayBatches != nil {
		gwBatches = newWindow(cfg.Warmup, cfg.Warmup+cfg.Duration, cfg.GatewayBatches)
		defer gwBatches.stop()
	}
	var srvCPU *cpuWindow
	if cfg.ServerCPU != nil {
		srvCPU = newCPUWindow(cfg.Warmup, cfg.Warmup+cfg.Duration, cfg.ServerCPU)
		defer srvCPU.stop()
	}
	runCtx, cancel := context.WithDeadline(ctx, end.Add(cfg.CallTimeout))
	defer cancel()

	stopTicks := make(chan struct{})
	var ticks sync.WaitGroup
	ticks.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopTicks:
				return
			case now := <-t.C:
				tk := rec.tick(now)
				if progress != nil {
					progress(tk)
				}
			}
		}
	})

	var seq atomic.Int64 // the open loop's next call
	var wg sync.WaitGroup
	refs := cfg.keyRefs() // made once: callers share them (a request only reads its KeyRef)
	for w := range cfg.Callers {
		c := newCaller(cfg, targets[w%len(targets)].Client, blobs, refs, w)
		wg.Go(func() {
			if cfg.Rate > 0 {
				c.openLoop(runCtx, rec, &seq)
			} else {
				c.closedLoop(runCtx, rec, w)
			}
		})
	}
	wg.Wait()
	close(stopTicks)
	ticks.Wait()
	rec.finish(time.Now())

	stopped := time.Now()
	interrupted := ctx.Err() != nil && stopped.Before(end)
	measured := cfg.Duration
	if interrupted {
		measured = max(stopped.Sub(measureFrom), 0)
	}
	var names []string // each target once, though several connections may lead to it
	for _, t := range targets {
		if !slices.Contains(names, t.Name) {
			names = append(names, t.Name)
		}
	}
	r := newResult(cfg, names, start, measured, interrupted, rec)
	if !interrupted {
		for _, w := range []*cpuWindow{cpu, gwCPU, srvCPU} {
			if w != nil {
				w.finish()
			}
		}
		if gwBatches != nil {
			gwBatches.finish()
		}
	}
	if used, ok := cpuUsed(cpu); ok && !interrupted {
		r.setCPU(used)
	}
	if gwCPU != nil {
		if used, ok := cpuUsed(gwCPU); ok && !interrupted {
			r.setGatewayCPU(used)
		}
	}
	if gwBatches != nil {
		if from, to, ok := gwBatches.samples(); ok && !interrupted {
			r.setGatewayBatches(to.Batches-from.Batches, to.Items-from.Items, to.Delegated-from.Delegated)
		}
	}
	if srvCPU != nil {
		if used, ok := cpuUsed(srvCPU); ok && !interrupted {
			r.setServerCPU(used)
		}
	}
	return r, nil
}

// cpuWindow samples a process's CPU time (read) when the measured time starts and when it ends, on
// timers: the calls still in flight after the end, and the warm-up, are not counted.
type cpuWindow = window[time.Duration]

// window samples a reading when the measured time starts and when it ends (a CPU time, a count
// of batches): the difference is what the measured time used.
type window[T any] struct {
	mu         sync.Mutex
	from, to   T
	fromOK     bool
	toOK       bool
	startTimer *time.Timer
	endTimer   *time.Timer
	takeEnd    func()        // takes the end sample, then closes endDone
	endDone    chan struct{} // closed when the end sample is taken
}

func newCPUWindow(from, to time.Duration, read func() (time.Duration, bool)) *cpuWindow {
	return newWindow(from, to, read)
}

func newWindow[T any](from, to time.Duration, read func() (T, bool)) *window[T] {
	w := &window[T]{}
	sample := func(d *T, ok *bool) func() {
		return func() {
			v, measured := read()
			w.mu.Lock()
			*d, *ok = v, measured
			w.mu.Unlock()
		}
	}
	w.startTimer = time.AfterFunc(from, sample(&w.from, &w.fromOK))
	w.endDone = make(chan struct{})
	end := sample(&w.to, &w.toOK)
	w.takeEnd = func() { end(); close(w.endDone) }
	w.endTimer = time.AfterFunc(to, w.takeEnd)
	return w
}

// finish makes sure the end sample is taken once the run is over: on a loaded machine its timer
// can fire after the callers have stopped, and the run then read no CPU at all. A timer not yet
// fired is stopped and the sample taken now (a little late, when the callers' last calls are
// done); one firing is waited for.
func (w *window[T]) finish() {
	if w.endTimer.Stop() {
		w.takeEnd()
		return
	}
	<-w.endDone
}

// samples are the readings at the start and the end of the measured window, if both were taken.
func (w *window[T]) samples() (from, to T, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.from, w.to, w.fromOK && w.toOK
}

// used is the CPU time of the measured window, if both samples were taken.
func cpuUsed(w *cpuWindow) (time.Duration, bool) {
	from, to, ok := w.samples()
	if !ok {
		return 0, false
	}
	return to - from, true
}

// stop cancels the samples not yet taken (a run that ended early).
func (w *window[T]) stop() {
	w.startTimer.Stop()
	w.endTimer.Stop()
}

// prepare checks that every target wraps (and serves the packed RPCs the run sends), and makes the
// blobs that unwrap and rewrap open.
func prepare(ctx context.Context, cfg Config, targets []Target) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	plaintext := make([]byte, wrap.KeySize)
	rand.Read(plaintext)
	for _, t := range targets {
		for {
			cctx, ccancel := context.WithTimeout(ctx, cfg.CallTimeout)
			_, err := t.Client.Wrap(cctx, &kv1.WrapRequest{Key: cfg.keyRef(), Plaintext: plaintext, Context: cfg.Context})
			ccancel()
			if err == nil {
				break
			}
			if status.Code(err) != codes.Unavailable {
				st := status.Convert(err)
				return nil, fmt.Errorf("bench: %s: a first wrap under %s/%s failed: %s: %s", t.Name, cfg.Tenant, cfg.Service, st.Code(), st.Message())
			}
			select {
			case <-ctx.Done():
				st := status.Convert(err)
				return nil, fmt.Errorf("bench: %s: no successful wrap under %s/%s within %s; the last error: %s: %s", t.Name, cfg.Tenant, cfg.Service, cfg.ReadyTimeout, st.Code(), st.Message())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	needBlobs := false
	for _, op := range cfg.ops() {
		needBlobs = needBlobs || op == OpUnwrap || op == OpRewrap
	}
	var blobs [][]byte
	if needBlobs {
		var err error
		if blobs, err = makeBlobs(ctx, cfg, targets[0]); err != nil {
			return nil, err
		}
	}
	if err := probePacked(ctx, cfg, targets, plaintext, blobs); err != nil {
		return nil, err
	}
	return blobs, nil
}

// makeBlobs wraps the pool of blobs that unwrap and rewrap open, in one BatchWrap (which every
// region version serves, and a gateway's client stand-in too).
func makeBlobs(ctx context.Context, cfg Config, t Target) ([][]byte, error) {
	n := max(blobPool, cfg.Batch)
	req := &kv1.BatchWrapRequest{Items: make([]*kv1.WrapRequest, n)}
	for i := range req.Items {
		p := make([]byte, wrap.KeySize)
		rand.Read(p)
		req.Items[i] = &kv1.WrapRequest{Key: cfg.keyRef(), Plaintext: p, Context: cfg.Context}
	}
	resp, err := t.Client.BatchWrap(ctx, req)
	if err != nil {
		st := status.Convert(err)
		return nil, fmt.Errorf("bench: %s: making %d blobs to unwrap: %s: %s", t.Name, n, st.Code(), st.Message())
	}
	blobs := make([][]byte, 0, n)
	for _, r := range resp.GetResults() {
		if e := r.GetError(); e != nil {
			return nil, fmt.Errorf("bench: %s: making blobs to unwrap: %s: %s", t.Name, codes.Code(e.GetCode()), e.GetMessage())
		}
		blobs = append(blobs, r.GetValue().GetBlob())
	}
	return blobs, nil
}

// probePacked sends each packed RPC the run uses, with one item, to every target, so that a node
// that does not serve them (one of an older version answers Unimplemented) fails the run at once
// rather than every call of it. Any other error is left for the run to count.
func probePacked(ctx context.Context, cfg Config, targets []Target, plaintext []byte, blobs [][]byte) error {
	for _, op := range cfg.ops() {
		if cfg.form(op) != FormPacked {
			continue
		}
		for _, t := range targets {
			cctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
			var err error
			method := ""
			switch op {
			case OpWrap:
				method = "PackedWrap"
				_, err = t.Client.PackedWrap(cctx, &kv1.PackedWrapRequest{Key: cfg.keyRef(), Plaintexts: [][]byte{plaintext}, Contexts: cfg.contexts()})
			case OpUnwrap:
				method = "PackedUnwrap"
				_, err = t.Client.PackedUnwrap(cctx, &kv1.PackedUnwrapRequest{Blobs: blobs[:1], Contexts: cfg.contexts()})
			case OpDataKey:
				method = "PackedGenerateDataKey"
				_, err = t.Client.PackedGenerateDataKey(cctx, &kv1.PackedGenerateDataKeyRequest{Key: cfg.keyRef(), Count: 1, Contexts: cfg.contexts()})
			}
			cancel()
			if status.Code(err) == codes.Unimplemented {
				return fmt.Errorf("bench: %s does not serve %s (a node of an older version?): %s; the per-item batch form (-batch-form items) does not need it",
					t.Name, method, status.Convert(err).Message())
			}
		}
	}
	return nil
}

// caller sends calls one at a time. Its requests are built once and reused: the generator shares
// the machine with what it measures, so it allocates as little as it can per call.
type caller struct {
	cfg    Config
	client kv1.WrapServiceClient
	blobs  [][]byte
	next   int // the next blob

	wrap     *kv1.WrapRequest
	unwrap   *kv1.UnwrapRequest
	datakey  *kv1.GenerateDataKeyRequest
	rewrap   *kv1.RewrapRequest
	bwrap    *kv1.BatchWrapRequest
	bunwrap  *kv1.BatchUnwrapRequest
	bdatakey *kv1.BatchGenerateDataKeyRequest
	brewrap  *kv1.BatchRewrapRequest
	pwrap    *kv1.PackedWrapRequest
	punwrap  *kv1.PackedUnwrapRequest
	pdatakey *kv1.PackedGenerateDataKeyRequest

	// With Config.Keys > 1: the keys, and the draw of each call's key.
	refs []*kv1.KeyRef
	pick func() int

	// The calls' context (see callContext): its deadline, and when it is renewed.
	cctx    context.Context
	ccancel context.CancelFunc
	renew   time.Time
}

// callContext returns the context of a call sent at now: one per caller, whose deadline is
// Config.CallTimeout after it was made, made again once half of that has passed (or it ended).
// Each call thus has at least half of -call-timeout and at most all of it. A context of its own
// per call (context.WithTimeout) costs a timer, a context and a channel per call: 11 % of the
// generator's process CPU at 16 callers on the framed socket (87k data keys a second), charged to
// whichever path was measured; the deadline is there only so that a stuck call ends the run's
// wait for it, which this keeps.
func (c *caller) callContext(ctx context.Context, now time.Time) context.Context {
	if c.cctx == nil || !now.Before(c.renew) || c.cctx.Err() != nil {
		c.endContext()
		c.cctx, c.ccancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
		c.renew = now.Add(c.cfg.CallTimeout / 2)
	}
	return c.cctx
}

// endContext releases the calls' context, once the caller is done.
func (c *caller) endContext() {
	if c.ccancel != nil {
		c.ccancel()
		c.cctx, c.ccancel = nil, nil
	}
}

// newCaller makes caller w; refs are cfg.keyRefs(), shared by the callers.
func newCaller(cfg Config, client kv1.WrapServiceClient, blobs [][]byte, refs []*kv1.KeyRef, w int) *caller {
	c := &caller{cfg: cfg, client: client, blobs: blobs, next: w * 7}
	ref := cfg.keyRef()
	plaintext := make([]byte, wrap.KeySize)
	rand.Read(plaintext)
	c.wrap = &kv1.WrapRequest{Key: ref, Plaintext: plaintext, Context: cfg.Context}
	c.unwrap = &kv1.UnwrapRequest{Context: cfg.Context}
	c.datakey = &kv1.GenerateDataKeyRequest{Key: ref, Context: cfg.Context}
	c.rewrap = &kv1.RewrapRequest{Context: cfg.Context}
	if cfg.Batch > 0 {
		c.bwrap = &kv1.BatchWrapRequest{}
		c.bunwrap = &kv1.BatchUnwrapRequest{}
		c.bdatakey = &kv1.BatchGenerateDataKeyRequest{}
		c.brewrap = &kv1.BatchRewrapRequest{}
		for range cfg.Batch {
			c.bwrap.Items = append(c.bwrap.Items, c.wrap)
			c.bdatakey.Items = append(c.bdatakey.Items, c.datakey)
			c.bunwrap.Items = append(c.bunwrap.Items, &kv1.UnwrapRequest{Context: cfg.Context})
			c.brewrap.Items = append(c.brewrap.Items, &kv1.RewrapRequest{Context: cfg.Context})
		}
		// The packed forms: every item shares the key and the one context; the plaintexts are
		// the same slice n times, as the items above share one WrapRequest.
		c.pwrap = &kv1.PackedWrapRequest{Key: ref, Plaintexts: make([][]byte, cfg.Batch), Contexts: cfg.contexts()}
		for i := range c.pwrap.Plaintexts {
			c.pwrap.Plaintexts[i] = plaintext
		}
		c.punwrap = &kv1.PackedUnwrapRequest{Blobs: make([][]byte, cfg.Batch), Contexts: cfg.contexts()}
		c.pdatakey = &kv1.PackedGenerateDataKeyRequest{Key: ref, Count: uint32(cfg.Batch), Contexts: cfg.contexts()}
	}
	if cfg.Keys > 1 {
		c.refs = refs
		// A generator of the caller's own (no lock shared between callers), seeded apart.
		var seed [16]byte
		rand.Read(seed[:])
		r := mrand.New(mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
		if cfg.KeyDist == DistUniform {
			c.pick = func() int { return r.IntN(len(c.refs)) }
		} else {
			z := mrand.NewZipf(r, ZipfS, 1, uint64(len(c.refs)-1))
			c.pick = func() int { return int(z.Uint64()) }
		}
	}
	return c
}

// nextKey points the requests at the next call's key, when the run spreads over several.
func (c *caller) nextKey() {
	if c.pick == nil {
		return
	}
	ref := c.refs[c.pick()]
	c.wrap.Key, c.datakey.Key = ref, ref // the per-item batches share these two requests
	if c.pwrap != nil {
		c.pwrap.Key, c.pdatakey.Key = ref, ref
	}
}

func (c *caller) blob() []byte {
	b := c.blobs[c.next%len(c.blobs)]
	c.next++
	return b
}

// closedLoop sends the next call as soon as the last one is answered, until the run ends.
func (c *caller) closedLoop(ctx context.Context, rec *recorder, w int) {
	ops := c.cfg.ops()
	defer c.endContext()
	for i := w; ; i++ {
		sent := time.Now()
		if !sent.Before(rec.end) {
			return
		}
		op := ops[i%len(ops)]
		o := c.call(c.callContext(ctx, sent), op)
		if ctx.Err() != nil {
			return // interrupted: the call's error is not the server's
		}
		rec.record(op, sent, time.Now(), o)
	}
}

// openLoop takes the next call of the schedule, waits for its due time, sends it, and measures
// its latency from the due time: a call that starts late because every caller was busy, or
// because the generator itself stalled, is charged for the delay.
func (c *caller) openLoop(ctx context.Context, rec *recorder, seq *atomic.Int64) {
	ops := c.cfg.ops()
	interval := c.cfg.interval()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer c.endContext()
	for {
		i := seq.Add(1) - 1
		due := rec.start.Add(time.Duration(i) * interval)
		if !due.Before(rec.end) || !time.Now().Before(rec.end) {
			return // a call due but not sent by the end is counted as unsent
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		op := ops[int(i%int64(len(ops)))]
		o := c.call(c.callContext(ctx, time.Now()), op)
		if ctx.Err() != nil {
			return
		}
		rec.record(op, due, time.Now(), o)
	}
}

// call sends one call of op and returns its outcome.
func (c *caller) call(ctx context.Context, op Op) outcome {
	c.nextKey()
	if c.cfg.Batch == 0 {
		var err error
		switch op {
		case OpWrap:
			_, err = c.client.Wrap(ctx, c.wrap)
		case OpUnwrap:
			c.unwrap.Blob = c.blob()
			_, err = c.client.Unwrap(ctx, c.unwrap)
		case OpDataKey:
			_, err = c.client.GenerateDataKey(ctx, c.datakey)
		case OpRewrap:
			c.rewrap.Blob = c.blob()
			_, err = c.client.Rewrap(ctx, c.rewrap)
		}
		if err != nil {
			return outcome{items: 1, fails: []codes.Code{status.Code(err)}, whole: true}
		}
		return outcome{items: 1, ok: 1}
	}
	if c.cfg.form(op) == FormPacked {
		return c.callPacked(ctx, op)
	}
	var errs []*kv1.ItemError
	var err error
	got := 0
	switch op {
	case OpWrap:
		var resp *kv1.BatchWrapResponse
		if resp, err = c.client.BatchWrap(ctx, c.bwrap); err == nil {
			got = len(resp.GetResults())
			for _, r := range resp.GetResults() {
				errs = appendItemError(errs, r.GetError(), r.GetValue() != nil)
			}
		}
	case OpUnwrap:
		for _, it := range c.bunwrap.Items {
			it.Blob = c.blob()
		}
		var resp *kv1.BatchUnwrapResponse
		if resp, err = c.client.BatchUnwrap(ctx, c.bunwrap); err == nil {
			got = len(resp.GetResults())
			for _, r := range resp.GetResults() {
				errs = appendItemError(errs, r.GetError(), r.GetValue() != nil)
			}
		}
	case OpDataKey:
		var resp *kv1.BatchGenerateDataKeyResponse
		if resp, err = c.client.BatchGenerateDataKey(ctx, c.bdatakey); err == nil {
			got = len(resp.GetResults())
			for _, r := range resp.GetResults() {
				errs = appendItemError(errs, r.GetError(), r.GetValue() != nil)
			}
		}
	case OpRewrap:
		for _, it := range c.brewrap.Items {
			it.Blob = c.blob()
		}
		var resp *kv1.BatchRewrapResponse
		if resp, err = c.client.BatchRewrap(ctx, c.brewrap); err == nil {
			got = len(resp.GetResults())
			for _, r := range resp.GetResults() {
				errs = appendItemError(errs, r.GetError(), r.GetValue() != nil)
			}
		}
	}
	return batchOutcome(c.cfg.Batch, got, err, errs)
}

// callPacked sends one call of op in the packed form (wrap, unwrap and datakey have one).
func (c *caller) callPacked(ctx context.Context, op Op) outcome {
	var errs []*kv1.ItemError
	var err error
	got := 0
	switch op {
	case OpWrap:
		var resp *kv1.PackedWrapResponse
		if resp, err = c.client.PackedWrap(ctx, c.pwrap); err == nil {
			got = len(resp.GetBlobs())
			for _, b := range resp.GetBlobs() {
				errs = appendItemError(errs, nil, len(b) > 0)
			}
		}
	case OpUnwrap:
		for i := range c.punwrap.Blobs {
			c.punwrap.Blobs[i] = c.blob()
		}
		var resp *kv1.PackedUnwrapResponse
		if resp, err = c.client.PackedUnwrap(ctx, c.punwrap); err == nil {
			got = len(resp.GetPlaintexts())
			errs = packedUnwrapErrors(errs, resp)
		}
	case OpDataKey:
		var resp *kv1.PackedGenerateDataKeyResponse
		if resp, err = c.client.PackedGenerateDataKey(ctx, c.pdatakey); err == nil {
			pts, blobs := resp.GetPlaintexts(), resp.GetBlobs()
			got = min(len(pts), len(blobs))
			for i := range got {
				errs = appendItemError(errs, nil, len(pts[i]) > 0 && len(blobs[i]) > 0)
			}
		}
	}
	return batchOutcome(c.cfg.Batch, got, err, errs)
}

// packedUnwrapErrors appends to errs the failed items of a PackedUnwrap answer, one per item: the
// item's entry in resp.errors, or, for an item with neither a plaintext nor an entry, Internal (as
// a batch result with neither value nor error). Entries out of order or repeated are skipped, so
// their items count once, as missing.
func packedUnwrapErrors(errs []*kv1.ItemError, resp *kv1.PackedUnwrapResponse) []*kv1.ItemError {
	pe := resp.GetErrors()
	j := 0
	for i, p := range resp.GetPlaintexts() {
		for j < len(pe) && pe[j].GetIndex() < uint32(i) {
			j++
		}
		if j < len(pe) && pe[j].GetIndex() == uint32(i) {
			errs = appendItemError(errs, pe[j].GetError(), false)
			j++
			continue
		}
		errs = appendItemError(errs, nil, len(p) > 0)
	}
	return errs
}

// missingResult stands for a result that carries neither a value nor an error.
var missingResult = &kv1.ItemError{Code: uint32(codes.Internal)}

func appendItemError(errs []*kv1.ItemError, e *kv1.ItemError, hasValue bool) []*kv1.ItemError {
	switch {
	case e != nil:
		return append(errs, e)
	case !hasValue:
		return append(errs, missingResult)
	}
	return errs
}

// batchOutcome is the outcome of a batch call of n items answered with got results, errs among
// them: a failed call fails every item; results missing from an answer count as Internal.
func batchOutcome(n, got int, err error, errs []*kv1.ItemError) outcome {
	o := outcome{items: n}
	if err != nil {
		code := status.Code(err)
		o.whole = true
		o.fails = make([]codes.Code, n)
		for i := range o.fails {
			o.fails[i] = code
		}
		return o
	}
	for _, e := range errs {
		o.fails = append(o.fails, codes.Code(e.GetCode()))
	}
	for range max(n-got, 0) {
		o.fails = append(o.fails, codes.Internal)
	}
	o.ok = max(n-len(o.fails), 0)
	return o
}
