package region_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// TestPackedAgreesWithUnary: the blobs of a PackedWrap (no context, one shared context, one context
// per item) and of a PackedGenerateDataKey open with unary Unwrap, on another node, to the keys
// given or returned; PackedUnwrap opens the blobs of unary Wrap and of BatchWrap; every blob of one
// call names the same version, the one the response names.
func TestPackedAgreesWithUnary(t *testing.T) {
	t.Parallel()
	r := setup(t)
	waitSameState(t, r)
	f := r.Followers()[0]
	c := r.ServingWrapClient(f, "acme", "payments")
	other := r.ServingWrapClient(r.Leader(), "acme", "payments")

	const n = 40
	plains := make([][]byte, n)
	perItem := make([][]byte, n)
	for i := range plains {
		plains[i] = randKey(t)
		perItem[i] = []byte(fmt.Sprintf("item-%d", i))
	}
	clones := func() [][]byte {
		out := make([][]byte, n)
		for i, p := range plains {
			out[i] = bytes.Clone(p)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		contexts [][]byte
	}{{"no context", nil}, {"shared context", [][]byte{[]byte("shared")}}, {"per-item contexts", perItem}} {
		req := &kv1.PackedWrapRequest{Key: ref, Plaintexts: clones(), Contexts: tc.contexts}
		resp, err := c.PackedWrap(ctxT(t), req)
		if err != nil {
			t.Fatalf("PackedWrap (%s): %v", tc.name, err)
		}
		if k := resp.GetKey(); k.GetTenant() != "acme" || k.GetService() != "payments" || k.GetVersion() != 1 {
			t.Fatalf("PackedWrap (%s) names key %v", tc.name, k)
		}
		if len(resp.GetBlobs()) != n {
			t.Fatalf("PackedWrap (%s): %d blobs for %d plaintexts", tc.name, len(resp.GetBlobs()), n)
		}
		for i, blob := range resp.GetBlobs() {
			u, err := other.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: blob, Context: wrap.ItemContext(tc.contexts, i)})
			if err != nil || !bytes.Equal(u.GetPlaintext(), plains[i]) {
				t.Fatalf("PackedWrap (%s) blob %d: unary Unwrap: %v, or other bytes", tc.name, i, err)
			}
			if u.GetKey().GetVersion() != 1 {
				t.Fatalf("PackedWrap (%s) blob %d opened under %v", tc.name, i, u.GetKey())
			}
		}
		// And PackedUnwrap opens them, with the same contexts.
		pu, err := other.PackedUnwrap(ctxT(t), &kv1.PackedUnwrapRequest{Blobs: resp.GetBlobs(), Contexts: tc.contexts})
		if err != nil {
			t.Fatalf("PackedUnwrap (%s): %v", tc.name, err)
		}
		if len(pu.GetErrors()) != 0 || len(pu.GetKeys()) != 1 || pu.GetKeys()[0].GetVersion() != 1 {
			t.Fatalf("PackedUnwrap (%s): errors %v, keys %v", tc.name, pu.GetErrors(), pu.GetKeys())
		}
		for i, p := range pu.GetPlaintexts() {
			if !bytes.Equal(p, plains[i]) || pu.GetKeyIndex()[i] != 0 {
				t.Fatalf("PackedUnwrap (%s) item %d: other bytes, or key index %d", tc.name, i, pu.GetKeyIndex()[i])
			}
		}

		g, err := c.PackedGenerateDataKey(ctxT(t), &kv1.PackedGenerateDataKeyRequest{Key: ref, Count: n, Contexts: tc.contexts})
		if err != nil {
			t.Fatalf("PackedGenerateDataKey (%s): %v", tc.name, err)
		}
		if len(g.GetPlaintexts()) != n || len(g.GetBlobs()) != n || g.GetKey().GetVersion() != 1 {
			t.Fatalf("PackedGenerateDataKey (%s): %d plaintexts, %d blobs, key %v", tc.name, len(g.GetPlaintexts()), len(g.GetBlobs()), g.GetKey())
		}
		seen := map[string]bool{}
		for i, blob := range g.GetBlobs() {
			p := g.GetPlaintexts()[i]
			if len(p) != 32 || seen[string(p)] {
				t.Fatalf("PackedGenerateDataKey (%s) item %d: %d bytes, or a key that repeats", tc.name, i, len(p))
			}
			seen[string(p)] = true
			u, err := other.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: blob, Context: wrap.ItemContext(tc.contexts, i)})
			if err != nil || !bytes.Equal(u.GetPlaintext(), p) {
				t.Fatalf("PackedGenerateDataKey (%s) blob %d: unary Unwrap: %v, or other bytes", tc.name, i, err)
			}
		}
	}

	// PackedUnwrap of unary Wrap and BatchWrap blobs, contexts per item.
	var blobs, ctxs, want [][]byte
	batch := &kv1.BatchWrapRequest{}
	for i := range 8 {
		w, err := c.Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: bytes.Clone(plains[i]), Context: perItem[i]})
		if err != nil {
			t.Fatal(err)
		}
		blobs, ctxs, want = append(blobs, w.GetBlob()), append(ctxs, perItem[i]), append(want, plains[i])
		batch.Items = append(batch.Items, &kv1.WrapRequest{Key: ref, Plaintext: bytes.Clone(plains[n-1-i]), Context: perItem[n-1-i]})
	}
	bw, err := c.BatchWrap(ctxT(t), batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range bw.GetResults() {
		blobs, ctxs, want = append(blobs, res.GetValue().GetBlob()), append(ctxs, perItem[n-1-i]), append(want, plains[n-1-i])
	}
	pu, err := other.PackedUnwrap(ctxT(t), &kv1.PackedUnwrapRequest{Blobs: blobs, Contexts: ctxs})
	if err != nil {
		t.Fatal(err)
	}
	if len(pu.GetErrors()) != 0 {
		t.Fatalf("PackedUnwrap of unary and batch blobs: errors %v", pu.GetErrors())
	}
	for i, p := range pu.GetPlaintexts() {
		if !bytes.Equal(p, want[i]) {
			t.Fatalf("PackedUnwrap of unary and batch blobs, item %d: other bytes", i)
		}
	}
}

// TestPackedErrors: every input error of a packed call fails the call with InvalidArgument naming
// the item, never its bytes, and changes nothing; the key's errors fail PackedWrap and
// PackedGenerateDataKey with the code a unary call gets; PackedUnwrap answers each blob with the
// code a unary Unwrap gives it (tampered, wrong context, revoked version, another service's key,
// malformed) and opens the others, naming each version that opened one; a locked tenant is
// FailedPrecondition and a node without a lease Unavailable, for all three.
func TestPackedErrors(t *testing.T) {
	t.Parallel()
	r := setup(t)
	admin := r.AdminClient(r.Leader())
	if _, err := admin.CreateKey(ctxT(t), &kv1.CreateKeyRequest{RequestId: "k-ledger", Tenant: "acme", Service: "ledger"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	f := r.Followers()[0]
	c := r.ServingWrapClient(f, "acme", "payments")
	wrapOne := func(client kv1.WrapServiceClient, ref *kv1.KeyRef, ctx []byte) wrapped {
		t.Helper()
		w := wrapped{plain: randKey(t), ctx: ctx}
		resp, err := client.Wrap(ctxT(t), &kv1.WrapRequest{Key: ref, Plaintext: bytes.Clone(w.plain), Context: ctx})
		if err != nil {
			t.Fatal(err)
		}
		w.blob = resp.GetBlob()
		return w
	}
	// Blobs under version 1 (to be revoked), version 2 (then decrypt-only), version 3 (current)
	// and another service's key.
	rotate := func(id string) {
		t.Helper()
		if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: id, Tenant: "acme", Service: "payments"}); err != nil {
			t.Fatal(err)
		}
		waitSameState(t, r)
	}
	v1 := wrapOne(c, ref, []byte("v1"))
	rotate("rot-2")
	v2 := wrapOne(c, ref, []byte("v2"))
	rotate("rot-3")
	v3 := wrapOne(c, ref, []byte("v3"))
	ledger := wrapOne(r.ServingWrapClient(f, "acme", "ledger"), &kv1.KeyRef{Tenant: "acme", Service: "ledger"}, nil)
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev-1", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)

	t.Run("input", func(t *testing.T) {
		// A plaintext whose bytes would show in a message, as text or hex.
		secret := []byte("SECRET-PLAINTEXT-0123456789abcde")
		plains := func(n int) [][]byte {
			out := make([][]byte, n)
			for i := range out {
				out[i] = bytes.Clone(secret)
			}
			return out
		}
		with := func(ps [][]byte, i int, p []byte) [][]byte { ps[i] = p; return ps }
		long := make([]byte, wrap.MaxContextSize+1)
		ctxs := func(n, bad int) [][]byte {
			out := make([][]byte, n)
			for i := range out {
				out[i] = []byte("c")
			}
			if bad >= 0 {
				out[bad] = long
			}
			return out
		}
		pw := func(ps, cs [][]byte) func() error {
			return func() error {
				_, err := c.PackedWrap(ctxShort(t), &kv1.PackedWrapRequest{Key: ref, Plaintexts: ps, Contexts: cs})
				return err
			}
		}
		pg := func(n uint32, cs [][]byte) func() error {
			return func() error {
				_, err := c.PackedGenerateDataKey(ctxShort(t), &kv1.PackedGenerateDataKeyRequest{Key: ref, Count: n, Contexts: cs})
				return err
			}
		}
		pu := func(n int, cs [][]byte) func() error {
			blobs := make([][]byte, n)
			for i := range blobs {
				blobs[i] = v3.blob
			}
			return func() error {
				_, err := c.PackedUnwrap(ctxShort(t), &kv1.PackedUnwrapRequest{Blobs: blobs, Contexts: cs})
				return err
			}
		}
		before := hashes(r)
		for _, tc := range []struct {
			name string
			call func() error
			want string // in the message
		}{
			{"wrap of 0", pw(nil, nil), "not 0"},
			{"wrap of 1025", pw(plains(transport.MaxBatchItems+1), nil), "not 1025"},
			{"wrap, a short plaintext", pw(with(plains(10), 7, secret[:31]), nil), "item 7:"},
			{"wrap, a long plaintext", pw(with(plains(10), 0, append(bytes.Clone(secret), 'x')), nil), "item 0:"},
			{"wrap, an empty plaintext", pw(with(plains(10), 9, nil), nil), "item 9:"},
			{"wrap, an all-zero plaintext", pw(with(plains(10), 3, make([]byte, 32)), nil), "item 3:"},
			{"wrap, a long context", pw(plains(10), ctxs(10, 5)), "item 5:"},
			{"wrap, a long shared context", pw(plains(10), [][]byte{long}), "shared context"},
			{"wrap, two contexts for ten", pw(plains(10), ctxs(2, -1)), "2 contexts for 10"},
			{"wrap, eleven contexts for ten", pw(plains(10), ctxs(11, -1)), "11 contexts for 10"},
			{"datakey of 0", pg(0, nil), "not 0"},
			{"datakey of 1025", pg(transport.MaxBatchItems+1, nil), "not 1025"},
			{"datakey, a long context", pg(10, ctxs(10, 4)), "item 4:"},
			{"datakey, three contexts for ten", pg(10, ctxs(3, -1)), "3 contexts for 10"},
			{"unwrap of 0", pu(0, nil), "not 0"},
			{"unwrap of 1025", pu(transport.MaxBatchItems+1, nil), "not 1025"},
			{"unwrap, two contexts for ten", pu(10, ctxs(2, -1)), "2 contexts for 10"},
		} {
			err := tc.call()
			wantCode(t, err, codes.InvalidArgument, tc.name)
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("%s: message %q does not say %q", tc.name, msg, tc.want)
			}
			for _, leak := range []string{string(secret[:16]), hex.EncodeToString(secret[:8]), base64.StdEncoding.EncodeToString(secret[:12])} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("%s: the error shows the plaintext: %v", tc.name, err)
				}
			}
		}
		if after := hashes(r); !maps.Equal(before, after) {
			t.Errorf("refused packed calls changed the state")
		}
	})

	t.Run("key", func(t *testing.T) {
		// Each key error of PackedWrap and PackedGenerateDataKey is the unary call's.
		globex := r.ServingWrapClient(f, "globex", "payments")
		nosvc := r.ServingWrapClient(f, "acme", "nosuch")
		for _, tc := range []struct {
			name   string
			client kv1.WrapServiceClient
			key    *kv1.KeyRef
			want   codes.Code
		}{
			{"unknown tenant", globex, &kv1.KeyRef{Tenant: "globex", Service: "payments"}, codes.NotFound},
			{"unknown service", nosvc, &kv1.KeyRef{Tenant: "acme", Service: "nosuch"}, codes.NotFound},
			{"unknown version", c, &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 9}, codes.NotFound},
			{"revoked version", c, &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 1}, codes.FailedPrecondition},
			{"decrypt-only version", c, &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 2}, codes.FailedPrecondition},
			{"another service (policy)", c, &kv1.KeyRef{Tenant: "acme", Service: "ledger"}, codes.PermissionDenied},
			{"another tenant (policy)", c, &kv1.KeyRef{Tenant: "globex", Service: "payments"}, codes.PermissionDenied},
			{"no key", c, nil, codes.InvalidArgument},
		} {
			_, unary := tc.client.Wrap(ctxT(t), &kv1.WrapRequest{Key: tc.key, Plaintext: randKey(t)})
			_, packed := tc.client.PackedWrap(ctxT(t), &kv1.PackedWrapRequest{Key: tc.key, Plaintexts: [][]byte{randKey(t), randKey(t)}})
			wantCode(t, unary, tc.want, tc.name+": unary Wrap")
			wantCode(t, packed, tc.want, tc.name+": PackedWrap")
			_, unary = tc.client.GenerateDataKey(ctxT(t), &kv1.GenerateDataKeyRequest{Key: tc.key})
			_, packed = tc.client.PackedGenerateDataKey(ctxT(t), &kv1.PackedGenerateDataKeyRequest{Key: tc.key, Count: 3})
			wantCode(t, unary, tc.want, tc.name+": unary GenerateDataKey")
			wantCode(t, packed, tc.want, tc.name+": PackedGenerateDataKey")
		}
		// Version 3 named explicitly is the current one.
		resp, err := c.PackedWrap(ctxT(t), &kv1.PackedWrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments", Version: 3}, Plaintexts: [][]byte{randKey(t)}})
		if err != nil || resp.GetKey().GetVersion() != 3 {
			t.Fatalf("PackedWrap under version 3: %v, key %v", err, resp.GetKey())
		}
	})

	t.Run("unwrap", func(t *testing.T) {
		tampered := bytes.Clone(v3.blob)
		tampered[len(tampered)-1] ^= 1
		items := []wrapped{
			v3,                                      // 0: opens under version 3
			{blob: tampered, ctx: v3.ctx},           // 1: InvalidArgument
			{blob: v3.blob, ctx: []byte("another")}, // 2: InvalidArgument
			v1,                                      // 3: FailedPrecondition (revoked)
			v2,                                      // 4: opens under version 2 (decrypt-only)
			ledger,                                  // 5: PermissionDenied
			{blob: []byte("not a blob")},            // 6: InvalidArgument
			{blob: nil},                             // 7: InvalidArgument
			{blob: v3.blob, ctx: make([]byte, wrap.MaxContextSize+1)}, // 8: InvalidArgument
			v2, // 9: opens under version 2
			v3, // 10: opens under version 3
		}
		req := &kv1.PackedUnwrapRequest{}
		for _, it := range items {
			req.Blobs, req.Contexts = append(req.Blobs, it.blob), append(req.Contexts, it.ctx)
		}
		resp, err := c.PackedUnwrap(ctxT(t), req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetPlaintexts()) != len(items) || len(resp.GetKeyIndex()) != len(items) {
			t.Fatalf("%d plaintexts and %d key indexes for %d blobs", len(resp.GetPlaintexts()), len(resp.GetKeyIndex()), len(items))
		}
		errs := map[int]*kv1.ItemError{}
		last := -1
		for _, e := range resp.GetErrors() {
			if int(e.GetIndex()) <= last {
				t.Fatalf("errors not in ascending index order: %v", resp.GetErrors())
			}
			last = int(e.GetIndex())
			errs[last] = e.GetError()
		}
		keys := map[uint32]bool{}
		for i, it := range items {
			u, err := c.Unwrap(ctxT(t), &kv1.UnwrapRequest{Blob: it.blob, Context: it.ctx})
			if got, want := codes.Code(errs[i].GetCode()), status.Code(err); got != want {
				t.Errorf("item %d: packed %s (%s), unary %s", i, got, errs[i].GetMessage(), want)
			}
			if err != nil {
				if len(resp.GetPlaintexts()[i]) != 0 {
					t.Errorf("item %d failed but has a plaintext", i)
				}
				continue
			}
			if !bytes.Equal(resp.GetPlaintexts()[i], it.plain) || !bytes.Equal(u.GetPlaintext(), it.plain) {
				t.Errorf("item %d: packed and unary plaintexts differ, or differ from the key wrapped", i)
			}
			k := resp.GetKeys()[resp.GetKeyIndex()[i]]
			if k.GetTenant() != "acme" || k.GetService() != "payments" || k.GetVersion() != u.GetKey().GetVersion() {
				t.Errorf("item %d: opened under %v, unary says %v", i, k, u.GetKey())
			}
			keys[k.GetVersion()] = true
		}
		if len(resp.GetKeys()) != 2 || !keys[2] || !keys[3] {
			t.Errorf("keys %v, want versions 3 and 2, once each", resp.GetKeys())
		}
		if len(errs) != 7 {
			t.Errorf("%d errors, want 7: %v", len(errs), resp.GetErrors())
		}
		// One shared context: the blobs made with another one fail, the others open.
		resp, err = c.PackedUnwrap(ctxT(t), &kv1.PackedUnwrapRequest{Blobs: [][]byte{v2.blob, v3.blob, v2.blob}, Contexts: [][]byte{v3.ctx}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetErrors()) != 2 || resp.GetErrors()[0].GetIndex() != 0 || resp.GetErrors()[1].GetIndex() != 2 ||
			!bytes.Equal(resp.GetPlaintexts()[1], v3.plain) || len(resp.GetKeys()) != 1 || resp.GetKeyIndex()[1] != 0 {
			t.Errorf("PackedUnwrap with a shared context: %v", resp)
		}
	})

	t.Run("locked", func(t *testing.T) {
		if _, err := admin.LockTenant(ctxT(t), &kv1.LockTenantRequest{RequestId: "lock", Tenant: "acme", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		waitSameState(t, r)
		_, err := c.PackedWrap(ctxT(t), &kv1.PackedWrapRequest{Key: ref, Plaintexts: [][]byte{randKey(t)}})
		wantCode(t, err, codes.FailedPrecondition, "PackedWrap for a locked tenant")
		_, err = c.PackedGenerateDataKey(ctxT(t), &kv1.PackedGenerateDataKeyRequest{Key: ref, Count: 1})
		wantCode(t, err, codes.FailedPrecondition, "PackedGenerateDataKey for a locked tenant")
		resp, err := c.PackedUnwrap(ctxT(t), &kv1.PackedUnwrapRequest{Blobs: [][]byte{v3.blob, v2.blob}, Contexts: [][]byte{v3.ctx, v2.ctx}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetErrors() {
			if codes.Code(e.GetError().GetCode()) != codes.FailedPrecondition {
				t.Errorf("PackedUnwrap for a locked tenant, item %d: %v", e.GetIndex(), e.GetError())
			}
		}
		if len(resp.GetErrors()) != 2 || len(resp.GetKeys()) != 0 {
			t.Errorf("PackedUnwrap for a locked tenant: %v", resp)
		}
	})

	t.Run("no lease", func(t *testing.T) {
		// A node cut off from the others loses its lease within a lease period.
		r.Partition(f)
		clustertest.Eventually(t, 20*time.Second, "the partitioned node without a lease", func() bool { return r.Nodes[f].Serving() != nil })
		// A plain client: c makes an Unavailable call again until its context ends, and then
		// answers DeadlineExceeded on a busy machine.
		c := r.WrapClient(f, "acme", "payments")
		_, err := c.PackedWrap(ctxShort(t), &kv1.PackedWrapRequest{Key: ref, Plaintexts: [][]byte{randKey(t)}})
		wantCode(t, err, codes.Unavailable, "PackedWrap on a node without a lease")
		_, err = c.PackedGenerateDataKey(ctxShort(t), &kv1.PackedGenerateDataKeyRequest{Key: ref, Count: 1})
		wantCode(t, err, codes.Unavailable, "PackedGenerateDataKey on a node without a lease")
		_, err = c.PackedUnwrap(ctxShort(t), &kv1.PackedUnwrapRequest{Blobs: [][]byte{v3.blob}, Contexts: [][]byte{v3.ctx}})
		wantCode(t, err, codes.Unavailable, "PackedUnwrap on a node without a lease")
		r.Heal()
	})
}
