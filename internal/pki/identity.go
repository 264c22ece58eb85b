package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/kryptonkms/krypton/wrap"
)

var (
	// ErrNoIdentity is returned when a certificate carries no Krypton
	// SPIFFE URI.
	ErrNoIdentity = errors.New("pki: certificate names no krypton identity")
	// ErrAmbiguousIdentity is returned when a certificate carries more than
	// one Krypton SPIFFE URI.
	ErrAmbiguousIdentity = errors.New("pki: certificate names more than one krypton identity")
	// ErrInvalidIdentity is returned when a Krypton SPIFFE URI or a name in
	// it is malformed.
	ErrInvalidIdentity = errors.New("pki: invalid krypton identity")
	// ErrUnverified is returned when a TLS connection state has no verified
	// peer certificate chain.
	ErrUnverified = errors.New("pki: peer certificate not verified")
	// ErrWrongKind is returned when a peer's identity is not of a kind the
	// caller accepts.
	ErrWrongKind = errors.New("pki: peer identity of the wrong kind")
)

// Kind is the kind of principal a certificate names.
type Kind int

// Principal kinds.
const (
	KindNode     Kind = iota + 1 // a cluster node
	KindService                  // a tenant's calling service
	KindOperator                 // a human operator
)

func (k Kind) String() string {
	switch k {
	case KindNode:
		return "node"
	case KindService:
		return "service"
	case KindOperator:
		return "operator"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

const (
	spiffeScheme = "spiffe"
	trustDomain  = "krypton"
)

// Identity is the principal named by a certificate's Krypton SPIFFE URI:
//
//	spiffe://krypton/node/<node-id>
//	spiffe://krypton/region/<region>/node/<node-id>
//	spiffe://krypton/tenant/<tenant>/service/<service>
//	spiffe://krypton/operator/<name>
//
// A node certificate may name the region the node belongs to; governance
// serves a region's feed (WatchRevocations, ReportCursor) only to nodes whose
// certificate names that region. Governance nodes and region nodes without a
// governance feed use the first form.
//
// Only the fields of its Kind are set.
//
// An operator authenticated by an OIDC bearer token rather than a
// certificate (package transport) is a KindOperator Identity whose Issuer is
// the token's issuer ("iss") and whose Operator is the token's subject
// ("sub"), which need not be a strict Krypton name. Its URI is
// oidc:<issuer>#<subject>, never a SPIFFE URI, so it cannot be mistaken for
// a certificate's operator.
type Identity struct {
	Kind     Kind
	NodeID   string // KindNode
	Region   string // KindNode, optional: the region the node belongs to
	Tenant   string // KindService
	Service  string // KindService
	Operator string // KindOperator: the certificate's name, or the token's subject
	Issuer   string // KindOperator from an OIDC token: the token's issuer; empty for a certificate
}

// URI returns the SPIFFE URI of the identity, or, for an operator
// authenticated by a token, oidc:<issuer>#<subject> (the subject escaped as
// a URI fragment).
func (id Identity) URI() *url.URL {
	if id.Issuer != "" {
		return &url.URL{Scheme: "oidc", Opaque: id.Issuer, Fragment: id.Operator}
	}
	var path string
	switch id.Kind {
	case KindNode:
		path = "/node/" + id.NodeID
		if id.Region != "" {
			path = "/region/" + id.Region + path
		}
	case KindService:
		path = "/tenant/" + id.Tenant + "/service/" + id.Service
	case KindOperator:
		path = "/operator/" + id.Operator
	}
	return &url.URL{Scheme: spiffeScheme, Host: trustDomain, Path: path}
}

// String returns the SPIFFE URI of the identity.
func (id Identity) String() string { return id.URI().String() }

func (id Identity) validate() error {
	var names []string
	switch id.Kind {
	case KindNode:
		names = []string{id.NodeID}
		if id.Region != "" {
			names = append(names, id.Region)
		}
	case KindService:
		names = []string{id.Tenant, id.Service}
	case KindOperator:
		names = []string{id.Operator}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrInvalidIdentity, int(id.Kind))
	}
	for _, n := range names {
		if wrap.ValidateName(n) != nil {
			// The name is not echoed: it may come from an attacker's
			// certificate and end up in logs.
			return fmt.Errorf("%w: bad %s name", ErrInvalidIdentity, id.Kind)
		}
	}
	return nil
}

// ParseIdentity parses a Krypton SPIFFE URI.
func ParseIdentity(u *url.URL) (Identity, error) {
	if u.Scheme != spiffeScheme || u.Host != trustDomain {
		return Identity{}, fmt.Errorf("%w: not a krypton SPIFFE URI", ErrInvalidIdentity)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		u.RawPath != "" || u.ForceQuery || u.Port() != "" {
		return Identity{}, fmt.Errorf("%w: unexpected URI components", ErrInvalidIdentity)
	}
	parts := strings.Split(u.Path, "/")
	var id Identity
	switch {
	case len(parts) == 3 && parts[0] == "" && parts[1] == "node":
		id = Identity{Kind: KindNode, NodeID: parts[2]}
	case len(parts) == 5 && parts[0] == "" && parts[1] == "region" && parts[3] == "node":
		id = Identity{Kind: KindNode, Region: parts[2], NodeID: parts[4]}
		if id.Region == "" {
			return Identity{}, fmt.Errorf("%w: bad node name", ErrInvalidIdentity)
		}
	case len(parts) == 5 && parts[0] == "" && parts[1] == "tenant" && parts[3] == "service":
		id = Identity{Kind: KindService, Tenant: parts[2], Service: parts[4]}
	case len(parts) == 3 && parts[0] == "" && parts[1] == "operator":
		id = Identity{Kind: KindOperator, Operator: parts[2]}
	default:
		return Identity{}, fmt.Errorf("%w: unknown path", ErrInvalidIdentity)
	}
	if err := id.validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// IdentityFromCertificate returns the identity named by cert's one Krypton
// SPIFFE URI SAN. URIs of other schemes or trust domains are ignored; none
// or more than one Krypton URI is an error. It does not verify the
// certificate: use PeerIdentity on a handshake's state for that.
func IdentityFromCertificate(cert *x509.Certificate) (Identity, error) {
	var found *url.URL
	for _, u := range cert.URIs {
		if !strings.EqualFold(u.Scheme, spiffeScheme) || !strings.EqualFold(u.Host, trustDomain) {
			continue
		}
		if found != nil {
			return Identity{}, ErrAmbiguousIdentity
		}
		found = u
	}
	if found == nil {
		return Identity{}, ErrNoIdentity
	}
	return ParseIdentity(found)
}

// PeerIdentity returns the identity of the peer of a completed TLS
// handshake. The peer's chain must have been verified (a server config with
// tls.RequireAndVerifyClientCert, or a client config with RootCAs).
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return Identity{}, ErrUnverified
	}
	return IdentityFromCertificate(cs.PeerCertificates[0])
}

// RequireKind returns a tls.Config.VerifyConnection hook that refuses a
// handshake unless the verified peer names an identity of one of kinds.
func RequireKind(kinds ...Kind) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		id, err := PeerIdentity(cs)
		if err != nil {
			return err
		}
		for _, k := range kinds {
			if id.Kind == k {
				return nil
			}
		}
		return fmt.Errorf("%w: %s", ErrWrongKind, id.Kind)
	}
}
