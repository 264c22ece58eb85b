package gateway

import (
	"bytes"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func TestGroupByKey(t *testing.T) {
	ref := func(service string, version uint32) *kv1.KeyRef {
		return &kv1.KeyRef{Tenant: "acme", Service: service, Version: version}
	}
	reqs := []*kv1.WrapRequest{{Key: ref("a", 0)}, {Key: ref("a", 0)}, {Key: ref("a", 0)}}
	if got := groupByKey(reqs); len(got) != 1 || !slices.Equal(got[0], []int{0, 1, 2}) {
		t.Errorf("one key: groups %v", got)
	}
	reqs = []*kv1.WrapRequest{{Key: ref("a", 0)}, {Key: ref("b", 0)}, {Key: ref("a", 2)}, {Key: ref("a", 0)}, {Key: ref("b", 0)}}
	got := groupByKey(reqs)
	want := [][]int{{0, 3}, {1, 4}, {2}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("three keys: groups %v, want %v", got, want)
	}
}

func TestPackedContexts(t *testing.T) {
	of := func(cs ...string) func(int) []byte {
		return func(j int) []byte { return []byte(cs[j]) }
	}
	if got := packedContexts(3, of("", "", "")); got != nil {
		t.Errorf("no contexts: %q, want none", got)
	}
	if got := packedContexts(3, of("x", "x", "x")); len(got) != 1 || string(got[0]) != "x" {
		t.Errorf("one shared context: %q, want one", got)
	}
	if got := packedContexts(3, of("x", "", "y")); len(got) != 3 || string(got[0]) != "x" || len(got[1]) != 0 || string(got[2]) != "y" {
		t.Errorf("mixed contexts: %q, want one per item", got)
	}
}

// unpackUnwraps maps a PackedUnwrap answer to the per-item results a BatchUnwrap would give:
// values with their keys, item errors as they are, and an item with neither as Internal.
func TestUnpackUnwraps(t *testing.T) {
	k1, k2 := &kv1.KeyRef{Tenant: "acme", Service: "a", Version: 1}, &kv1.KeyRef{Tenant: "acme", Service: "a", Version: 2}
	lost := []byte{9, 9}
	resp := &kv1.PackedUnwrapResponse{
		Plaintexts: [][]byte{{1}, nil, {3}, lost, {5}},
		Keys:       []*kv1.KeyRef{k1, k2},
		KeyIndex:   []uint32{1, 0, 0, 0, 7}, // item 4 names no key
		Errors: []*kv1.PackedItemError{
			{Index: 1, Error: &kv1.ItemError{Code: uint32(codes.NotFound), Message: "no such version"}},
			{Index: 3, Error: &kv1.ItemError{Code: uint32(codes.Unavailable)}},
		},
	}
	var codesGot []codes.Code
	var values [][]byte
	var keys []*kv1.KeyRef
	err := unpackUnwraps(resp, 5, func(j int, v *kv1.UnwrapResponse, e *kv1.ItemError) {
		if j != len(codesGot) {
			t.Fatalf("item %d settled out of order", j)
		}
		if v != nil {
			codesGot, values, keys = append(codesGot, codes.OK), append(values, v.GetPlaintext()), append(keys, v.GetKey())
			return
		}
		codesGot = append(codesGot, status.Code(itemErr(e)))
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []codes.Code{codes.OK, codes.NotFound, codes.OK, codes.Unavailable, codes.Internal}
	if !slices.Equal(codesGot, want) {
		t.Errorf("codes %v, want %v", codesGot, want)
	}
	if len(values) != 2 || !bytes.Equal(values[0], []byte{1}) || keys[0] != k2 || !bytes.Equal(values[1], []byte{3}) || keys[1] != k1 {
		t.Errorf("values %v with keys %v", values, keys)
	}
	if !bytes.Equal(lost, []byte{0, 0}) {
		t.Error("a plaintext beside an item error was not wiped")
	}

	short := &kv1.PackedUnwrapResponse{Plaintexts: [][]byte{{1, 2}}}
	kept := short.Plaintexts[0]
	if err := unpackUnwraps(short, 2, func(int, *kv1.UnwrapResponse, *kv1.ItemError) { t.Error("a short answer settled an item") }); status.Code(err) != codes.Internal {
		t.Errorf("a short answer: %v, want Internal", err)
	}
	if !bytes.Equal(kept, []byte{0, 0}) {
		t.Error("the plaintexts of a short answer were not wiped")
	}
}
