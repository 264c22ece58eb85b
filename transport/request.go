package transport

import (
	"encoding/base64"
	"errors"

	"github.com/kryptonkms/krypton/wrap"
)

// The request rules every plane shares (region, governance, gateway): one request-ID check and
// one page-token format, so that an operator's client speaks one dialect to all of them.

// MaxRequestID is the longest request_id a write may carry (common.proto; docs/api.md,
// "Idempotency").
const MaxRequestID = 128

// DefaultPageSize is the page of a List RPC whose page_size is 0; MaxPageSize is the largest
// (docs/api.md, "Pagination").
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Errors of the request checks; the error table maps each to InvalidArgument with a message that
// names the fix and never echoes the request.
var (
	// ErrRequestID is CheckRequestID's refusal.
	ErrRequestID = errors.New("transport: request_id must be 1 to 128 printable ASCII characters (a UUID will do)")
	// ErrPageSize is Page's refusal of a page_size out of range.
	ErrPageSize = errors.New("transport: page_size must be 0 (the default, 100) to 1000")
	// ErrPageToken is Page's refusal of a page_token this server did not hand out.
	ErrPageToken = errors.New("transport: page_token is not valid; pass the next_page_token of the previous page, or none for the first")
)

// CheckRequestID requires the request id every operator write carries (docs/api.md,
// "Idempotency"): 1 to MaxRequestID printable ASCII characters, no spaces. Without one a retry
// after an ambiguous failure could apply a write twice. A server checks it before it proposes
// anything, so a refused id never reaches the Raft log.
func CheckRequestID(id string) error {
	if id == "" || len(id) > MaxRequestID {
		return ErrRequestID
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return ErrRequestID
		}
	}
	return nil
}

// Page reads a List request's page_size and page_token (docs/api.md, "Pagination"): how many
// items the page holds (DefaultPageSize for 0) and the name the page starts after ("" for the
// first page). A page_size out of range or a token that is not one NextPageToken made is
// refused. The token parses untrusted input: FuzzPage holds it to that.
func Page(size int32, token string) (n int, after string, err error) {
	if size < 0 || size > MaxPageSize {
		return 0, "", ErrPageSize
	}
	if size == 0 {
		size = DefaultPageSize
	}
	if token == "" {
		return int(size), "", nil
	}
	// Only the canonical form is a token: encoding/base64 skips CR and LF and, unless strict,
	// accepts unused low bits that are not zero, so two strings would name one page (FuzzPage
	// found both). Re-encoding and comparing refuses every other spelling.
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || wrap.ValidateName(string(b)) != nil || NextPageToken(string(b)) != token {
		return 0, "", ErrPageToken
	}
	return int(size), string(b), nil
}

// NextPageToken is the page_token of the page after the one whose last item is named last: the
// name in unpadded base64url, opaque to the client (docs/api.md) and read back by Page.
func NextPageToken(last string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(last))
}
