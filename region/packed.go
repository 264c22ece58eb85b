package region

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/policy"
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

// packedContexts checks the contexts of a PackedWrap or PackedGenerateDataKey of n items: none,
// one shared by every item, or one per item, each within its limit.
func packedContexts(contexts [][]byte, n int) error {
	if err := packedContextCount(contexts, n); err != nil {
		return err
	}
	for i, c := range contexts {
		if err := transport.CheckContext(c); err != nil {
			if len(contexts) == 1 && n > 1 {
				return status.Errorf(codes.InvalidArgument, "region: the shared context: %s", status.Convert(err).Message())
			}
			return packedInvalid(i, err)
		}
	}
	return nil
}

// packedContextCount checks the number of contexts of a packed request of n items.
func packedContextCount(contexts [][]byte, n int) error {
	if len(contexts) > 1 && len(contexts) != n {
		return status.Errorf(codes.InvalidArgument, "region: %d contexts for %d items: give none, one shared by every item, or one per item", len(contexts), n)
	}
	return nil
}

// packedPlaintexts checks every plaintext of a PackedWrap: a usable data key of wrap.KeySize bytes.
func packedPlaintexts(plaintexts [][]byte) error {
	for i, p := range plaintexts {
		if err := transport.CheckPlaintext(p); err != nil {
			return packedInvalid(i, err)
		}
		if wrap.CheckDataKey(p) != nil {
			return packedInvalid(i, errWeakDataKey)
		}
	}
	return nil
}

// packedKey checks the one key of a PackedWrap or PackedGenerateDataKey, as a unary call does.
func (n *Node) packedKey(ctx context.Context, ref *kv1.KeyRef, pop policy.Op) (*batchKeys, *batchKey, error) {
	keys := &batchKeys{n: n, ctx: ctx}
	k := keys.get(ref, fsm.OpWrap, pop)
	if k.err != nil {
		return nil, nil, k.err
	}
	return keys, k, nil
}

// wrapKeys wraps plaintexts under k's key (wrap.WrapKeys: one derivation per
// wrap.ItemsPerDerivedKey items, no copy of a plaintext), looking the key up once more if it was
// destroyed meanwhile.
func (k *batchKey) wrapKeys(b *batchKeys, plaintexts, contexts [][]byte) ([][]byte, error) {
	defer b.n.cryptoSpan(b.ctx, len(plaintexts)).End()
	blobs, err := k.l3.WrapKeys(plaintexts, contexts)
	if errors.Is(err, wrap.ErrDestroyed) {
		if err = k.again(b); err == nil {
			blobs, err = k.l3.WrapKeys(plaintexts, contexts)
		}
	}
	return blobs, err
}

// PackedWrap wraps every plaintext under one version of one service key, or fails as a whole.
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
	if err := packedContexts(req.GetContexts(), len(plaintexts)); err != nil {
		return nil, err
	}
	ctx, qc := s.n.quotaStart(ctx, len(plaintexts))
	defer qc.end()
	keys, k, err := s.n.packedKey(ctx, req.GetKey(), policy.Wrap)
	if err != nil {
		return nil, err
	}
	blobs, err := k.wrapKeys(keys, plaintexts, req.GetContexts())
	if err != nil {
		return nil, err
	}
	return &kv1.PackedWrapResponse{Key: k.out, Blobs: blobs}, nil
}

// PackedGenerateDataKey makes count fresh data keys (wrap.NewDataKeys, one allocation) and wraps
// them as PackedWrap does.
func (s *wrapService) PackedGenerateDataKey(ctx context.Context, req *kv1.PackedGenerateDataKeyRequest) (*kv1.PackedGenerateDataKeyResponse, error) {
	defer s.n.observe("packed-generate-data-key", time.Now())
	count := int(req.GetCount())
	if err := transport.CheckBatch(count); err != nil {
		return nil, err
	}
	if err := packedContexts(req.GetContexts(), count); err != nil {
		return nil, err
	}
	ctx, qc := s.n.quotaStart(ctx, count)
	defer qc.end()
	keys, k, err := s.n.packedKey(ctx, req.GetKey(), policy.GenerateDataKey)
	if err != nil {
		return nil, err
	}
	plaintexts := wrap.NewDataKeys(count)
	blobs, err := k.wrapKeys(keys, plaintexts, req.GetContexts())
	if err != nil {
		for _, p := range plaintexts {
			clear(p)
		}
		return nil, err
	}
	// The plaintexts leave in the response, as a unary GenerateDataKey's does.
	return &kv1.PackedGenerateDataKeyResponse{Key: k.out, Plaintexts: plaintexts, Blobs: blobs}, nil
}

// PackedUnwrap opens each blob as BatchUnwrap does: each key checked once per call, one
// wrap.UnwrapKeys per key, into one buffer; an item that fails gets an empty plaintext and an
// entry in errors.
func (s *wrapService) PackedUnwrap(ctx context.Context, req *kv1.PackedUnwrapRequest) (*kv1.PackedUnwrapResponse, error) {
	defer s.n.observe("packed-unwrap", time.Now())
	blobs, contexts := req.GetBlobs(), req.GetContexts()
	if err := transport.CheckBatch(len(blobs)); err != nil {
		return nil, err
	}
	// Only the number of contexts fails the call; a context over its limit fails its items.
	if err := packedContextCount(contexts, len(blobs)); err != nil {
		return nil, err
	}
	if err := s.n.Serving(); err != nil {
		return nil, err
	}
	ctx, qc := s.n.quotaStart(ctx, len(blobs))
	defer qc.end()
	var errs []error // one per item, nil where it opened; made at the first failure
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(blobs))
		}
		errs[i] = err
	}
	keys := batchKeys{n: s.n, ctx: ctx}
	type group struct {
		key *batchKey
		idx []int
	}
	var list []*group
	var byKey map[*batchKey]*group
	// A batch's blobs usually name one key: a blob whose header names the same key as the last
	// one parsed (wrap.SameParent) is neither parsed nor looked up again, only its context checked.
	var prev []byte
	var prevKey *batchKey
	for i, blob := range blobs {
		c := wrap.ItemContext(contexts, i)
		var k *batchKey
		if prev != nil && wrap.SameParent(prev, blob) {
			if err := transport.CheckContext(c); err != nil {
				fail(i, err)
				continue
			}
			k = prevKey
		} else {
			ref, err := blobRef(blob, c)
			if err != nil {
				fail(i, err)
				continue
			}
			k = keys.get(&ref, fsm.OpUnwrap, policy.Unwrap)
			prev, prevKey = blob, k
		}
		if k.err != nil {
			fail(i, k.err)
			continue
		}
		var g *group
		if len(list) > 0 && list[len(list)-1].key == k {
			g = list[len(list)-1]
		} else if g = byKey[k]; g == nil {
			g = &group{key: k, idx: make([]int, 0, len(blobs)-i)}
			if byKey == nil {
				byKey = make(map[*batchKey]*group)
			}
			byKey[k] = g
			list = append(list, g)
		}
		g.idx = append(g.idx, i)
	}
	if keys.refused != nil {
		return nil, keys.refused
	}
	resp := &kv1.PackedUnwrapResponse{
		Plaintexts: make([][]byte, len(blobs)),
		KeyIndex:   make([]uint32, len(blobs)),
	}
	// The plaintexts, in one buffer: each group opens into its own part of it.
	buf := make([]byte, len(blobs)*wrap.KeySize)
	for _, g := range list {
		gBlobs, gContexts := blobs, contexts
		if len(g.idx) != len(blobs) { // not every item of the call: gather this group's
			gBlobs, gContexts = make([][]byte, len(g.idx)), nil
			if len(contexts) > 0 {
				gContexts = make([][]byte, len(g.idx))
			}
			for j, i := range g.idx {
				gBlobs[j] = blobs[i]
				if gContexts != nil {
					gContexts[j] = wrap.ItemContext(contexts, i)
				}
			}
		}
		dst := buf[:len(g.idx)*wrap.KeySize]
		buf = buf[len(dst):]
		span := s.n.cryptoSpan(ctx, len(gBlobs))
		plain, err := g.key.l3.UnwrapKeys(dst, gBlobs, gContexts)
		if errors.Is(err, wrap.ErrDestroyed) && !errors.As(err, new(*wrap.BatchError)) {
			if err = g.key.again(&keys); err == nil {
				plain, err = g.key.l3.UnwrapKeys(dst, gBlobs, gContexts)
			}
		}
		span.End()
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
			resp.Plaintexts[i] = plain[j]
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
