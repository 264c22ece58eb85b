package kryptonv1

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NewItemError returns the per-item error of a batch result for s. It
// returns nil if s is nil or OK: an item without error carries a value.
// The caller must have built s from the transport error table, never from
// an error whose message could hold key material or request bytes.
func NewItemError(s *status.Status) *ItemError {
	if s == nil || s.Code() == codes.OK {
		return nil
	}
	return &ItemError{Code: uint32(s.Code()), Message: s.Message()}
}

// Err returns e as a gRPC status error, or nil if e is nil. A malformed
// ItemError whose code is OK or not a known gRPC code becomes codes.Unknown,
// so that an item error never reads as success.
func (e *ItemError) Err() error {
	if e == nil {
		return nil
	}
	c := codes.Code(e.Code)
	if c == codes.OK || c > codes.Unauthenticated {
		c = codes.Unknown
	}
	return status.Error(c, e.Message)
}
