package region

import (
	"context"
	"crypto/rand"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// wrapService serves krypton.v1.WrapService on every node. Each call checks, in order: the
// serving lease (Unavailable), the request's shape (InvalidArgument), the caller's right to the key
// (PermissionDenied), and the state machine's word on the key (NotFound, FailedPrecondition) —
// all before any key is touched.
type wrapService struct {
	kv1.UnimplementedWrapServiceServer
	n *Node
}

// usableKey checks everything but the request's payload and returns the L3 version to use, pinned
// in the keyring until the caller calls release (eviction passes it by meanwhile).
// pop is the operation the caller asked for, as policy names it.
func (n *Node) usableKey(ctx context.Context, ref *kv1.KeyRef, op fsm.Op, pop policy.Op) (_ *wrap.ServiceKey, release func(), _ error) {
	ctx, span := tracing.StartSpan(ctx, n.tracer, "region.key")
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(tracing.Tenant.String(ref.GetTenant()), tracing.Service.String(ref.GetService()),
			tracing.KeyVersion.Int64(int64(ref.GetVersion())), tracing.Op.String(string(pop)))
	}
	if err := n.Serving(); err != nil {
		return nil, nil, err
	}
	if ref.GetTenant() == "" || ref.GetService() == "" {
		return nil, nil, ErrMissingKey
	}
	if err := n.authorize(ctx, ref.GetTenant(), ref.GetService(), pop); err != nil {
		return nil, nil, err
	}
	// The quota after the policy, so that no caller spends another tenant's quota; before the
	// state is read at the leader and any key is opened.
	if err := n.admitQuota(ctx, ref.GetTenant(), ref.GetService()); err != nil {
		return nil, nil, err
	}
	// A key created a moment ago on another node may not be applied here yet: freshRead catches
	// up with the leader and looks again, so that "create, then wrap anywhere" works, and a node
	// that cannot catch up answers Unavailable, not NotFound.
	v, err := freshRead(ctx, n, func() (uint32, error) {
		return n.state.Usable(ref.GetTenant(), ref.GetService(), ref.GetVersion(), op)
	})
	if errors.Is(err, fsm.ErrLocked) {
		return nil, nil, n.lockedError(ref.GetTenant())
	}
	if errors.Is(err, fsm.ErrAnchorDeleted) {
		return nil, nil, status.Error(codes.FailedPrecondition, "region: tenant "+ref.GetTenant()+"'s root-key pointer was deleted (the kill switch): every use of its keys is refused until governance sets an anchor again")
	}
	if err != nil {
		return nil, nil, err
	}
	// The durable revocation set holds every revocation this node has seen, whatever snapshot
	// the state was restored from since (DESIGN.md, "Revocations survive every restore").
	if !unsafeRestoreUngated && n.revs.revoked(ref.GetTenant(), ref.GetService(), v) {
		return nil, nil, status.Errorf(codes.FailedPrecondition, "region: key %s/%s v%d was revoked (this node's durable revocation set); revocation is final", ref.GetTenant(), ref.GetService(), v)
	}
	return n.serviceKey(ctx, wrap.KeyID{Tenant: ref.GetTenant(), Service: ref.GetService(), Version: v})
}

// blobKey reads the key a blob names and checks it as usableKey does.
func (n *Node) blobKey(ctx context.Context, blob, context []byte, op fsm.Op, pop policy.Op) (*wrap.ServiceKey, func(), error) {
	if err := n.Serving(); err != nil {
		return nil, nil, err
	}
	ref, err := blobRef(blob, context)
	if err != nil {
		return nil, nil, err
	}
	return n.usableKey(ctx, &ref, op, pop)
}

// blobRef checks a blob and its context and returns the key the blob names.
func blobRef(blob, context []byte) (kv1.KeyRef, error) {
	if err := transport.CheckBlob(blob); err != nil {
		return kv1.KeyRef{}, err
	}
	if err := transport.CheckContext(context); err != nil {
		return kv1.KeyRef{}, err
	}
	h, err := wrap.ParseHeader(blob)
	if err != nil {
		return kv1.KeyRef{}, err
	}
	if h.Kind != wrap.KindWrappedDataKey || h.Parent.Version == 0 {
		return kv1.KeyRef{}, wrap.ErrMalformed
	}
	return kv1.KeyRef{Tenant: h.Parent.Tenant, Service: h.Parent.Service, Version: h.Parent.Version}, nil
}

// lookAgain is usableKey for a call whose key was destroyed between its lookup and its use: wiped
// by a revocation (the state check now refuses it) or by a restore or shutdown (the next lookup
// opens it again). A pinned key is never evicted. It releases the pin on the destroyed key first.
func (n *Node) lookAgain(ctx context.Context, ref *kv1.KeyRef, op fsm.Op, pop policy.Op, release func()) (*wrap.ServiceKey, func(), error) {
	release()
	return n.usableKey(ctx, ref, op, pop)
}

func keyRef(id wrap.KeyID) *kv1.KeyRef {
	return &kv1.KeyRef{Tenant: id.Tenant, Service: id.Service, Version: id.Version}
}

// The unary answers and the key reference they carry, each pair in one allocation.
type (
	wrapAnswer struct {
		resp kv1.WrapResponse
		ref  kv1.KeyRef
	}
	unwrapAnswer struct {
		resp kv1.UnwrapResponse
		ref  kv1.KeyRef
	}
	dataKeyAnswer struct {
		resp kv1.GenerateDataKeyResponse
		ref  kv1.KeyRef
	}
)

// setKeyRef sets ref to name id.
func setKeyRef(ref *kv1.KeyRef, id wrap.KeyID) {
	ref.Tenant, ref.Service, ref.Version = id.Tenant, id.Service, id.Version
}

func (n *Node) wrapOne(ctx context.Context, req *kv1.WrapRequest) (*kv1.WrapResponse, error) {
	// The request's copy of the plaintext is wiped whatever the outcome (as wrap.DataKeyFromBytes
	// did); it is wrapped from where it lies, without a wrap.DataKey.
	defer clear(req.GetPlaintext())
	if err := transport.CheckPlaintext(req.GetPlaintext()); err != nil {
		return nil, err
	}
	if err := transport.CheckContext(req.GetContext()); err != nil {
		return nil, err
	}
	l3, release, err := n.usableKey(ctx, req.GetKey(), fsm.OpWrap, policy.Wrap)
	if err != nil {
		return nil, err
	}
	defer func() { release() }()
	if err := wrap.CheckDataKey(req.GetPlaintext()); errors.Is(err, wrap.ErrInvalidKey) {
		return nil, errWeakDataKey
	} else if err != nil {
		return nil, err
	}
	defer n.cryptoSpan(ctx, 1).End()
	blob, err := l3.WrapKey(req.GetPlaintext(), req.GetContext())
	if errors.Is(err, wrap.ErrDestroyed) {
		if l3, release, err = n.lookAgain(ctx, req.GetKey(), fsm.OpWrap, policy.Wrap, release); err != nil {
			release = func() {}
		} else {
			blob, err = l3.WrapKey(req.GetPlaintext(), req.GetContext())
		}
	}
	if err != nil {
		return nil, err
	}
	a := &wrapAnswer{}
	setKeyRef(&a.ref, l3.ID())
	a.resp.Blob, a.resp.Key = blob, &a.ref
	return &a.resp, nil
}

func (n *Node) unwrapOne(ctx context.Context, req *kv1.UnwrapRequest) (*kv1.UnwrapResponse, error) {
	l3, release, err := n.blobKey(ctx, req.GetBlob(), req.GetContext(), fsm.OpUnwrap, policy.Unwrap)
	if err != nil {
		return nil, err
	}
	defer n.cryptoSpan(ctx, 1).End()
	defer func() { release() }()
	// The plaintext goes into the answer as UnwrapKey returns it: no wrap.DataKey and no copy.
	plaintext, err := l3.UnwrapKey(req.GetBlob(), req.GetContext())
	if errors.Is(err, wrap.ErrDestroyed) {
		if l3, release, err = n.lookAgain(ctx, keyRef(l3.ID()), fsm.OpUnwrap, policy.Unwrap, release); err != nil {
			release = func() {}
		} else {
			plaintext, err = l3.UnwrapKey(req.GetBlob(), req.GetContext())
		}
	}
	if err != nil {
		return nil, err
	}
	a := &unwrapAnswer{}
	setKeyRef(&a.ref, l3.ID())
	a.resp.Plaintext, a.resp.Key = plaintext, &a.ref
	return &a.resp, nil
}

func (n *Node) generateOne(ctx context.Context, req *kv1.GenerateDataKeyRequest) (*kv1.GenerateDataKeyResponse, error) {
	if err := transport.CheckContext(req.GetContext()); err != nil {
		return nil, err
	}
	l3, release, err := n.usableKey(ctx, req.GetKey(), fsm.OpWrap, policy.GenerateDataKey)
	if err != nil {
		return nil, err
	}
	defer n.cryptoSpan(ctx, 1).End()
	defer func() { release() }()
	// The data key is made where the answer carries it, as the packed form's are: no wrap.DataKey
	// and no copy. It is wiped if the call fails.
	plaintext := make([]byte, wrap.KeySize)
	_, _ = rand.Read(plaintext) // never fails: crypto/rand crashes the process instead (Go 1.24+)
	blob, err := l3.WrapKey(plaintext, req.GetContext())
	if errors.Is(err, wrap.ErrDestroyed) {
		if l3, release, err = n.lookAgain(ctx, req.GetKey(), fsm.OpWrap, policy.GenerateDataKey, release); err != nil {
			release = func() {}
		} else {
			blob, err = l3.WrapKey(plaintext, req.GetContext())
		}
	}
	if err != nil {
		clear(plaintext)
		return nil, err
	}
	a := &dataKeyAnswer{}
	setKeyRef(&a.ref, l3.ID())
	a.resp.Plaintext, a.resp.Blob, a.resp.Key = plaintext, blob, &a.ref
	return &a.resp, nil
}

func (n *Node) rewrapOne(ctx context.Context, req *kv1.RewrapRequest) (*kv1.RewrapResponse, error) {
	src, releaseSrc, err := n.blobKey(ctx, req.GetBlob(), req.GetContext(), fsm.OpUnwrap, policy.Rewrap)
	if err != nil {
		return nil, err
	}
	defer releaseSrc()
	sid := src.ID()
	dst, releaseDst, err := n.usableKey(ctx, &kv1.KeyRef{Tenant: sid.Tenant, Service: sid.Service}, fsm.OpWrap, policy.Rewrap)
	if err != nil {
		return nil, err
	}
	defer releaseDst()
	dk, err := src.Unwrap(req.GetBlob(), req.GetContext())
	if err != nil {
		return nil, err
	}
	defer dk.Destroy()
	blob, err := dst.Wrap(dk, req.GetContext())
	if err != nil {
		return nil, err
	}
	return &kv1.RewrapResponse{Blob: blob, Key: keyRef(dst.ID()), SourceKey: keyRef(sid)}, nil
}

// lockedError says why a tenant is locked out ("L1 unavailable: ..." after the L1 check, or the
// operator's reason). Reasons are written by Krypton and operators, never key material.
func (n *Node) lockedError(tenant string) error {
	reason := "locked by an operator"
	if t, err := n.state.Tenant(tenant); err == nil && t.LockReason != "" {
		reason = t.LockReason
	}
	return status.Error(codes.FailedPrecondition, "region: tenant "+tenant+" is locked out: "+reason)
}

func isNotFound(err error) bool {
	return errors.Is(err, fsm.ErrTenantNotFound) || errors.Is(err, fsm.ErrServiceNotFound) || errors.Is(err, fsm.ErrVersionNotFound)
}

// errWeakDataKey refuses a plaintext that cannot be a data key (all zero bytes).
var errWeakDataKey = transport.Invalid("region: the plaintext is not a usable data key (all zero bytes)")

// dataKey takes a caller's plaintext as a data key; the request's copy is wiped.
func dataKey(plaintext []byte) (*wrap.DataKey, error) {
	dk, err := wrap.DataKeyFromBytes(plaintext)
	if errors.Is(err, wrap.ErrInvalidKey) {
		return nil, errWeakDataKey
	}
	return dk, err
}

// cryptoSpan starts the span of a call's cryptography on items items (a child of ctx's span);
// the caller ends it. Off, it is a span that records nothing.
func (n *Node) cryptoSpan(ctx context.Context, items int) trace.Span {
	_, span := tracing.StartSpan(ctx, n.tracer, "region.crypto")
	if span.IsRecording() {
		span.SetAttributes(tracing.BatchSize.Int(items))
	}
	return span
}

// observe records an operation's latency on the node's histogram.
func (n *Node) observe(op string, start time.Time) {
	o, ok := n.metrics.opObservers.Load(op)
	if !ok {
		o, _ = n.metrics.opObservers.LoadOrStore(op, n.metrics.ops.WithLabelValues(op))
	}
	o.(prometheus.Observer).Observe(time.Since(start).Seconds())
}

func (s *wrapService) Wrap(ctx context.Context, req *kv1.WrapRequest) (*kv1.WrapResponse, error) {
	defer s.n.observe("wrap", time.Now())
	ctx, qc := s.n.quotaStart(ctx, 1)
	defer qc.end()
	return s.n.wrapOne(ctx, req)
}

func (s *wrapService) Unwrap(ctx context.Context, req *kv1.UnwrapRequest) (*kv1.UnwrapResponse, error) {
	defer s.n.observe("unwrap", time.Now())
	ctx, qc := s.n.quotaStart(ctx, 1)
	defer qc.end()
	return s.n.unwrapOne(ctx, req)
}

func (s *wrapService) GenerateDataKey(ctx context.Context, req *kv1.GenerateDataKeyRequest) (*kv1.GenerateDataKeyResponse, error) {
	defer s.n.observe("generate-data-key", time.Now())
	ctx, qc := s.n.quotaStart(ctx, 1)
	defer qc.end()
	return s.n.generateOne(ctx, req)
}

func (s *wrapService) Rewrap(ctx context.Context, req *kv1.RewrapRequest) (*kv1.RewrapResponse, error) {
	defer s.n.observe("rewrap", time.Now())
	ctx, qc := s.n.quotaStart(ctx, 1)
	defer qc.end()
	return s.n.rewrapOne(ctx, req)
}

// itemError turns one item's failure into its per-item status, through the same error table as a
// whole call's.
func itemError(err error) *kv1.ItemError {
	return kv1.NewItemError(status.Convert(transport.ToStatus(err)))
}

// batchKeys remembers, for one batch call, the outcome of usableKey for each key reference and
// operation its items named: a batch pays for the lease, policy, state and keyring checks once per
// distinct key, not once per item. The checks are the same as for unary calls; they only run
// earlier for the later items of a batch (microseconds), as a unary call's run before its wrap.
type batchKeys struct {
	n   *Node
	ctx context.Context
	// refused is a quota's refusal of one of the keys: it fails the whole call, before any key is
	// used (quota.go).
	refused error
	last    *batchKey // the entry found or made last: batches usually name one key
	entries map[batchKeyRef]*batchKey
}

type batchKeyRef struct {
	tenant, service string
	version         uint32
	op              fsm.Op
	pop             policy.Op
}

type batchKey struct {
	ref     batchKeyRef
	l3      *wrap.ServiceKey
	release func() // unpins l3 (nil when err is set)
	err     error
	out     *kv1.KeyRef // the key as responses name it, shared by the items wrapped under it
}

// get is usableKey for ref, op and pop, once per batch.
func (b *batchKeys) get(ref *kv1.KeyRef, op fsm.Op, pop policy.Op) *batchKey {
	k := batchKeyRef{ref.GetTenant(), ref.GetService(), ref.GetVersion(), op, pop}
	if b.last != nil && b.last.ref == k {
		return b.last
	}
	e := b.entries[k]
	if e == nil {
		e = &batchKey{ref: k}
		e.l3, e.release, e.err = b.n.usableKey(b.ctx, ref, op, pop)
		if e.err == nil {
			e.out = keyRef(e.l3.ID())
		} else if b.refused == nil && isQuotaRefusal(e.err) {
			b.refused = e.err
		}
		if b.entries == nil {
			b.entries = make(map[batchKeyRef]*batchKey)
		}
		b.entries[k] = e
	}
	b.last = e
	return e
}

// again looks k up once more after its key was destroyed under the batch (see lookAgain).
func (k *batchKey) again(b *batchKeys) error {
	ref := &kv1.KeyRef{Tenant: k.ref.tenant, Service: k.ref.service, Version: k.ref.version}
	l3, release, err := b.n.lookAgain(b.ctx, ref, k.ref.op, k.ref.pop, k.release)
	k.release = release
	if err != nil {
		return err
	}
	k.l3 = l3
	return nil
}

// done unpins the keys the batch looked up; the batch's handler defers it.
func (b *batchKeys) done() {
	for _, e := range b.entries {
		if e.release != nil {
			e.release()
			e.release = nil
		}
	}
}

// wrapBatch wraps dks under k's key, looking it up once more if it was destroyed meanwhile.
func (k *batchKey) wrapBatch(b *batchKeys, dks []*wrap.DataKey, ctxs [][]byte) ([][]byte, error) {
	defer b.n.cryptoSpan(b.ctx, len(dks)).End()
	blobs, err := k.l3.WrapBatch(dks, ctxs)
	if errors.Is(err, wrap.ErrDestroyed) {
		if err = k.again(b); err == nil {
			blobs, err = k.l3.WrapBatch(dks, ctxs)
		}
	}
	return blobs, err
}

// batchGroup is the items of a batch that use one key.
type batchGroup struct {
	key  *batchKey
	idx  []int
	dks  []*wrap.DataKey
	ctxs [][]byte
}

// groups collects batch items by key, in the order the keys first appear.
type groups struct {
	list  []*batchGroup
	byKey map[*batchKey]*batchGroup
}

// destroy wipes the data keys of every group (a call refused after they were made).
func (gs *groups) destroy() {
	for _, g := range gs.list {
		for _, dk := range g.dks {
			dk.Destroy()
		}
	}
}

func (gs *groups) add(k *batchKey, i int, dk *wrap.DataKey, ctx []byte, size int) {
	g := gs.byKey[k]
	if g == nil {
		if gs.byKey == nil {
			gs.byKey = make(map[*batchKey]*batchGroup)
		}
		g = &batchGroup{key: k, idx: make([]int, 0, size), dks: make([]*wrap.DataKey, 0, size), ctxs: make([][]byte, 0, size)}
		gs.byKey[k] = g
		gs.list = append(gs.list, g)
	}
	g.idx = append(g.idx, i)
	g.dks = append(g.dks, dk)
	g.ctxs = append(g.ctxs, ctx)
}

// BatchWrap wraps the items that share a key under one derived key (wrap.WrapBatch), and each of
// the others alone. Items fail one by one; the call itself fails only when it is malformed or the
// node cannot serve at all.
func (s *wrapService) BatchWrap(ctx context.Context, req *kv1.BatchWrapRequest) (*kv1.BatchWrapResponse, error) {
	defer s.n.observe("batch-wrap", time.Now())
	items := req.GetItems()
	if err := s.n.batchPreamble(len(items)); err != nil {
		return nil, err
	}
	ctx, qc := s.n.quotaStart(ctx, len(items))
	defer qc.end()
	results := make([]*kv1.WrapResult, len(items))
	keys := batchKeys{n: s.n, ctx: ctx}
	defer keys.done()
	var gs groups
	for i, item := range items {
		fail := func(err error) {
			results[i] = &kv1.WrapResult{Result: &kv1.WrapResult_Error{Error: itemError(err)}}
		}
		if err := transport.CheckPlaintext(item.GetPlaintext()); err != nil {
			fail(err)
			continue
		}
		if err := transport.CheckContext(item.GetContext()); err != nil {
			fail(err)
			continue
		}
		k := keys.get(item.GetKey(), fsm.OpWrap, policy.Wrap)
		if k.err != nil {
			fail(k.err)
			continue
		}
		dk, err := dataKey(item.GetPlaintext())
		if err != nil {
			fail(err)
			continue
		}
		gs.add(k, i, dk, item.GetContext(), len(items))
	}
	if keys.refused != nil {
		gs.destroy()
		return nil, keys.refused
	}
	// The successful results, in three allocations rather than three per item.
	vals := make([]kv1.WrapResult, len(items))
	oneofs := make([]kv1.WrapResult_Value, len(items))
	resps := make([]kv1.WrapResponse, len(items))
	for _, g := range gs.list {
		blobs, err := g.key.wrapBatch(&keys, g.dks, g.ctxs)
		for j, i := range g.idx {
			g.dks[j].Destroy()
			if err != nil {
				results[i] = &kv1.WrapResult{Result: &kv1.WrapResult_Error{Error: itemError(err)}}
				continue
			}
			resps[i].Blob, resps[i].Key = blobs[j], g.key.out
			oneofs[i].Value = &resps[i]
			vals[i].Result = &oneofs[i]
			results[i] = &vals[i]
		}
	}
	return &kv1.BatchWrapResponse{Results: results}, nil
}

// BatchUnwrap opens each item's blob, checking each key once per batch and deriving once per
// distinct salt of a key (wrap.UnwrapBatch): the blobs of one BatchWrap cost one derivation.
func (s *wrapService) BatchUnwrap(ctx context.Context, req *kv1.BatchUnwrapRequest) (*kv1.BatchUnwrapResponse, error) {
	defer s.n.observe("batch-unwrap", time.Now())
	items := req.GetItems()
	if err := s.n.batchPreamble(len(items)); err != nil {
		return nil, err
	}
	ctx, qc := s.n.quotaStart(ctx, len(items))
	defer qc.end()
	results := make([]*kv1.UnwrapResult, len(items))
	fail := func(i int, err error) {
		results[i] = &kv1.UnwrapResult{Result: &kv1.UnwrapResult_Error{Error: itemError(err)}}
	}
	keys := batchKeys{n: s.n, ctx: ctx}
	defer keys.done()
	type group struct {
		key   *batchKey
		idx   []int
		blobs [][]byte
		ctxs  [][]byte
	}
	var list []*group
	byKey := map[*batchKey]*group{}
	for i, item := range items {
		ref, err := blobRef(item.GetBlob(), item.GetContext())
		if err != nil {
			fail(i, err)
			continue
		}
		k := keys.get(&ref, fsm.OpUnwrap, policy.Unwrap)
		if k.err != nil {
			fail(i, k.err)
			continue
		}
		g := byKey[k]
		if g == nil {
			g = &group{key: k}
			byKey[k] = g
			list = append(list, g)
		}
		g.idx = append(g.idx, i)
		g.blobs = append(g.blobs, item.GetBlob())
		g.ctxs = append(g.ctxs, item.GetContext())
	}
	if keys.refused != nil {
		return nil, keys.refused
	}
	vals := make([]kv1.UnwrapResult, len(items))
	oneofs := make([]kv1.UnwrapResult_Value, len(items))
	resps := make([]kv1.UnwrapResponse, len(items))
	for _, g := range list {
		span := s.n.cryptoSpan(ctx, len(g.blobs))
		dks, err := g.key.l3.UnwrapBatch(g.blobs, g.ctxs)
		span.End()
		if errors.Is(err, wrap.ErrDestroyed) && !errors.As(err, new(*wrap.BatchError)) {
			if err = g.key.again(&keys); err == nil {
				dks, err = g.key.l3.UnwrapBatch(g.blobs, g.ctxs)
			}
		}
		var be *wrap.BatchError
		errors.As(err, &be)
		for j, i := range g.idx {
			switch {
			case be != nil && be.Errs[j] != nil:
				fail(i, be.Errs[j])
				continue
			case be == nil && err != nil:
				fail(i, err)
				continue
			}
			resps[i].Plaintext, resps[i].Key = dks[j].Bytes(), g.key.out
			dks[j].Destroy()
			oneofs[i].Value = &resps[i]
			vals[i].Result = &oneofs[i]
			results[i] = &vals[i]
		}
	}
	return &kv1.BatchUnwrapResponse{Results: results}, nil
}

// BatchGenerateDataKey makes a data key per item and wraps those that share a key under one
// derived key, as BatchWrap does.
func (s *wrapService) BatchGenerateDataKey(ctx context.Context, req *kv1.BatchGenerateDataKeyRequest) (*kv1.BatchGenerateDataKeyResponse, error) {
	defer s.n.observe("batch-generate-data-key", time.Now())
	items := req.GetItems()
	if err := s.n.batchPreamble(len(items)); err != nil {
		return nil, err
	}
	ctx, qc := s.n.quotaStart(ctx, len(items))
	defer qc.end()
	results := make([]*kv1.GenerateDataKeyResult, len(items))
	fail := func(i int, err error) {
		results[i] = &kv1.GenerateDataKeyResult{Result: &kv1.GenerateDataKeyResult_Error{Error: itemError(err)}}
	}
	keys := batchKeys{n: s.n, ctx: ctx}
	defer keys.done()
	var gs groups
	for i, item := range items {
		if err := transport.CheckContext(item.GetContext()); err != nil {
			fail(i, err)
			continue
		}
		k := keys.get(item.GetKey(), fsm.OpWrap, policy.GenerateDataKey)
		if k.err != nil {
			fail(i, k.err)
			continue
		}
		gs.add(k, i, wrap.NewDataKey(), item.GetContext(), len(items))
	}
	if keys.refused != nil {
		gs.destroy()
		return nil, keys.refused
	}
	vals := make([]kv1.GenerateDataKeyResult, len(items))
	oneofs := make([]kv1.GenerateDataKeyResult_Value, len(items))
	resps := make([]kv1.GenerateDataKeyResponse, len(items))
	for _, g := range gs.list {
		blobs, err := g.key.wrapBatch(&keys, g.dks, g.ctxs)
		for j, i := range g.idx {
			if err != nil {
				g.dks[j].Destroy()
				fail(i, err)
				continue
			}
			resps[i].Plaintext, resps[i].Blob, resps[i].Key = g.dks[j].Bytes(), blobs[j], g.key.out
			g.dks[j].Destroy()
			oneofs[i].Value = &resps[i]
			vals[i].Result = &oneofs[i]
			results[i] = &vals[i]
		}
	}
	return &kv1.BatchGenerateDataKeyResponse{Results: results}, nil
}

func (s *wrapService) BatchRewrap(ctx context.Context, req *kv1.BatchRewrapRequest) (*kv1.BatchRewrapResponse, error) {
	defer s.n.observe("batch-rewrap", time.Now())
	if err := s.n.batchPreamble(len(req.GetItems())); err != nil {
		return nil, err
	}
	ctx, qc := s.n.quotaStart(ctx, len(req.GetItems()))
	defer qc.end()
	results := make([]*kv1.RewrapResult, len(req.GetItems()))
	for i, item := range req.GetItems() {
		resp, err := s.n.rewrapOne(ctx, item)
		if isQuotaRefusal(err) {
			return nil, err
		}
		if err != nil {
			results[i] = &kv1.RewrapResult{Result: &kv1.RewrapResult_Error{Error: itemError(err)}}
			continue
		}
		results[i] = &kv1.RewrapResult{Result: &kv1.RewrapResult_Value{Value: resp}}
	}
	return &kv1.BatchRewrapResponse{Results: results}, nil
}

// batchPreamble refuses a whole batch that is malformed or that this node cannot serve at all.
func (n *Node) batchPreamble(items int) error {
	if err := transport.CheckBatch(items); err != nil {
		return err
	}
	return n.Serving()
}
