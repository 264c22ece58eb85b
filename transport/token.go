package transport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
)

// TokenSource gives the OIDC bearer token a client sends with each call
// (ClientConfig.Token). Token is called before every call, so a source may
// return a refreshed token.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// StaticToken is a TokenSource that always returns the same token.
type StaticToken string

// Token returns t.
func (t StaticToken) Token(context.Context) (string, error) {
	if t == "" {
		return "", errors.New("transport: empty bearer token")
	}
	return string(t), nil
}

// TokenFile is a TokenSource that reads the token from a file before every
// call, so that a token refreshed in place (by an OIDC login helper, or a
// Kubernetes projected token) is picked up. Surrounding white space is
// removed.
type TokenFile string

// Token reads the file. Its error names the file, never its contents.
func (f TokenFile) Token(context.Context) (string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return "", fmt.Errorf("transport: reading token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("transport: token file %s is empty", string(f))
	}
	if len(tok) > MaxTokenSize {
		return "", fmt.Errorf("transport: token file %s holds more than %d bytes", string(f), MaxTokenSize)
	}
	return tok, nil
}

// tokenCredentials sends a TokenSource's token as "authorization: Bearer
// ..." on every call; gRPC refuses to send it over a connection without
// transport security.
type tokenCredentials struct{ src TokenSource }

var _ credentials.PerRPCCredentials = tokenCredentials{}

func (c tokenCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	tok, err := c.src.Token(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (tokenCredentials) RequireTransportSecurity() bool { return true }
