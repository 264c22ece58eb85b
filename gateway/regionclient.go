package gateway

import (
	"bytes"
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// itemErr turns a batch item's error into a status error.
func itemErr(e *kv1.ItemError) error {
	if e == nil || e.GetCode() == 0 {
		return status.Error(codes.Internal, "gateway: the region answered an item with neither value nor error")
	}
	return status.Error(codes.Code(e.GetCode()), e.GetMessage())
}

var errShortBatch = status.Error(codes.Internal, "gateway: the region answered a batch with the wrong number of results")

// sendWraps sends one batch of wraps (a unary Wrap for a batch of one). The gateway acts for one
// tenant, so a batch's wraps almost always share one key: each key's items go in one PackedWrap
// (BatchWrap to a node of an older version, see pool.callPacked). A PackedWrap fails or succeeds
// as a whole, and the pool retries an UNAVAILABLE one on another node; items of a BatchWrap that
// fail with UNAVAILABLE alone (a node that cannot obtain the tenant's key right now) are sent once
// more, in a batch of their own, to whichever node the pool picks.
func (g *Gateway) sendWraps(ctx context.Context, reqs []*kv1.WrapRequest) ([]*kv1.WrapResponse, []error) {
	defer func() {
		for _, r := range reqs {
			clear(r.GetPlaintext()) // the data keys' copies made for the region
		}
	}()
	res, errs := make([]*kv1.WrapResponse, len(reqs)), make([]error, len(reqs))
	if len(reqs) == 1 {
		var resp *kv1.WrapResponse
		err := g.pool.call(ctx, "Wrap", func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
			resp, err = c.Wrap(ctx, reqs[0])
			return err
		})
		res[0], errs[0] = resp, err
		return res, errs
	}
	for _, group := range groupByKey(reqs) {
		g.sendWrapGroup(ctx, reqs, group, res, errs)
	}
	return res, errs
}

// sendWrapGroup wraps reqs[i] for every i of todo, which share one key, into res[i] and errs[i].
func (g *Gateway) sendWrapGroup(ctx context.Context, reqs []*kv1.WrapRequest, todo []int, res []*kv1.WrapResponse, errs []error) {
	for round := 0; round < 2 && len(todo) > 0; round++ {
		items := make([]*kv1.WrapRequest, len(todo))
		for j, i := range todo {
			items[j] = reqs[i]
		}
		var (
			preq  *kv1.PackedWrapRequest
			presp *kv1.PackedWrapResponse
			bresp *kv1.BatchWrapResponse
		)
		err := g.pool.callPacked(ctx, "PackedWrap", "BatchWrap",
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				if preq == nil {
					preq = packedWrapRequest(items)
				}
				bresp = nil
				presp, err = c.PackedWrap(ctx, preq)
				return err
			},
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				presp = nil
				bresp, err = c.BatchWrap(ctx, &kv1.BatchWrapRequest{Items: items})
				return err
			})
		if err == nil && (presp != nil && len(presp.GetBlobs()) != len(items) || presp == nil && len(bresp.GetResults()) != len(items)) {
			err = errShortBatch
		}
		if err != nil {
			for _, i := range todo {
				errs[i] = err
			}
			return
		}
		if presp != nil {
			for j, i := range todo {
				if b := presp.GetBlobs()[j]; len(b) > 0 {
					res[i], errs[i] = &kv1.WrapResponse{Blob: b, Key: presp.GetKey()}, nil
				} else {
					errs[i] = itemErr(nil)
				}
			}
			return
		}
		var again []int
		for j, r := range bresp.GetResults() {
			i := todo[j]
			if v := r.GetValue(); v != nil {
				res[i], errs[i] = v, nil
				continue
			}
			errs[i] = itemErr(r.GetError())
			if status.Code(errs[i]) == codes.Unavailable {
				again = append(again, i)
			}
		}
		todo = again
	}
}

// groupByKey returns the indexes of reqs grouped by key, in the order each key first appears.
func groupByKey(reqs []*kv1.WrapRequest) [][]int {
	type key struct {
		tenant, service string
		version         uint32
	}
	keyOf := func(r *kv1.WrapRequest) key {
		return key{r.GetKey().GetTenant(), r.GetKey().GetService(), r.GetKey().GetVersion()}
	}
	first := keyOf(reqs[0])
	all := make([]int, len(reqs))
	same := true
	for i, r := range reqs {
		all[i] = i
		same = same && keyOf(r) == first
	}
	if same {
		return [][]int{all} // the usual case: the gateway's own key
	}
	var groups [][]int
	at := map[key]int{}
	for i, r := range reqs {
		k := keyOf(r)
		g, ok := at[k]
		if !ok {
			g = len(groups)
			at[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// packedWrapRequest is items, which share one key, as a PackedWrap.
func packedWrapRequest(items []*kv1.WrapRequest) *kv1.PackedWrapRequest {
	req := &kv1.PackedWrapRequest{Key: items[0].GetKey(), Plaintexts: make([][]byte, len(items))}
	for j, it := range items {
		req.Plaintexts[j] = it.GetPlaintext()
	}
	req.Contexts = packedContexts(len(items), func(j int) []byte { return items[j].GetContext() })
	return req
}

// packedContexts is the contexts field of a packed request of n items: none when no item has a
// context, one when every item has the same, else one per item.
func packedContexts(n int, context func(j int) []byte) [][]byte {
	first := context(0)
	same := true
	for j := 1; j < n && same; j++ {
		same = bytes.Equal(context(j), first)
	}
	switch {
	case same && len(first) == 0:
		return nil
	case same:
		return [][]byte{first}
	}
	out := make([][]byte, n)
	for j := range out {
		out[j] = context(j)
	}
	return out
}

// sendUnwraps sends one batch of unwraps (a unary Unwrap for a batch of one) as one PackedUnwrap
// (BatchUnwrap to a node of an older version). Items that fail with UNAVAILABLE alone are sent
// once more, as in sendWraps.
func (g *Gateway) sendUnwraps(ctx context.Context, reqs []*kv1.UnwrapRequest) ([]*kv1.UnwrapResponse, []error) {
	res, errs := make([]*kv1.UnwrapResponse, len(reqs)), make([]error, len(reqs))
	todo := make([]int, len(reqs))
	for i := range todo {
		todo[i] = i
	}
	for round := 0; round < 2 && len(todo) > 0; round++ {
		if len(todo) == 1 && round == 0 && len(reqs) == 1 {
			var resp *kv1.UnwrapResponse
			err := g.pool.call(ctx, "Unwrap", func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				resp, err = c.Unwrap(ctx, reqs[0])
				return err
			})
			res[0], errs[0] = resp, err
			return res, errs
		}
		items := make([]*kv1.UnwrapRequest, len(todo))
		for j, i := range todo {
			items[j] = reqs[i]
		}
		var (
			preq  *kv1.PackedUnwrapRequest
			presp *kv1.PackedUnwrapResponse
			bresp *kv1.BatchUnwrapResponse
		)
		err := g.pool.callPacked(ctx, "PackedUnwrap", "BatchUnwrap",
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				if preq == nil {
					preq = packedUnwrapRequest(items)
				}
				bresp = nil
				presp, err = c.PackedUnwrap(ctx, preq)
				return err
			},
			func(ctx context.Context, c kv1.WrapServiceClient) (err error) {
				presp = nil
				bresp, err = c.BatchUnwrap(ctx, &kv1.BatchUnwrapRequest{Items: items})
				return err
			})
		if err == nil && presp == nil && len(bresp.GetResults()) != len(items) {
			err = errShortBatch
		}
		var again []int
		settle := func(j int, v *kv1.UnwrapResponse, e *kv1.ItemError) {
			i := todo[j]
			if v != nil {
				res[i], errs[i] = v, nil
				return
			}
			errs[i] = itemErr(e)
			if status.Code(errs[i]) == codes.Unavailable {
				again = append(again, i)
			}
		}
		if err == nil {
			if presp != nil {
				err = unpackUnwraps(presp, len(items), settle)
			} else {
				for j, r := range bresp.GetResults() {
					settle(j, r.GetValue(), r.GetError())
				}
			}
		}
		if err != nil {
			for _, i := range todo {
				errs[i] = err
			}
			break
		}
		todo = again
	}
	return res, errs
}

// packedUnwrapRequest is items as a PackedUnwrap.
func packedUnwrapRequest(items []*kv1.UnwrapRequest) *kv1.PackedUnwrapRequest {
	req := &kv1.PackedUnwrapRequest{Blobs: make([][]byte, len(items))}
	for j, it := range items {
		req.Blobs[j] = it.GetBlob()
	}
	req.Contexts = packedContexts(len(items), func(j int) []byte { return items[j].GetContext() })
	return req
}

// unpackUnwraps calls settle once per blob of a PackedUnwrap answer for n blobs, in order, as
// for a BatchUnwrap result: with the plaintext and the key that opened it, or with the item's
// error (nil, which itemErr makes Internal, for an item with neither a plaintext and key nor an
// error entry). An answer of the wrong length settles nothing and fails the batch, its
// plaintexts wiped.
func unpackUnwraps(resp *kv1.PackedUnwrapResponse, n int, settle func(j int, v *kv1.UnwrapResponse, e *kv1.ItemError)) error {
	pts, idx, keys, perrs := resp.GetPlaintexts(), resp.GetKeyIndex(), resp.GetKeys(), resp.GetErrors()
	if len(pts) != n {
		for _, p := range pts {
			clear(p)
		}
		return errShortBatch
	}
	k := 0 // the next error entry; they come in ascending index order
	for j, p := range pts {
		for k < len(perrs) && perrs[k].GetIndex() < uint32(j) {
			k++
		}
		switch {
		case k < len(perrs) && perrs[k].GetIndex() == uint32(j):
			clear(p)
			settle(j, nil, perrs[k].GetError())
		case len(p) > 0 && j < len(idx) && int(idx[j]) < len(keys):
			settle(j, &kv1.UnwrapResponse{Plaintext: p, Key: keys[idx[j]]}, nil)
		default:
			clear(p)
			settle(j, nil, nil)
		}
	}
	return nil
}
