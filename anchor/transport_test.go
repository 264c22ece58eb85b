package anchor

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// An anchor's endpoint override must use TLS: sealing hands the provider the plaintext tenant
// key, and an awskms endpoint=http://... sent it in clear (issue 14). Plain http is accepted only
// where development anchors are, and only to a loopback emulator. The other schemes cannot name a
// plaintext transport.
func TestCheckTransport(t *testing.T) {
	const key = "awskms://alias/krypton-acme?region=eu-west-1&endpoint="
	for _, c := range []struct {
		uri       string
		dev       bool
		wantError bool
	}{
		{key + "https://kms.eu-west-1.amazonaws.com", false, false},
		{key + "https://vpce-1.kms.eu-west-1.vpce.amazonaws.com", true, false},
		{"awskms://alias/krypton-acme?region=eu-west-1", false, false},
		{key + "http://127.0.0.1:4599", true, false},
		{key + "http://127.9.9.9:4599", true, false},
		{key + "http://localhost:4599", true, false},
		{key + "http://[::1]:4599", true, false},
		{key + "http://127.0.0.1:4599", false, true}, // loopback, but not a development node
		{key + "http://kms.example.com", false, true},
		{key + "http://kms.example.com", true, true}, // development, but across a network
		{key + "http://10.0.0.7:4599", true, true},   // ditto
		{key + "http://localhost.evil.example", true, true},
		{"gcpkms://projects/my-project/locations/global/keyRings/r/cryptoKeys/k?endpoint=10.0.0.7:443", false, false},
		{"azurekv://myvault.vault.azure.net:8443/keys/k", false, false},
	} {
		u, err := Parse(c.uri)
		if err != nil {
			t.Fatalf("%s: %v", c.uri, err)
		}
		err = CheckTransport(u, c.dev)
		switch {
		case c.wantError && (!errors.Is(err, ErrPlainEndpoint) || !strings.Contains(err.Error(), "https://") || !strings.Contains(err.Error(), "-dev-anchor")):
			t.Errorf("%s (dev %v): %v, want ErrPlainEndpoint naming https:// and -dev-anchor", c.uri, c.dev, err)
		case !c.wantError && err != nil:
			t.Errorf("%s (dev %v): %v, want accepted", c.uri, c.dev, err)
		}
	}
}

// Open refuses a plaintext endpoint outside development before any provider is made (a URI
// stored before the check existed), and passes it to the provider in development.
func TestOpenRefusesPlainEndpoint(t *testing.T) {
	const uri = "awskms://alias/krypton-acme?region=eu-west-1&endpoint=http://127.0.0.1:1"
	if _, err := Open(context.Background(), uri, Options{}); !errors.Is(err, ErrPlainEndpoint) {
		t.Fatalf("Open without Development: %v, want ErrPlainEndpoint", err)
	}
	// In development the check passes, and Open goes on to the registry (no awskms provider is
	// linked into this package's tests).
	if _, err := Open(context.Background(), uri, Options{Development: true}); errors.Is(err, ErrPlainEndpoint) {
		t.Fatalf("Open with Development: %v, want the loopback endpoint accepted", err)
	}
}
