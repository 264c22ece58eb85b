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
	// ErrWrongPeer is returned when a peer's identity is of the expected
	// kind but names another region, node or tenant than the one expected.
	ErrWrongPeer = errors.New("pki: peer is not the one expected")
	// ErrLegacyNode is returned for the region-less node URI
	// spiffe://krypton/node/<id> of earlier releases: a node must now say
	// whether it is a region's (and which region's) or governance's.
	ErrLegacyNode = fmt.Errorf("%w: spiffe://krypton/node/<id> names no region or plane; "+
		"reissue the certificate with `krypton certs node -region R` (a region node) or "+
		"`krypton certs governance` (a governance node)", ErrInvalidIdentity)
)

// Kind is the kind of principal a certificate names.
type Kind int

// Principal kinds.
//
// Each role has its own kind, and no kind is accepted where another is
// expected: a gateway's certificate is never a node's, a governance node's
// never a region node's, and a region node's names its region, so that a
// certificate of one region cannot act in another.
const (
	KindNode       Kind = iota + 1 // a region's cluster node, of one region
	KindService                    // a tenant's calling service
	KindOperator                   // a human operator
	KindGovernance                 // a governance plane's cluster node
	KindGateway                    // a tenant's gateway: its front end's server certificate
)

func (k Kind) String() string {
	switch k {
	case KindNode:
		return "region node"
	case KindService:
		return "service"
	case KindOperator:
		return "operator"
	case KindGovernance:
		return "governance node"
	case KindGateway:
		return "gateway"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Article returns the kind with its indefinite article, for messages: "an operator", "a gateway".
func (k Kind) Article() string {
	if name := k.String(); strings.IndexByte("aeiou", name[0]) >= 0 {
		return "an " + name
	}
	return "a " + k.String()
}

const (
	spiffeScheme = "spiffe"
	trustDomain  = "krypton"
)

// Identity is the principal named by a certificate's Krypton SPIFFE URI:
//
//	spiffe://krypton/region/<region>/node/<node-id>     KindNode
//	spiffe://krypton/governance/node/<node-id>          KindGovernance
//	spiffe://krypton/tenant/<tenant>/gateway/<name>     KindGateway
//	spiffe://krypton/tenant/<tenant>/service/<service>  KindService
//	spiffe://krypton/operator/<name>                    KindOperator
//
// A region node's certificate names its region: its region's cluster and
// NodeService admit only nodes of that region, and governance serves a
// region's feed (WatchRevocations, ReportCursor) only to that region's
// nodes. The region-less spiffe://krypton/node/<id> of earlier releases is
// refused (ErrLegacyNode).
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
	NodeID   string // KindNode, KindGovernance
	Region   string // KindNode: the region the node belongs to
	Tenant   string // KindService, KindGateway
	Service  string // KindService
	Gateway  string // KindGateway: the gateway's name
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
		path = "/region/" + id.Region + "/node/" + id.NodeID
	case KindGovernance:
		path = "/governance/node/" + id.NodeID
	case KindGateway:
		path = "/tenant/" + id.Tenant + "/gateway/" + id.Gateway
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
		names = []string{id.NodeID, id.Region}
	case KindGovernance:
		names = []string{id.NodeID}
	case KindGateway:
		names = []string{id.Tenant, id.Gateway}
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
		return Identity{}, ErrLegacyNode
	case len(parts) == 5 && parts[0] == "" && parts[1] == "region" && parts[3] == "node":
		id = Identity{Kind: KindNode, Region: parts[2], NodeID: parts[4]}
	case len(parts) == 4 && parts[0] == "" && parts[1] == "governance" && parts[2] == "node":
		id = Identity{Kind: KindGovernance, NodeID: parts[3]}
	case len(parts) == 5 && parts[0] == "" && parts[1] == "tenant" && parts[3] == "gateway":
		id = Identity{Kind: KindGateway, Tenant: parts[2], Gateway: parts[4]}
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

// Check returns nil if id is the peer want describes: of want's Kind and,
// for each of want's Region, NodeID, Tenant, Gateway, Service and Operator
// that is set, naming the same. Otherwise ErrWrongKind or ErrWrongPeer,
// saying what was expected; names from id are not echoed (they come from
// the peer), the expected ones are the caller's own.
func (want Identity) Check(id Identity) error {
	if want.Kind == 0 {
		return fmt.Errorf("%w: no kind of peer expected", ErrWrongKind)
	}
	if id.Kind != want.Kind {
		return fmt.Errorf("%w: %s certificate, not %s", ErrWrongKind, id.Kind.Article(), want.Kind.Article())
	}
	for _, f := range []struct{ what, want, got string }{
		{"region", want.Region, id.Region},
		{"node", want.NodeID, id.NodeID},
		{"tenant", want.Tenant, id.Tenant},
		{"gateway", want.Gateway, id.Gateway},
		{"service", want.Service, id.Service},
		{"operator", want.Operator, id.Operator},
	} {
		if f.want != "" && f.got != f.want {
			return fmt.Errorf("%w: %s certificate of another %s than %s", ErrWrongPeer, id.Kind.Article(), f.what, f.want)
		}
	}
	return nil
}

// RequirePeer returns a tls.Config.VerifyConnection hook that refuses a
// handshake unless the verified peer is the one want describes (see
// Identity.Check): e.g. a client dialling a region node of region eu-1
// sets RequirePeer(Identity{Kind: KindNode, Region: "eu-1"}), a node
// dialling peer node-2 adds NodeID "node-2". Clients use it to refuse a
// server of the wrong kind (a gateway's certificate posing as a region
// node), servers to refuse clients of another region or plane.
func RequirePeer(want Identity) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		id, err := PeerIdentity(cs)
		if err != nil {
			return err
		}
		return want.Check(id)
	}
}
