package wrap

import (
	"errors"
	"strconv"
	"strings"
)

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

	// ErrInvalidKey is returned when key material handed to a FromBytes
	// constructor is not exactly KeySize bytes, or is all zero (almost
	// certainly an uninitialised buffer, never a random key).
	ErrInvalidKey = errors.New("wrap: invalid key material")

	// ErrDestroyed is returned when a key is used after Destroy, or when
	// a method is called on a nil or zero-value key.
	ErrDestroyed = errors.New("wrap: key destroyed")

	// ErrContextTooLarge is returned when a caller's context (additional
	// authenticated data) is longer than MaxContextSize bytes.
	ErrContextTooLarge = errors.New("wrap: context too large")

	// ErrMalformed is returned when a blob is truncated, oversized, has
	// trailing bytes, a bad magic byte, an invalid name or version zero in
	// its header, or fields that contradict its kind.
	ErrMalformed = errors.New("wrap: malformed blob")

	// ErrFIPSMode is returned when FIPS 140-only mode
	// (GODEBUG=fips140=only) refuses an operation: writing a blob of a
	// suite whose GCM nonce the caller chooses. The error names the suite
	// to use instead.
	ErrFIPSMode = errors.New("wrap: refused in FIPS 140-only mode")

	// ErrUnsupportedVersion is returned when a blob's format version, kind
	// or KDF id is well formed but unknown to this build: it was written by
	// a newer Krypton.
	ErrUnsupportedVersion = errors.New("wrap: unsupported blob version")

	// ErrKeyMismatch is returned when a well-formed blob names a different
	// key, or is of a different kind, from the one it is being opened
	// with: for example a data key wrapped by acme/payments@v3 offered to
	// acme/payments@v4. It is checked before any cryptography, from the
	// header alone.
	ErrKeyMismatch = errors.New("wrap: blob is for another key")

	// ErrAuthentication is returned when a blob's header names the right
	// key but AES-GCM authentication fails: the blob was altered, the
	// caller's context differs from the one it was wrapped with, or the key
	// of that name holds different bytes.
	ErrAuthentication = errors.New("wrap: message authentication failed")

	// ErrBatchMismatch is returned when a batch call's slices of keys (or
	// blobs) and contexts have different lengths.
	ErrBatchMismatch = errors.New("wrap: batch slices differ in length")
)

// BatchError is returned by UnwrapBatch when some items fail and others
// succeed. Errs has one entry per input item, nil where the item opened.
// errors.Is(err, ErrAuthentication) reports whether any item failed
// authentication.
type BatchError struct {
	Errs []error
}

func (e *BatchError) Error() string {
	var failed, first int = 0, -1
	for i, err := range e.Errs {
		if err != nil {
			if first < 0 {
				first = i
			}
			failed++
		}
	}
	if first < 0 {
		return "wrap: batch: no failures"
	}
	var b strings.Builder
	b.WriteString("wrap: batch: ")
	b.WriteString(strconv.Itoa(failed))
	b.WriteString(" of ")
	b.WriteString(strconv.Itoa(len(e.Errs)))
	b.WriteString(" items failed; item ")
	b.WriteString(strconv.Itoa(first))
	b.WriteString(": ")
	b.WriteString(e.Errs[first].Error())
	return b.String()
}

// Unwrap returns the non-nil per-item errors, for errors.Is and errors.As.
func (e *BatchError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
