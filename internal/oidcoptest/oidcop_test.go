package oidcoptest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// TestOPIssuesVerifiableTokens: the OP's discovery names its device endpoint, and its ID tokens
// verify with an independent client (go-oidc) against its published keys, carrying the groups.
func TestOPIssuesVerifiableTokens(t *testing.T) {
	t.Parallel()
	o := Start(t, Options{Clients: []string{"cli"}, Users: []User{{Name: "alice", Password: "pw", Groups: []string{"admins"}}}})
	ctx, cancel := context.WithTimeout(oidc.ClientContext(context.Background(), o.Client()), time.Minute)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	if p.Endpoint().DeviceAuthURL == "" {
		t.Fatal("discovery names no device_authorization_endpoint")
	}
	raw, err := o.Token(ctx, "cli", "alice")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := p.Verifier(&oidc.Config{ClientID: "cli"}).Verify(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Groups []string `json:"groups"`
	}
	if err := tok.Claims(&claims); err != nil || tok.Subject != "alice" || !slices.Equal(claims.Groups, []string{"admins"}) {
		t.Fatalf("sub %q, claims %+v, %v", tok.Subject, claims, err)
	}
}
