package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/kryptonkms/krypton/internal/pki"
)

// handshake runs identifyingCreds' server handshake against a TLS client
// presenting cert, over an in-memory pipe, and returns the AuthInfo.
func handshake(t *testing.T, cert tls.Certificate) credentials.AuthInfo {
	t.Helper()
	f := testPKI(t)
	creds := identifyingCreds{credentials.NewTLS(pki.ServerTLSConfig(f.ca.Pool(), f.server))}.Clone()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	clientDone := make(chan error, 1)
	go func() {
		cfg := pki.ClientTLSConfig(f.ca.Pool(), cert, "localhost")
		cfg.NextProtos = []string{"h2"} // gRPC's credentials insist on ALPN
		c := tls.Client(cc, cfg)
		clientDone <- c.HandshakeContext(t.Context())
	}()
	_, ai, err := creds.ServerHandshake(sc)
	if err != nil {
		t.Fatal(err)
	}
	sc.Close()
	<-clientDone
	return ai
}

// The server's credentials read the client certificate's identity once, at
// the handshake; every call on the connection then shares that result.
func TestIdentityReadAtHandshake(t *testing.T) {
	f := testPKI(t)
	ai := handshake(t, f.service)
	info, ok := ai.(*identifiedTLSInfo)
	if !ok {
		t.Fatalf("AuthInfo is %T, want *identifiedTLSInfo", ai)
	}
	if info.AuthType() != "tls" {
		t.Errorf("AuthType %q, want tls", info.AuthType())
	}
	want := pki.Identity{Kind: pki.KindService, Tenant: "acme", Service: "payments"}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: ai})
	r1, r2 := peerIdentity(ctx), peerIdentity(ctx)
	if r1 != r2 {
		t.Error("two calls on one connection did not share the identity read at the handshake")
	}
	if r1.err != nil || r1.id != want {
		t.Errorf("identity %v, %v; want %v", r1.id, r1.err, want)
	}

	// Unwrapped credentials (plain TLSInfo) still work, parsed per call.
	plain := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: info.TLSInfo})
	if r := peerIdentity(plain); r.err != nil || r.id != want {
		t.Errorf("plain TLSInfo: identity %v, %v; want %v", r.id, r.err, want)
	}
	// No peer, or a certificate naming no identity: an error, never an identity.
	if r := peerIdentity(context.Background()); !errors.Is(r.err, pki.ErrUnverified) {
		t.Errorf("no peer: %v, want ErrUnverified", r.err)
	}
	anon := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: handshake(t, f.anon)})
	if r := peerIdentity(anon); r.err == nil {
		t.Errorf("a certificate without a SPIFFE URI gave identity %v", r.id)
	}
}
