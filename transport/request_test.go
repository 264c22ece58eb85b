package transport

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/wrap"
)

func TestCheckRequestID(t *testing.T) {
	for _, id := range []string{"a", "0f9e-uuid", strings.Repeat("r", MaxRequestID), "!~"} {
		if err := CheckRequestID(id); err != nil {
			t.Errorf("CheckRequestID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", strings.Repeat("r", MaxRequestID+1), "a b", "a\tb", "é", "a\x7f"} {
		if err := CheckRequestID(id); !errors.Is(err, ErrRequestID) {
			t.Errorf("CheckRequestID(%q) = %v, want ErrRequestID", id, err)
		}
	}
}

func TestPage(t *testing.T) {
	for _, c := range []struct {
		size  int32
		token string
		n     int
		after string
		err   error
	}{
		{0, "", DefaultPageSize, "", nil},
		{1, "", 1, "", nil},
		{MaxPageSize, NextPageToken("acme"), MaxPageSize, "acme", nil},
		{-1, "", 0, "", ErrPageSize},
		{MaxPageSize + 1, "", 0, "", ErrPageSize},
		{0, "!!", 0, "", ErrPageToken},
		{0, "acme", 0, "", ErrPageToken},                      // a raw name is not a token
		{0, NextPageToken("ACME"), 0, "", ErrPageToken},       // not a valid name
		{0, NextPageToken("acme") + "=", 0, "", ErrPageToken}, // padded
	} {
		n, after, err := Page(c.size, c.token)
		if n != c.n || after != c.after || !errors.Is(err, c.err) {
			t.Errorf("Page(%d, %q) = %d, %q, %v; want %d, %q, %v", c.size, c.token, n, after, err, c.n, c.after, c.err)
		}
	}
}

// FuzzPage holds the page-token parser, which reads untrusted input, to its contract: it never
// panics, it accepts only the tokens NextPageToken makes of valid names, and what it accepts
// reads back as the same token.
func FuzzPage(f *testing.F) {
	for _, s := range []string{"", "YWNtZQ", "!!", "acme", "YWNtZQ==", "QUNNRQ", "Li4"} {
		f.Add(int32(0), s)
	}
	f.Add(int32(-1), "")
	f.Add(int32(1001), "YQ")
	f.Fuzz(func(t *testing.T, size int32, token string) {
		n, after, err := Page(size, token)
		if err != nil {
			if n != 0 || after != "" {
				t.Fatalf("refused but returned %d, %q", n, after)
			}
			if !errors.Is(err, ErrPageSize) && !errors.Is(err, ErrPageToken) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n < 1 || n > MaxPageSize {
			t.Fatalf("page of %d", n)
		}
		if token == "" {
			if after != "" {
				t.Fatalf("empty token gave %q", after)
			}
			return
		}
		if wrap.ValidateName(after) != nil {
			t.Fatalf("token %q gave an invalid name", token)
		}
		if NextPageToken(after) != token {
			t.Fatalf("token %q reads back as %q", token, NextPageToken(after))
		}
	})
}

// A server's own rows (ServerConfig.Errors) map what the table does not know, after it, with the
// row's message or the sentinel's own text, never the text of the error that wraps it.
func TestToStatusExtraRows(t *testing.T) {
	own := errors.New("plane: thing not found")
	fixed := errors.New("plane: other")
	extra := []ErrorRow{{Err: own, Code: codes.NotFound}, {Err: fixed, Code: codes.Aborted, Msg: "plane: retry"}}
	for _, c := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{fmt.Errorf("lookup %s: %w", secret, own), codes.NotFound, "plane: thing not found"},
		{fixed, codes.Aborted, "plane: retry"},
		{fmt.Errorf("%w and %w", ErrRequestID, own), codes.InvalidArgument, ErrRequestID.Error()}, // the table first
		{errors.New("unknown"), codes.Internal, internalMessage},
	} {
		st, _ := toStatus(c.err, extra)
		if st.Code() != c.code || st.Message() != c.msg {
			t.Errorf("toStatus(%q) = %v %q, want %v %q", c.err, st.Code(), st.Message(), c.code, c.msg)
		}
	}
	if st := status.Convert(ToStatus(own)); st.Code() != codes.Internal {
		t.Errorf("ToStatus without the server's rows mapped %v", st.Code())
	}
}
