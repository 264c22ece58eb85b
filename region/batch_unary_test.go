package region_test

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestBatchItemsAnswerAsUnary: each item of a BatchUnwrap and a BatchGenerateDataKey gets the code
// the same request gets as a unary call, whatever its neighbours (the batch forms check each key
// once per batch and derive once per key; they must not let one item's key or error leak into
// another's), and the good items' answers open as the unary ones do.
func TestBatchItemsAnswerAsUnary(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-ledger", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	f := r.Followers()[0]
	c := r.WrapClient(f, "acme", "payments")
	ledger := r.WrapClient(f, "acme", "ledger")
	payments := &kv1.KeyRef{Tenant: "acme", Service: "payments"}

	wrapOne := func(client kv1.WrapServiceClient, ref *kv1.KeyRef, plain, ctx []byte) []byte {
		resp, err := client.Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: plain, Context: ctx})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetBlob()
	}
	plain := randKey(t)
	good := wrapOne(c, payments, bytes.Clone(plain), []byte("ctx"))
	batchBlobs, err := c.BatchWrap(ctxT(t), &kv1.BatchWrapRequest{Items: []*kv1.WrapRequest{
		{Key: payments, Plaintext: bytes.Clone(plain), Context: []byte("a")},
		{Key: payments, Plaintext: bytes.Clone(plain), Context: []byte("b")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(good)
	tampered[len(tampered)-1] ^= 1
	other := wrapOne(ledger, &kv1.KeyRef{Tenant: "acme", Service: "ledger"}, randKey(t), nil)

	unwraps := []*kv1.UnwrapRequest{
		{Blob: good, Context: []byte("ctx")},
		{Blob: tampered, Context: []byte("ctx")},
		{Blob: good, Context: []byte("another")},
		{Blob: batchBlobs.GetResults()[0].GetValue().GetBlob(), Context: []byte("a")},
		{Blob: []byte("not a blob")},
		{Blob: other},
		{Blob: batchBlobs.GetResults()[1].GetValue().GetBlob(), Context: []byte("b")},
		{Blob: good, Context: make([]byte, wrap.MaxContextSize+1)},
		{Blob: nil},
	}
	bu, err := c.BatchUnwrap(ctxT(t), &kv1.BatchUnwrapRequest{Items: unwraps})
	if err != nil {
		t.Fatal(err)
	}
	for i, req := range unwraps {
		resp, err := c.Unwrap(ctxT(t), req)
		res := bu.GetResults()[i]
		if got, want := codes.Code(res.GetError().GetCode()), status.Code(err); got != want {
			t.Errorf("unwrap item %d: batch %s, unary %s", i, got, want)
		}
		if err == nil && (!bytes.Equal(res.GetValue().GetPlaintext(), resp.GetPlaintext()) || !bytes.Equal(resp.GetPlaintext(), plain)) {
			t.Errorf("unwrap item %d: batch and unary plaintexts differ, or differ from the key wrapped", i)
		}
	}

	gens := []*kv1.GenerateDataKeyRequest{
		{Key: payments, Context: []byte("x")},
		{Key: &kv1.KeyRef{Tenant: "acme", Service: "ledger"}},
		{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 9}},
		{Key: payments, Context: make([]byte, wrap.MaxContextSize+1)},
		{Key: nil},
		{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 1}, Context: []byte("y")},
		{Key: payments},
	}
	bg, err := c.BatchGenerateDataKey(ctxT(t), &kv1.BatchGenerateDataKeyRequest{Items: gens})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, req := range gens {
		_, err := c.GenerateDataKey(ctxT(t), req)
		res := bg.GetResults()[i]
		if got, want := codes.Code(res.GetError().GetCode()), status.Code(err); got != want {
			t.Errorf("datakey item %d: batch %s, unary %s", i, got, want)
		}
		if err != nil {
			continue
		}
		v := res.GetValue()
		if seen[string(v.GetPlaintext())] {
			t.Errorf("datakey item %d: a data key repeats within the batch", i)
		}
		seen[string(v.GetPlaintext())] = true
		back, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: v.GetBlob(), Context: req.GetContext()})
		if err != nil || !bytes.Equal(back.GetPlaintext(), v.GetPlaintext()) {
			t.Errorf("datakey item %d: the blob does not open to the key returned: %v", i, err)
		}
	}
}
