package region

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
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

// usableKey checks everything but the request's payload and returns the L3 version to use.
// pop is the operation the caller asked for, as policy names it.
func (n *Node) usableKey(ctx context.Context, ref *kv1.KeyRef, op fsm.Op, pop fsm.PolicyOp) (*wrap.ServiceKey, error) {
	if err := n.Serving(); err != nil {
		return nil, err
	}
	if ref.GetTenant() == "" || ref.GetService() == "" {
		return nil, ErrMissingKey
	}
	if err := n.authorize(ctx, ref.GetTenant(), ref.GetService(), pop); err != nil {
		return nil, err
	}
	v, err := n.state.Usable(ref.GetTenant(), ref.GetService(), ref.GetVersion(), op)
	if isNotFound(err) && n.catchUp(ctx) == nil {
		// A key created a moment ago on another node may not be applied here yet: catch up
		// with the leader once and look again, so that "create, then wrap anywhere" works.
		v, err = n.state.Usable(ref.GetTenant(), ref.GetService(), ref.GetVersion(), op)
	}
	if errors.Is(err, fsm.ErrLocked) {
		return nil, n.lockedError(ref.GetTenant())
	}
	if errors.Is(err, fsm.ErrAnchorDeleted) {
		return nil, status.Error(codes.FailedPrecondition, "region: tenant "+ref.GetTenant()+"'s root-key pointer was deleted (the kill switch): every use of its keys is refused until governance sets an anchor again")
	}
	if err != nil {
		return nil, err
	}
	return n.serviceKey(ctx, wrap.KeyID{Tenant: ref.GetTenant(), Service: ref.GetService(), Version: v})
}

// blobKey reads the key a blob names and checks it as usableKey does.
func (n *Node) blobKey(ctx context.Context, blob, context []byte, op fsm.Op, pop fsm.PolicyOp) (*wrap.ServiceKey, error) {
	if err := n.Serving(); err != nil {
		return nil, err
	}
	if err := transport.CheckBlob(blob); err != nil {
		return nil, err
	}
	if err := transport.CheckContext(context); err != nil {
		return nil, err
	}
	h, err := wrap.ParseHeader(blob)
	if err != nil {
		return nil, err
	}
	if h.Kind != wrap.KindWrappedDataKey {
		return nil, wrap.ErrMalformed
	}
	ref := &kv1.KeyRef{Tenant: h.Parent.Tenant, Service: h.Parent.Service, Version: h.Parent.Version}
	if ref.Version == 0 {
		return nil, wrap.ErrMalformed
	}
	return n.usableKey(ctx, ref, op, pop)
}

func keyRef(id wrap.KeyID) *kv1.KeyRef {
	return &kv1.KeyRef{Tenant: id.Tenant, Service: id.Service, Version: id.Version}
}

func (n *Node) wrapOne(ctx context.Context, req *kv1.WrapRequest) (*kv1.WrapResponse, error) {
	if err := transport.CheckPlaintext(req.GetPlaintext()); err != nil {
		return nil, err
	}
	if err := transport.CheckContext(req.GetContext()); err != nil {
		return nil, err
	}
	l3, err := n.usableKey(ctx, req.GetKey(), fsm.OpWrap, fsm.PolicyWrap)
	if err != nil {
		return nil, err
	}
	// DataKeyFromBytes copies the plaintext into the key and wipes the request's copy.
	dk, err := dataKey(req.GetPlaintext())
	if err != nil {
		return nil, err
	}
	defer dk.Destroy()
	blob, err := l3.Wrap(dk, req.GetContext())
	if err != nil {
		return nil, err
	}
	return &kv1.WrapResponse{Blob: blob, Key: keyRef(l3.ID())}, nil
}

func (n *Node) unwrapOne(ctx context.Context, req *kv1.UnwrapRequest) (*kv1.UnwrapResponse, error) {
	l3, err := n.blobKey(ctx, req.GetBlob(), req.GetContext(), fsm.OpUnwrap, fsm.PolicyUnwrap)
	if err != nil {
		return nil, err
	}
	dk, err := l3.Unwrap(req.GetBlob(), req.GetContext())
	if err != nil {
		return nil, err
	}
	defer dk.Destroy()
	return &kv1.UnwrapResponse{Plaintext: dk.Bytes(), Key: keyRef(l3.ID())}, nil
}

func (n *Node) generateOne(ctx context.Context, req *kv1.GenerateDataKeyRequest) (*kv1.GenerateDataKeyResponse, error) {
	if err := transport.CheckContext(req.GetContext()); err != nil {
		return nil, err
	}
	l3, err := n.usableKey(ctx, req.GetKey(), fsm.OpWrap, fsm.PolicyGenerateDataKey)
	if err != nil {
		return nil, err
	}
	dk := wrap.NewDataKey()
	defer dk.Destroy()
	blob, err := l3.Wrap(dk, req.GetContext())
	if err != nil {
		return nil, err
	}
	return &kv1.GenerateDataKeyResponse{Plaintext: dk.Bytes(), Blob: blob, Key: keyRef(l3.ID())}, nil
}

func (n *Node) rewrapOne(ctx context.Context, req *kv1.RewrapRequest) (*kv1.RewrapResponse, error) {
	src, err := n.blobKey(ctx, req.GetBlob(), req.GetContext(), fsm.OpUnwrap, fsm.PolicyRewrap)
	if err != nil {
		return nil, err
	}
	sid := src.ID()
	dst, err := n.usableKey(ctx, &kv1.KeyRef{Tenant: sid.Tenant, Service: sid.Service}, fsm.OpWrap, fsm.PolicyRewrap)
	if err != nil {
		return nil, err
	}
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

// catchUp runs a read barrier; concurrent callers share one, so a burst of requests for unknown
// keys costs the leader one round trip, not one each.
func (n *Node) catchUp(ctx context.Context) error {
	_, err, _ := n.flight.Do("barrier", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		return nil, n.cl.Barrier(ctx)
	})
	return err
}

// errWeakDataKey refuses a plaintext that cannot be a data key (all zero bytes).
var errWeakDataKey = &codedErrorInvalid{"region: the plaintext is not a usable data key (all zero bytes)"}

// dataKey takes a caller's plaintext as a data key; the request's copy is wiped.
func dataKey(plaintext []byte) (*wrap.DataKey, error) {
	dk, err := wrap.DataKeyFromBytes(plaintext)
	if errors.Is(err, wrap.ErrInvalidKey) {
		return nil, errWeakDataKey
	}
	return dk, err
}

// observe records an operation's latency on the node's histogram.
func (n *Node) observe(op string, start time.Time) {
	n.metrics.ops.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (s *wrapService) Wrap(ctx context.Context, req *kv1.WrapRequest) (*kv1.WrapResponse, error) {
	defer s.n.observe("wrap", time.Now())
	return s.n.wrapOne(ctx, req)
}

func (s *wrapService) Unwrap(ctx context.Context, req *kv1.UnwrapRequest) (*kv1.UnwrapResponse, error) {
	defer s.n.observe("unwrap", time.Now())
	return s.n.unwrapOne(ctx, req)
}

func (s *wrapService) GenerateDataKey(ctx context.Context, req *kv1.GenerateDataKeyRequest) (*kv1.GenerateDataKeyResponse, error) {
	defer s.n.observe("generate-data-key", time.Now())
	return s.n.generateOne(ctx, req)
}

func (s *wrapService) Rewrap(ctx context.Context, req *kv1.RewrapRequest) (*kv1.RewrapResponse, error) {
	defer s.n.observe("rewrap", time.Now())
	return s.n.rewrapOne(ctx, req)
}

// itemError turns one item's failure into its per-item status, through the same error table as a
// whole call's.
func itemError(err error) *kv1.ItemError {
	return kv1.NewItemError(status.Convert(transport.ToStatus(err)))
}

// BatchWrap wraps the items that share a key under one derived key (wrap.WrapBatch), and each of
// the others alone. Items fail one by one; the call itself fails only when it is malformed or the
// node cannot serve at all.
func (s *wrapService) BatchWrap(ctx context.Context, req *kv1.BatchWrapRequest) (*kv1.BatchWrapResponse, error) {
	defer s.n.observe("batch-wrap", time.Now())
	if err := s.n.batchPreamble(len(req.GetItems())); err != nil {
		return nil, err
	}
	results := make([]*kv1.WrapResult, len(req.GetItems()))
	// Group the items by the key they name, so that each group pays for one derivation.
	type group struct {
		l3   *wrap.ServiceKey
		idx  []int
		dks  []*wrap.DataKey
		ctxs [][]byte
	}
	groups := map[wrap.KeyID]*group{}
	for i, item := range req.GetItems() {
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
		l3, err := s.n.usableKey(ctx, item.GetKey(), fsm.OpWrap, fsm.PolicyWrap)
		if err != nil {
			fail(err)
			continue
		}
		dk, err := dataKey(item.GetPlaintext())
		if err != nil {
			fail(err)
			continue
		}
		g := groups[l3.ID()]
		if g == nil {
			g = &group{l3: l3}
			groups[l3.ID()] = g
		}
		g.idx = append(g.idx, i)
		g.dks = append(g.dks, dk)
		g.ctxs = append(g.ctxs, item.GetContext())
	}
	for id, g := range groups {
		blobs, err := g.l3.WrapBatch(g.dks, g.ctxs)
		for j, i := range g.idx {
			g.dks[j].Destroy()
			if err != nil {
				results[i] = &kv1.WrapResult{Result: &kv1.WrapResult_Error{Error: itemError(err)}}
				continue
			}
			results[i] = &kv1.WrapResult{Result: &kv1.WrapResult_Value{Value: &kv1.WrapResponse{Blob: blobs[j], Key: keyRef(id)}}}
		}
	}
	return &kv1.BatchWrapResponse{Results: results}, nil
}

func (s *wrapService) BatchUnwrap(ctx context.Context, req *kv1.BatchUnwrapRequest) (*kv1.BatchUnwrapResponse, error) {
	defer s.n.observe("batch-unwrap", time.Now())
	if err := s.n.batchPreamble(len(req.GetItems())); err != nil {
		return nil, err
	}
	results := make([]*kv1.UnwrapResult, len(req.GetItems()))
	for i, item := range req.GetItems() {
		resp, err := s.n.unwrapOne(ctx, item)
		if err != nil {
			results[i] = &kv1.UnwrapResult{Result: &kv1.UnwrapResult_Error{Error: itemError(err)}}
			continue
		}
		results[i] = &kv1.UnwrapResult{Result: &kv1.UnwrapResult_Value{Value: resp}}
	}
	return &kv1.BatchUnwrapResponse{Results: results}, nil
}

func (s *wrapService) BatchGenerateDataKey(ctx context.Context, req *kv1.BatchGenerateDataKeyRequest) (*kv1.BatchGenerateDataKeyResponse, error) {
	defer s.n.observe("batch-generate-data-key", time.Now())
	if err := s.n.batchPreamble(len(req.GetItems())); err != nil {
		return nil, err
	}
	results := make([]*kv1.GenerateDataKeyResult, len(req.GetItems()))
	for i, item := range req.GetItems() {
		resp, err := s.n.generateOne(ctx, item)
		if err != nil {
			results[i] = &kv1.GenerateDataKeyResult{Result: &kv1.GenerateDataKeyResult_Error{Error: itemError(err)}}
			continue
		}
		results[i] = &kv1.GenerateDataKeyResult{Result: &kv1.GenerateDataKeyResult_Value{Value: resp}}
	}
	return &kv1.BatchGenerateDataKeyResponse{Results: results}, nil
}

func (s *wrapService) BatchRewrap(ctx context.Context, req *kv1.BatchRewrapRequest) (*kv1.BatchRewrapResponse, error) {
	defer s.n.observe("batch-rewrap", time.Now())
	if err := s.n.batchPreamble(len(req.GetItems())); err != nil {
		return nil, err
	}
	results := make([]*kv1.RewrapResult, len(req.GetItems()))
	for i, item := range req.GetItems() {
		resp, err := s.n.rewrapOne(ctx, item)
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
