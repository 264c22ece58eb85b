package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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
// rather than as a run of errors. During the run, errors are counted by gRPC code and never stop
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
	for w := range cfg.Callers {
		c := newCaller(cfg, targets[w%len(targets)].Client, blobs, w)
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
	return newResult(cfg, names, start, measured, interrupted, rec), nil
}

// prepare checks that every target wraps, and makes the blobs that unwrap and rewrap open.
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
	if !needBlobs {
		return nil, nil
	}
	n := max(blobPool, cfg.Batch)
	req := &kv1.BatchWrapRequest{Items: make([]*kv1.WrapRequest, n)}
	for i := range req.Items {
		p := make([]byte, wrap.KeySize)
		rand.Read(p)
		req.Items[i] = &kv1.WrapRequest{Key: cfg.keyRef(), Plaintext: p, Context: cfg.Context}
	}
	resp, err := targets[0].Client.BatchWrap(ctx, req)
	if err != nil {
		st := status.Convert(err)
		return nil, fmt.Errorf("bench: %s: making %d blobs to unwrap: %s: %s", targets[0].Name, n, st.Code(), st.Message())
	}
	blobs := make([][]byte, 0, n)
	for _, r := range resp.GetResults() {
		if e := r.GetError(); e != nil {
			return nil, fmt.Errorf("bench: %s: making blobs to unwrap: %s: %s", targets[0].Name, codes.Code(e.GetCode()), e.GetMessage())
		}
		blobs = append(blobs, r.GetValue().GetBlob())
	}
	return blobs, nil
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
}

func newCaller(cfg Config, client kv1.WrapServiceClient, blobs [][]byte, w int) *caller {
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
	}
	return c
}

func (c *caller) blob() []byte {
	b := c.blobs[c.next%len(c.blobs)]
	c.next++
	return b
}

// closedLoop sends the next call as soon as the last one is answered, until the run ends.
func (c *caller) closedLoop(ctx context.Context, rec *recorder, w int) {
	ops := c.cfg.ops()
	for i := w; ; i++ {
		sent := time.Now()
		if !sent.Before(rec.end) {
			return
		}
		op := ops[i%len(ops)]
		o := c.call(ctx, op)
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
		o := c.call(ctx, op)
		if ctx.Err() != nil {
			return
		}
		rec.record(op, due, time.Now(), o)
	}
}

// call sends one call of op and returns its outcome.
func (c *caller) call(ctx context.Context, op Op) outcome {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
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
