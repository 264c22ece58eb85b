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

// The packed batch forms (PackedWrap, PackedUnwrap, PackedGenerateDataKey): one key reference per
// batch and the items as repeated bytes, so that a batch costs little more than its bytes in
// protobuf. PackedWrap and PackedGenerateDataKey check their one key once and wrap every item
// under the same version, or fail as a whole; PackedUnwrap answers each blob on its own, as
// BatchUnwrap does. Every input error of a PackedWrap or PackedGenerateDataKey fails the call,
// naming the item's index (never its bytes), before any key is touched.

// packedInvalid is the InvalidArgument of one item of a packed call: err's message (which names
// a field and a limit, never bytes) prefixed with the item's index.
func packedInvalid(i int, err error) error {
	return status.Errorf(codes.InvalidArgument, "region: item %d: %s", i, status.Convert(transport.ToStatus(err)).Message())
}

// packedContexts checks the contexts of a packed request of n items (none, one shared, or one per
// item; each within its limit) and returns them as WrapBatch and UnwrapBatch take them: nil for
// none, else one per item.
func packedContexts(contexts [][]byte, n int) ([][]byte, error) {
	switch len(contexts) {
	case 0:
		return nil, nil
	case 1, n:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "region: %d contexts for %d items: give none, one shared by every item, or one per item", len(contexts), n)
	}
	for i, c := range contexts {
		if err := transport.CheckContext(c); err != nil {
			if len(contexts) == 1 && n > 1 {
				return nil, status.Errorf(codes.InvalidArgument, "region: the shared context: %s", status.Convert(err).Message())
			}
			return nil, packedInvalid(i, err)
		}
	}
	if len(contexts) == n {
		return contexts, nil
	}
	all := make([][]byte, n)
	for i := range all {
		all[i] = contexts[0]
	}
	return all, nil
}

// packedPlaintexts checks every plaintext of a PackedWrap: a usable data key of wrap.KeySize bytes.
func packedPlaintexts(plaintexts [][]byte) error {
	for i, p := range plaintexts {
		if err := transport.CheckPlaintext(p); err != nil {
			return packedInvalid(i, err)
		}
		if allZero(p) {
			return packedInvalid(i, errWeakDataKey)
		}
	}
	return nil
}

func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

// packedKey checks the one key of a PackedWrap or PackedGenerateDataKey, as a unary call does.
func (n *Node) packedKey(ctx context.Context, ref *kv1.KeyRef, pop fsm.PolicyOp) (*batchKeys, *batchKey, error) {
	keys := &batchKeys{n: n, ctx: ctx}
	k := keys.get(ref, fsm.OpWrap, pop)
	if k.err != nil {
		return nil, nil, k.err
	}
	return keys, k, nil
}

// PackedWrap wraps every plaintext under one version of one service key (wrap.WrapBatch: one
// derivation per wrap.ItemsPerDerivedKey items), or fails as a whole.
func (s *wrapService) PackedWrap(ctx context.Context, req *kv1.PackedWrapRequest) (*kv1.PackedWrapResponse, error) {
	defer s.n.observe("packed-wrap", time.Now())
	plaintexts := req.GetPlaintexts()
	// The request's plaintexts are wiped however the call ends, as a unary Wrap wipes its one.
	defer func() {
		for _, p := range plaintexts {
			clear(p)
		}
	}()
	if err := transport.CheckBatch(len(plaintexts)); err != nil {
		return nil, err
	}
	if err := packedPlaintexts(plaintexts); err != nil {
		return nil, err
	}
	ctxs, err := packedContexts(req.GetContexts(), len(plaintexts))
	if err != nil {
		return nil, err
	}
	keys, k, err := s.n.packedKey(ctx, req.GetKey(), fsm.PolicyWrap)
	if err != nil {
		return nil, err
	}
	dks := make([]*wrap.DataKey, len(plaintexts))
	defer func() {
		for _, dk := range dks {
			dk.Destroy()
		}
	}()
	for i, p := range plaintexts {
		if dks[i], err = dataKey(p); err != nil {
			return nil, packedInvalid(i, err) // checked above; cannot happen
		}
	}
	blobs, err := k.wrapBatch(keys, dks, ctxs)
	if err != nil {
		return nil, err
	}
	return &kv1.PackedWrapResponse{Key: k.out, Blobs: blobs}, nil
}

// PackedGenerateDataKey makes count fresh data keys and wraps them as PackedWrap does.
func (s *wrapService) PackedGenerateDataKey(ctx context.Context, req *kv1.PackedGenerateDataKeyRequest) (*kv1.PackedGenerateDataKeyResponse, error) {
	defer s.n.observe("packed-generate-data-key", time.Now())
	count := int(req.GetCount())
	if err := transport.CheckBatch(count); err != nil {
		return nil, err
	}
	ctxs, err := packedContexts(req.GetContexts(), count)
	if err != nil {
		return nil, err
	}
	keys, k, err := s.n.packedKey(ctx, req.GetKey(), fsm.PolicyGenerateDataKey)
	if err != nil {
		return nil, err
	}
	dks := make([]*wrap.DataKey, count)
	defer func() {
		for _, dk := range dks {
			dk.Destroy()
		}
	}()
	for i := range dks {
		dks[i] = wrap.NewDataKey()
	}
	blobs, err := k.wrapBatch(keys, dks, ctxs)
	if err != nil {
		return nil, err
	}
	plaintexts := make([][]byte, count)
	for i, dk := range dks {
		plaintexts[i] = dk.Bytes()
	}
	return &kv1.PackedGenerateDataKeyResponse{Key: k.out, Plaintexts: plaintexts, Blobs: blobs}, nil
}

// PackedUnwrap opens each blob as BatchUnwrap does: each key checked once per call, one
// wrap.UnwrapBatch per key; an item that fails gets an empty plaintext and an entry in errors.
func (s *wrapService) PackedUnwrap(ctx context.Context, req *kv1.PackedUnwrapRequest) (*kv1.PackedUnwrapResponse, error) {
	defer s.n.observe("packed-unwrap", time.Now())
	blobs := req.GetBlobs()
	if err := transport.CheckBatch(len(blobs)); err != nil {
		return nil, err
	}
	// Only the number of contexts fails the call; a context over its limit fails its items.
	switch len(req.GetContexts()) {
	case 0, 1, len(blobs):
	default:
		return nil, status.Errorf(codes.InvalidArgument, "region: %d contexts for %d blobs: give none, one shared by every blob, or one per blob", len(req.GetContexts()), len(blobs))
	}
	if err := s.n.Serving(); err != nil {
		return nil, err
	}
	contextOf := func(i int) []byte {
		switch c := req.GetContexts(); len(c) {
		case 0:
			return nil
		case 1:
			return c[0]
		default:
			return c[i]
		}
	}
	var errs []error // one per item, nil where it opened; made at the first failure
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(blobs))
		}
		errs[i] = err
	}
	keys := batchKeys{n: s.n, ctx: ctx}
	type group struct {
		key   *batchKey
		idx   []int
		blobs [][]byte
		ctxs  [][]byte
	}
	var list []*group
	var byKey map[*batchKey]*group
	for i, blob := range blobs {
		c := contextOf(i)
		ref, err := blobRef(blob, c)
		if err != nil {
			fail(i, err)
			continue
		}
		k := keys.get(&ref, fsm.OpUnwrap, fsm.PolicyUnwrap)
		if k.err != nil {
			fail(i, k.err)
			continue
		}
		var g *group
		if len(list) > 0 && list[len(list)-1].key == k {
			g = list[len(list)-1]
		} else if g = byKey[k]; g == nil {
			g = &group{key: k, idx: make([]int, 0, len(blobs)-i), blobs: make([][]byte, 0, len(blobs)-i), ctxs: make([][]byte, 0, len(blobs)-i)}
			if byKey == nil {
				byKey = make(map[*batchKey]*group)
			}
			byKey[k] = g
			list = append(list, g)
		}
		g.idx = append(g.idx, i)
		g.blobs = append(g.blobs, blob)
		g.ctxs = append(g.ctxs, c)
	}
	resp := &kv1.PackedUnwrapResponse{
		Plaintexts: make([][]byte, len(blobs)),
		KeyIndex:   make([]uint32, len(blobs)),
	}
	// The plaintexts, in one slab.
	slab := make([]byte, len(blobs)*wrap.KeySize)
	for _, g := range list {
		dks, err := g.key.l3.UnwrapBatch(g.blobs, g.ctxs)
		if errors.Is(err, wrap.ErrDestroyed) && !errors.As(err, new(*wrap.BatchError)) {
			if err = g.key.again(&keys); err == nil {
				dks, err = g.key.l3.UnwrapBatch(g.blobs, g.ctxs)
			}
		}
		var be *wrap.BatchError
		errors.As(err, &be)
		keyIndex := -1
		for j, i := range g.idx {
			switch {
			case be != nil && be.Errs[j] != nil:
				fail(i, be.Errs[j])
				continue
			case be == nil && err != nil:
				fail(i, err)
				continue
			}
			if keyIndex < 0 {
				keyIndex = len(resp.Keys)
				resp.Keys = append(resp.Keys, g.key.out)
			}
			p := slab[i*wrap.KeySize : (i+1)*wrap.KeySize : (i+1)*wrap.KeySize]
			b := dks[j].Bytes()
			copy(p, b)
			clear(b)
			dks[j].Destroy()
			resp.Plaintexts[i] = p
			resp.KeyIndex[i] = uint32(keyIndex)
		}
	}
	for i, err := range errs {
		if err != nil {
			resp.Errors = append(resp.Errors, &kv1.PackedItemError{Index: uint32(i), Error: itemError(err)})
		}
	}
	return resp, nil
}
