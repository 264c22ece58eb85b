package wrap

import "errors"

// Sentinel errors. Callers test them with errors.Is; transport maps them to
// gRPC status codes. None of them, nor any error wrapping them, ever carries
// key bytes or echoes the bytes of a blob.
var (
	// ErrInvalidName is returned when a tenant or service name is empty,
	// longer than MaxNameLen bytes, or uses a byte outside [a-z0-9._-]
	// (or does not start with [a-z0-9]).
	ErrInvalidName = errors.New("wrap: invalid name")

	// ErrInvalidKeyID is returned when a KeyID is not valid for its use: a
	// bad name, version 0, a service key without a service, or a tenant key
	// with one.
	ErrInvalidKeyID = errors.New("wrap: invalid key id")
)
