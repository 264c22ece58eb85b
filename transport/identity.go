package transport

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// Fully qualified gRPC service names, as they appear in a method's full name
// "/<service>/<method>" and in health checks.
const (
	WrapService       = "krypton.v1.WrapService"
	AdminService      = "krypton.v1.AdminService"
	NodeService       = "krypton.v1.NodeService"
	GovernanceService = "krypton.v1.GovernanceService"
	HealthService     = "grpc.health.v1.Health"
)

// Policy says which kinds of certificate may call each gRPC service, by
// fully qualified service name. A service missing from the policy may be
// called by nobody: a server that registers a service must also say who may
// call it. An empty (non-nil) list admits any verified identity.
//
// This is the coarse, per-service check, done before any handler runs.
// Finer checks are the handlers' (AuthorizeNode, the voter check of
// NodeService, the tenant's key-use policy: package policy).
type Policy map[string][]pki.Kind

// DefaultPolicy returns the policy of Krypton's servers:
//
//   - WrapService: service certificates only. Operators administer a region
//     but do not use its keys: an operator certificate that could unwrap
//     would open every tenant's data keys, which is exactly what separating
//     the customer's services from the operator forbids. `krypton wrap` and
//     the gateway therefore present a service certificate (a tenant's).
//   - AdminService: operator certificates only.
//   - NodeService: region node certificates only, and only of the server's
//     own region (a server whose certificate is not a region node's admits
//     nobody); handlers then check the node ID and that the node is a
//     current voter. Never a gateway's or a governance node's certificate.
//   - GovernanceService: operators (administration) and region nodes (the
//     revocation feed, which governance serves to a region's own nodes
//     only); handlers tell them apart by method. Never a gateway's.
//   - grpc.health.v1.Health: any verified identity.
func DefaultPolicy() Policy {
	return Policy{
		WrapService:       {pki.KindService},
		AdminService:      {pki.KindOperator},
		NodeService:       {pki.KindNode},
		GovernanceService: {pki.KindOperator, pki.KindNode},
		HealthService:     {},
	}
}

type identityKey struct{}

// identityResult is what the identity step stored for a call: the identity,
// or why there is none.
type identityResult struct {
	id  pki.Identity
	err error
	// token is set when the call's bearer token was accepted by the OIDC
	// verifier; id is then the token's operator identity.
	token *TokenIdentity
}

// IdentityFromContext returns the verified identity of the peer of the call
// whose context ctx is, as the server's interceptors found it in the peer's
// client certificate or, for an operator call with an OIDC bearer token, in
// the token (a KindOperator identity with Issuer set). ok is false outside a
// call of a transport server, and
// for a peer whose certificate names no Krypton identity (such a call never
// reaches a handler: it is refused with codes.Unauthenticated).
func IdentityFromContext(ctx context.Context) (pki.Identity, bool) {
	r, ok := ctx.Value(identityKey{}).(*identityResult)
	if !ok || r.err != nil {
		return pki.Identity{}, false
	}
	return r.id, true
}

// identifyingCreds are a server's TLS credentials that also read the
// client certificate's identity once per connection, when the handshake
// completes, instead of on every call: parsing the certificate's SPIFFE URI
// allocated on every call (the split of its path, the identityResult);
// with the one-function interceptor (interceptors.unary) 7 allocations a
// call were saved (docs/performance.md). A TLS 1.3 connection's peer
// cannot change after the handshake (there is no renegotiation), so the
// result holds for the connection's life.
type identifyingCreds struct {
	credentials.TransportCredentials
}

var errConnLimit = errors.New("transport: connection refused: the server is at its connection limit (ServerConfig.MaxConns)")

// ServerHandshake is the TLS handshake, then the peer's identity. Once the
// handshake has completed, the connection leaves the listener's pending
// budget (netutil.Authenticated) and takes a connection slot, or is closed
// when none is free.
func (c identifyingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, ai, err
	}
	if !netutil.Authenticated(raw) {
		conn.Close()
		return nil, nil, errConnLimit
	}
	info, ok := ai.(credentials.TLSInfo)
	if !ok {
		return conn, ai, nil
	}
	id, ierr := pki.PeerIdentity(info.State)
	return conn, &identifiedTLSInfo{TLSInfo: info, result: &identityResult{id: id, err: ierr}}, nil
}

// Clone keeps the wrapper.
func (c identifyingCreds) Clone() credentials.TransportCredentials {
	return identifyingCreds{c.TransportCredentials.Clone()}
}

// identifiedTLSInfo is the AuthInfo of a connection accepted through
// identifyingCreds: gRPC's TLSInfo and the identity its verified client
// certificate names. result is shared by every call on the connection and
// never modified.
type identifiedTLSInfo struct {
	credentials.TLSInfo
	result *identityResult
}

// peerIdentity returns the identity of the verified client certificate of
// the call's connection, or why there is none. The chain was verified during
// the handshake (tls.RequireAndVerifyClientCert); pki.PeerIdentity insists on
// that. The result may be shared with other calls: do not modify it.
func peerIdentity(ctx context.Context) *identityResult {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return &identityResult{err: pki.ErrUnverified}
	}
	switch info := p.AuthInfo.(type) {
	case *identifiedTLSInfo:
		return info.result
	case credentials.TLSInfo: // a server whose credentials were not wrapped
		id, err := pki.PeerIdentity(info.State)
		return &identityResult{id: id, err: err}
	}
	return &identityResult{err: pki.ErrUnverified}
}

// withIdentity stores the peer's identity (or why there is none) in ctx.
func withIdentity(ctx context.Context) (context.Context, *identityResult) {
	r := peerIdentity(ctx)
	return context.WithValue(ctx, identityKey{}, r), r
}

// splitMethod splits "/pkg.Service/Method" into service and method.
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// authorize applies p to a call of fullMethod by r's identity on a server
// whose own certificate names self: nil, or a status error with
// Unauthenticated (no identity) or PermissionDenied (a kind the service does
// not admit, a service the policy does not list, or a NodeService caller
// of another region than self's).
func (p Policy) authorize(fullMethod string, r *identityResult, self pki.Identity) error {
	if r == nil {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	if r.err != nil {
		return ToStatus(r.err)
	}
	if r.token != nil {
		if err := authorizeToken(fullMethod, r.token); err != nil {
			return err
		}
	}
	service, _ := splitMethod(fullMethod)
	kinds, ok := p[service]
	if !ok {
		return status.Error(codes.PermissionDenied, "transport: service not open to any caller")
	}
	if len(kinds) > 0 && !slices.Contains(kinds, r.id.Kind) {
		return status.Errorf(codes.PermissionDenied, "transport: %s certificate may not call %s", r.id.Kind.Article(), service)
	}
	if service == NodeService {
		// A node of another region shares node IDs with this one's
		// (node-1 is in every region): only this region's nodes are peers.
		if self.Kind != pki.KindNode || r.id.Kind != pki.KindNode || r.id.Region != self.Region {
			return status.Errorf(codes.PermissionDenied, "transport: only nodes of region %s may call %s", self.Region, service)
		}
	}
	return nil
}

// AuthorizeNode returns nil if the caller is the node nodeID (its node
// certificate names it), as NodeService requires of the node_id in a
// request; otherwise Unauthenticated or PermissionDenied. Whether the node
// is a current voter is for the handler to check against the Raft
// configuration.
func AuthorizeNode(ctx context.Context, nodeID string) error {
	id, ok := IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	if id.Kind != pki.KindNode || id.NodeID != nodeID {
		return status.Error(codes.PermissionDenied, "transport: node_id is not the caller's")
	}
	// The region was checked by the policy (NodeService admits only nodes
	// of the server's region).
	return nil
}

// identityStream is a grpc.ServerStream whose Context carries the identity.
type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
