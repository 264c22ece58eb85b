package region_test

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestBatchWithBadItems: a BatchWrap of 256 items over two services, some of them bad, answers each
// item on its own — the bad ones with the code a single call would get, the good ones with blobs
// that BatchUnwrap (and a single Unwrap) opens again. A caller's certificate names one service, so
// items naming the other service are refused with PermissionDenied; the second service's own
// caller wraps those.
func TestBatchWithBadItems(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-ledger", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	f := r.Followers()[0]
	clients := map[string]kv1.WrapServiceClient{
		"payments": r.WrapClient(f, "acme", "payments"),
		"ledger":   r.WrapClient(f, "acme", "ledger"),
	}
	payments := &kv1.KeyRef{Tenant: "acme", Service: "payments"}
	ledger := &kv1.KeyRef{Tenant: "acme", Service: "ledger"}

	type item struct {
		req  *kv1.WrapRequest
		want codes.Code
	}
	// makeBatch builds 256 items for the caller of service own; other is the other service.
	makeBatch := func(own, other *kv1.KeyRef) []item {
		items := make([]item, 256)
		for i := range items {
			plain, ctx := randKey(t), []byte(fmt.Sprintf("item-%d", i))
			it := item{req: &kv1.WrapRequest{Key: own, Plaintext: plain, Context: ctx}, want: codes.OK}
			switch i % 16 {
			case 1:
				it.req.Plaintext, it.want = plain[:31], codes.InvalidArgument
			case 3:
				it.req.Context, it.want = make([]byte, wrap.MaxContextSize+1), codes.InvalidArgument
			case 5:
				it.req.Key, it.want = other, codes.PermissionDenied
			case 7:
				it.req.Key, it.want = &kv1.KeyRef{Tenant: own.Tenant, Service: own.Service, Version: 9}, codes.NotFound
			case 9:
				it.req.Key, it.want = nil, codes.InvalidArgument
			case 11:
				it.req.Key, it.want = &kv1.KeyRef{Tenant: "globex", Service: own.Service}, codes.PermissionDenied
			case 13:
				it.req.Plaintext, it.want = make([]byte, wrap.KeySize), codes.InvalidArgument // an all-zero key
			}
			items[i] = it
		}
		return items
	}

	type good struct {
		service    string
		plain, ctx []byte
		blob       []byte
	}
	var goods []good
	for _, svc := range []struct {
		name       string
		own, other *kv1.KeyRef
		version    uint32
	}{{"payments", payments, ledger, 2}, {"ledger", ledger, payments, 1}} {
		items := makeBatch(svc.own, svc.other)
		if svc.name == "payments" {
			// The decrypt-only version: not for wrapping.
			items[15] = item{req: &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 1}, Plaintext: randKey(t)}, want: codes.FailedPrecondition}
		}
		req := &kv1.BatchWrapRequest{}
		for _, it := range items {
			req.Items = append(req.Items, it.req)
		}
		// The request's plaintexts are wiped once wrapped; keep copies to compare.
		plains := make([][]byte, len(items))
		for i, it := range items {
			plains[i] = bytes.Clone(it.req.GetPlaintext())
		}
		resp, err := clients[svc.name].BatchWrap(ctxT(t), req)
		if err != nil {
			t.Fatalf("BatchWrap (%s): %v", svc.name, err)
		}
		if len(resp.GetResults()) != len(items) {
			t.Fatalf("BatchWrap (%s): %d results for %d items", svc.name, len(resp.GetResults()), len(items))
		}
		for i, res := range resp.GetResults() {
			want := items[i].want
			if got := codes.Code(res.GetError().GetCode()); want != codes.OK {
				if res.GetValue() != nil || got != want {
					t.Fatalf("%s item %d: got %v (%v), want %v", svc.name, i, got, res.GetError(), want)
				}
				continue
			}
			if res.GetError() != nil || len(res.GetValue().GetBlob()) == 0 {
				t.Fatalf("%s item %d: %v, want a blob", svc.name, i, res.GetError())
			}
			if k := res.GetValue().GetKey(); k.GetService() != svc.name || k.GetVersion() != svc.version {
				t.Fatalf("%s item %d wrapped under %v", svc.name, i, k)
			}
			goods = append(goods, good{svc.name, plains[i], items[i].req.GetContext(), res.GetValue().GetBlob()})
		}
	}
	if want := 2*256*9/16 - 1; len(goods) != want { // 9 good of every 16, less item 15 of payments
		t.Fatalf("%d good items, want %d", len(goods), want)
	}

	// Unwrap them again in batches, per service, on another node, with bad items mixed in.
	for _, svc := range []string{"payments", "ledger"} {
		c := r.WrapClient(r.Leader(), "acme", svc)
		req := &kv1.BatchUnwrapRequest{}
		var want []*good
		var other []byte
		for i := range goods {
			g := &goods[i]
			if g.service != svc {
				other = g.blob
				continue
			}
			req.Items = append(req.Items, &kv1.UnwrapRequest{Blob: g.blob, Context: g.ctx})
			want = append(want, g)
		}
		bad := []struct {
			item *kv1.UnwrapRequest
			code codes.Code
		}{
			{&kv1.UnwrapRequest{Blob: bytes.Repeat([]byte{7}, 100)}, codes.InvalidArgument},
			{&kv1.UnwrapRequest{Blob: want[0].blob, Context: []byte("not its context")}, codes.InvalidArgument},
			{&kv1.UnwrapRequest{Blob: other, Context: []byte("item-0")}, codes.PermissionDenied},
			{&kv1.UnwrapRequest{}, codes.InvalidArgument},
		}
		for _, b := range bad {
			req.Items = append(req.Items, b.item)
		}
		resp, err := c.BatchUnwrap(ctxT(t), req)
		if err != nil {
			t.Fatalf("BatchUnwrap (%s): %v", svc, err)
		}
		for i, res := range resp.GetResults() {
			if i >= len(want) {
				b := bad[i-len(want)]
				if got := codes.Code(res.GetError().GetCode()); res.GetValue() != nil || got != b.code {
					t.Fatalf("%s bad unwrap item %d: got %v, want %v", svc, i-len(want), got, b.code)
				}
				continue
			}
			if res.GetError() != nil || !bytes.Equal(res.GetValue().GetPlaintext(), want[i].plain) {
				t.Fatalf("%s unwrap item %d: %v, or other bytes", svc, i, res.GetError())
			}
		}
		if len(resp.GetResults()) != len(req.Items) {
			t.Fatalf("BatchUnwrap (%s): %d results for %d items", svc, len(resp.GetResults()), len(req.Items))
		}
		// A batch blob also opens alone, on a third node.
		mustUnwrap(t, r, r.Followers()[1], "acme", svc, wrapped{plain: want[len(want)-1].plain, ctx: want[len(want)-1].ctx, blob: want[len(want)-1].blob})
	}
}
