package kryptonv1

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestItemErrorRoundTrip(t *testing.T) {
	if NewItemError(nil) != nil || NewItemError(status.New(codes.OK, "")) != nil {
		t.Fatal("NewItemError of nil or OK must be nil")
	}
	var nilErr *ItemError
	if nilErr.Err() != nil {
		t.Fatal("(*ItemError)(nil).Err() must be nil")
	}
	e := NewItemError(status.New(codes.FailedPrecondition, "key version revoked"))
	s := status.Convert(e.Err())
	if s.Code() != codes.FailedPrecondition || s.Message() != "key version revoked" {
		t.Fatalf("round trip gave %v %q", s.Code(), s.Message())
	}
	for _, code := range []uint32{0, 17, 1 << 31} {
		if got := status.Code((&ItemError{Code: code}).Err()); got != codes.Unknown {
			t.Errorf("ItemError{Code: %d}.Err() has code %v, want Unknown", code, got)
		}
	}
}
